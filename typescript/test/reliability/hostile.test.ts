// Slow and hostile servers end each turn with the right typed error, in bounded time and memory
// (tests/reliability/test_hostile.py runs the same table in Python). A raw TCP server on 127.0.0.1.
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { APIStatusError, BrainlineError } from "../../src/core/errors.js";
import { CustomLLM } from "../../src/generated/custom.js";

const MB = 1 << 20;
const SSE_HEAD = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

type Writer = (socket: net.Socket) => Promise<void>;

/** Write and wait for the socket to drain; false once the client is gone. */
async function send(socket: net.Socket, data: string | Uint8Array): Promise<boolean> {
  if (socket.destroyed) return false;
  if (!socket.write(data)) {
    await new Promise<void>((ok) => {
      socket.once("drain", ok);
      socket.once("close", ok);
    });
  }
  return !socket.destroyed;
}

const trickle: Writer = async (s) => {
  await send(s, SSE_HEAD);
  const event = 'data: {"choices":[{"delta":{"content":"slow"}}]}\n\n'.repeat(100);
  for (const ch of event) {
    if (!(await send(s, ch))) return;
    await sleep(1000);
  }
};

const keepalives: Writer = async (s) => {
  await send(s, SSE_HEAD);
  while (await send(s, ": keep-alive\n\n")) await sleep(100);
};

const textThenKeepalives: Writer = async (s) => {
  await send(s, `${SSE_HEAD}data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n`);
  while (await send(s, ": keep-alive\n\n")) await sleep(100);
};

const progressOnly: Writer = async (s) => {
  await send(s, SSE_HEAD);
  const event = 'event: hermes.tool.progress\ndata: {"tool_call_id":"t1"}\n\n';
  while (await send(s, event)) await sleep(200);
};

const endlessLine: Writer = async (s) => {
  await send(s, `${SSE_HEAD}data: `);
  const block = Buffer.alloc(64 * 1024, "x");
  while (await send(s, block)) {}
};

const endlessEvent: Writer = async (s) => {
  await send(s, SSE_HEAD);
  const block = Buffer.from(`data: ${"y".repeat(1000)}\n`.repeat(1000));
  for (let i = 0; i < (100 * MB) / block.length; i++) if (!(await send(s, block))) return;
};

function bigBody(status: string, contentType: string): Writer {
  return async (s) => {
    await send(
      s,
      `HTTP/1.1 ${status}\r\ncontent-type: ${contentType}\r\ncontent-length: ${100 * MB}\r\n\r\n`,
    );
    const block = Buffer.alloc(MB, " ");
    for (let i = 0; i < 100; i++) if (!(await send(s, block))) return;
  };
}

const endlessHeaders: Writer = async (s) => {
  await send(s, "HTTP/1.1 200 OK\r\n");
  for (let n = 1; await send(s, `x-pad-${n}: ${"z".repeat(1000)}\r\n`); n++) {}
};

const slowHeaders: Writer = async (s) => {
  await send(s, "HTTP/1.1 200 OK\r\n");
  for (let n = 1; await send(s, `x-slow-${n}: 1\r\n`); n++) await sleep(100);
};

// name: [writer, options, expected code, seconds the turn may take at most]
const CASES: Record<string, [Writer, Record<string, number>, string, number]> = {
  trickle_total: [trickle, { totalTimeout: 2 }, "total_timeout", 4],
  trickle_first_token: [trickle, { firstTokenTimeout: 1.5 }, "first_token_timeout", 3.5],
  keepalives: [keepalives, { firstTokenTimeout: 1 }, "first_token_timeout", 3],
  // Default options, `timeout` only: the progress clocks take its value (within timeout + 1 s).
  default_trickle: [trickle, { timeout: 2 }, "first_token_timeout", 3],
  default_keepalives: [keepalives, { timeout: 2 }, "first_token_timeout", 3],
  default_keepalives_after_text: [textThenKeepalives, { timeout: 2 }, "idle_timeout", 3],
  default_progress_only: [progressOnly, { timeout: 2 }, "first_token_timeout", 3],
  endless_line: [endlessLine, {}, "too_large", 10],
  endless_event: [endlessEvent, {}, "too_large", 10],
  big_json_body: [bigBody("200 OK", "application/json"), {}, "too_large", 10],
  big_error_body: [bigBody("500 Oops", "text/plain"), {}, "http_status", 10],
  endless_headers: [endlessHeaders, {}, "connection_error", 10],
  slow_headers: [slowHeaders, { timeout: 1.5 }, "read_timeout", 3.5],
  default_slow_headers: [slowHeaders, { timeout: 1 }, "read_timeout", 2],
};

async function serve(write: Writer): Promise<[string, () => Promise<void>]> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    socket.on("close", () => sockets.delete(socket));
    let head = "";
    const onData = (data: Buffer) => {
      head += data.toString("latin1");
      if (!head.includes("\r\n\r\n")) return;
      socket.off("data", onData);
      socket.resume();
      write(socket).finally(() => socket.end());
    };
    socket.on("data", onData);
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address() as net.AddressInfo;
  const close = async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((ok) => server.close(ok));
  };
  return [`http://127.0.0.1:${port}/v1`, close];
}

describe("hostile servers", () => {
  for (const [name, [write, options, code, bound]] of Object.entries(CASES)) {
    it(`${name} ends with ${code}`, { timeout: (bound + 10) * 1000 }, async () => {
      const [url, close] = await serve(write);
      const llm = new CustomLLM({
        baseUrl: url,
        model: "m",
        timeout: 5,
        maxRetries: 0,
        ...options,
      });
      const base = process.memoryUsage();
      let peak = 0;
      const sampler = setInterval(() => {
        const now = process.memoryUsage();
        peak = Math.max(peak, now.heapUsed + now.arrayBuffers - base.heapUsed - base.arrayBuffers);
      }, 20);
      const started = performance.now();
      let err: unknown;
      try {
        for await (const _ of llm.stream([{ role: "user", content: "hi" }])) {
        }
      } catch (e) {
        err = e;
      } finally {
        clearInterval(sampler);
        await llm.close();
        await close();
      }
      const elapsed = (performance.now() - started) / 1000;
      expect(err, `${name}: ${String(err)}`).toBeInstanceOf(BrainlineError);
      expect((err as BrainlineError).code, `${name}: ${String(err)}`).toBe(code);
      expect(elapsed).toBeLessThan(bound);
      // Bounded by the limits (1 MiB line, 4 MiB event, 2 KiB error body), never the 100 MB sent.
      expect(peak / MB).toBeLessThan(48);
      if (err instanceof APIStatusError)
        expect(Buffer.byteLength(err.body)).toBeLessThanOrEqual(2048);
    });
  }
});
