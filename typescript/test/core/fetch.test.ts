// The fetch transport (src/core/fetch.ts): a client given `fetch` sends through it, against the
// TypeScript MockServer on 127.0.0.1 (Node's own fetch, or a wrapper that records what it is
// given); and the choice of transport when node:net cannot be loaded.
import net from "node:net";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  APIConnectionError,
  APIStatusError,
  ConfigError,
  StreamError,
} from "../../src/core/errors.js";
import type { Event } from "../../src/core/events.js";
import { FetchTarget, targetOf } from "../../src/core/fetch.js";
import { Target } from "../../src/core/transport.js";
import { CustomLLM } from "../../src/generated/custom.js";
import { MockServer } from "../../src/testing/server.js";

const MESSAGES = [{ role: "user", content: "Hi" }];

let server: MockServer | undefined;
afterEach(async () => {
  vi.unstubAllGlobals();
  await server?.stop();
  server = undefined;
});

async function serve(script: unknown): Promise<string> {
  server = new MockServer(script);
  return server.start();
}

/** A fetch that records each (url, init) and hands the request on to Node's fetch. */
function recordingFetch(): { fetch: typeof globalThis.fetch; calls: [string, RequestInit][] } {
  const calls: [string, RequestInit][] = [];
  const fetchFn = ((url: string, init: RequestInit) => {
    calls.push([url, init]);
    return globalThis.fetch(url, init);
  }) as typeof globalThis.fetch;
  return { fetch: fetchFn, calls };
}

async function collect(stream: AsyncIterable<Event>): Promise<Event[]> {
  const events: Event[] = [];
  for await (const event of stream) events.push(event);
  return events;
}

async function closedPort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((ok) => probe.listen(0, "127.0.0.1", ok));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((ok) => probe.close(ok));
  return port;
}

describe("a client given fetch", () => {
  it("calls it with the request: URL, method, headers, body, no redirects, a signal", async () => {
    const url = await serve({ text: ["Hel", "lo"] });
    const recorder = recordingFetch();
    const llm = new CustomLLM({ baseUrl: url, model: "m", apiKey: "sk-1", fetch: recorder.fetch });
    const turn = await llm.complete(MESSAGES);
    expect(turn.text).toBe("Hello");
    expect(turn.finishReason).toBe("stop");
    expect(recorder.calls).toHaveLength(1);
    const [called, init] = recorder.calls[0] as [string, RequestInit];
    expect(called).toBe(`${url}/chat/completions`);
    expect(init.method).toBe("POST");
    expect(init.redirect).toBe("manual");
    expect(init.signal).toBeInstanceOf(AbortSignal);
    expect(new Headers(init.headers).get("authorization")).toBe("Bearer sk-1");
    expect(new Headers(init.headers).get("accept")).toBe("text/event-stream");
    const body = JSON.parse(new TextDecoder().decode(init.body as Uint8Array));
    expect(body).toMatchObject({ model: "m", messages: MESSAGES, stream: true });
    // What the server received is what the socket transport sends.
    const seen = server?.requests[0];
    expect(seen?.header("content-type")).toBe("application/json");
    expect(seen?.json).toEqual(body);
    await llm.close();
  });

  it("refuses a fetch that is not a function", () => {
    const make = () =>
      new CustomLLM({ baseUrl: "http://127.0.0.1:9/v1", model: "m", fetch: "no" as never });
    expect(make).toThrow(ConfigError);
    expect(make).toThrow(/fetch must be a function/);
  });

  it("does not follow a redirect: a 3xx is an http_status error", async () => {
    const url = await serve([
      { status: 302, headers: { location: "/elsewhere/v1/chat/completions" }, body: "moved" },
      { text: ["never"] },
    ]);
    const llm = new CustomLLM({ baseUrl: url, model: "m", fetch: globalThis.fetch });
    const err = await collect(llm.stream(MESSAGES)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIStatusError);
    expect((err as APIStatusError).status).toBe(302);
    expect(server?.requests).toHaveLength(1);
    await llm.close();
  });

  it("gets a gzipped stream decoded, each event as it arrives", async () => {
    // Two pieces of one gzip stream, the first sync-flushed after the first event
    // (tests/parity/cases/transport_gzip_stream_decoded.json); the server stalls after it.
    const url = await serve({
      sse: [
        {
          b64: "H4sIAAAAAAACA0pJLEm0UqhWSs7Iz0xOLVayiq5WysxLSa1QsjLQUUpJzSlJVLICSufnlaTmlShZKXmk5ijV1sbWcnEBAAAA//8=",
        },
        { b64: "SyFVa04+STprdZTSMvMyizPii1ITi/PzgCYUl+QXKCEZEe3i7+cay8UFAHf9D+DGAAAA" },
      ],
      headers: { "content-type": "text/event-stream", "content-encoding": "gzip" },
      stall: 1,
    });
    const llm = new CustomLLM({ baseUrl: url, model: "m", fetch: globalThis.fetch, timeout: 5 });
    const controller = new AbortController();
    const seen: Event[] = [];
    for await (const event of llm.stream(MESSAGES, null, { signal: controller.signal })) {
      seen.push(event);
      controller.abort();
    }
    expect(seen).toEqual([{ type: "text", content: "Hel" }]);
    await llm.close();
  });

  it("gets a whole gzipped stream decoded", async () => {
    const url = await serve({
      sse: [
        {
          b64: "H4sIAAAAAAACA0pJLEm0UqhWSs7Iz0xOLVayiq5WysxLSa1QsjLQUUpJzSlJVLICSufnlaTmlShZKXmk5ijV1sbWcnEBAAAA//8=",
        },
        { b64: "SyFVa04+STprdZTSMvMyizPii1ITi/PzgCYUl+QXKCEZEe3i7+cay8UFAHf9D+DGAAAA" },
      ],
      headers: { "content-type": "text/event-stream", "content-encoding": "gzip" },
    });
    const llm = new CustomLLM({ baseUrl: url, model: "m", fetch: globalThis.fetch });
    expect((await llm.complete(MESSAGES)).text).toBe("Hello");
    await llm.close();
  });

  it("aborts the request on barge-in: the iterator ends and the server sees the close", async () => {
    const url = await serve({ text: ["one", "two"], stall: 1 });
    const llm = new CustomLLM({ baseUrl: url, model: "m", fetch: globalThis.fetch });
    const controller = new AbortController();
    const events: Event[] = [];
    const started = performance.now();
    setTimeout(() => controller.abort(), 100);
    for await (const event of llm.stream(MESSAGES, null, { signal: controller.signal })) {
      events.push(event);
    }
    expect(performance.now() - started).toBeLessThan(1000);
    expect(events).toEqual([{ type: "text", content: "one" }]);
    expect(await server?.waitFor(() => server?.requests[0]?.clientClosed === true, 2)).toBe(true);
    // The request's connection is closed (Node's fetch may then open a spare one, unused).
    expect(server?.connections[0]?.closedBy).toBe("client");
    await llm.close();
  });

  it("aborts before the headers too", async () => {
    const url = await serve({ text: ["late"], delay_before_headers_ms: 5000 });
    const llm = new CustomLLM({ baseUrl: url, model: "m", fetch: globalThis.fetch });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    expect(await collect(llm.stream(MESSAGES, null, { signal: controller.signal }))).toEqual([]);
    expect(await server?.waitFor(() => server?.requests[0]?.clientClosed === true, 2)).toBe(true);
    await llm.close();
  });

  it("ends a turn that a fetch never answers when the caller cancels", async () => {
    const never = (() => new Promise<Response>(() => {})) as typeof globalThis.fetch;
    const llm = new CustomLLM({ baseUrl: "http://127.0.0.1:9/v1", model: "m", fetch: never });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    expect(await collect(llm.stream(MESSAGES, null, { signal: controller.signal }))).toEqual([]);
  });

  it("retries a refused connect (nothing was sent), after the backoff", async () => {
    const port = await closedPort();
    const recorder = recordingFetch();
    const llm = new CustomLLM({
      baseUrl: `http://127.0.0.1:${port}/v1`,
      model: "m",
      fetch: recorder.fetch,
      maxRetries: 1,
    });
    const err = await collect(llm.stream(MESSAGES)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIConnectionError);
    expect(recorder.calls).toHaveLength(2);
  });

  it("never retries a connection lost after the request went out", async () => {
    const url = await serve([{ drop_before_headers: true }, { text: ["again"] }]);
    const recorder = recordingFetch();
    const llm = new CustomLLM({ baseUrl: url, model: "m", fetch: recorder.fetch, maxRetries: 1 });
    const err = await collect(llm.stream(MESSAGES)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIConnectionError);
    expect(recorder.calls).toHaveLength(1);
    expect(server?.requests).toHaveLength(1);
    await llm.close();
  });

  it("ends the turn malformed when the fetch's decoder fails (a zlib code)", async () => {
    const fetchFn = (async () => {
      let sent = false;
      const stream = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (sent) {
            await settleFor(20); // after the client read the event
            controller.error(
              Object.assign(new TypeError("terminated"), { cause: { code: "Z_DATA_ERROR" } }),
            );
            return;
          }
          sent = true;
          controller.enqueue(
            new TextEncoder().encode(
              'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n',
            ),
          );
        },
      });
      return new Response(stream, { headers: { "content-type": "text/event-stream" } });
    }) as typeof globalThis.fetch;
    const llm = new CustomLLM({ baseUrl: "http://127.0.0.1:9/v1", model: "m", fetch: fetchFn });
    const events: Event[] = [];
    const err = await (async () => {
      for await (const event of llm.stream(MESSAGES)) events.push(event);
    })().catch((e: unknown) => e);
    expect(events).toEqual([{ type: "text", content: "Hel" }]);
    expect(err).toBeInstanceOf(StreamError);
    expect((err as StreamError).code).toBe("malformed");
    expect((err as StreamError).message).toContain("does not decompress");
  });

  it("stops reading from fetch while 256 KiB wait unread, and goes on once they are read", async () => {
    const piece = new Uint8Array(64 * 1024).fill(0x3a); // ":::" comment bytes
    let pulls = 0;
    const stream = new ReadableStream<Uint8Array>(
      {
        pull(controller) {
          pulls++;
          controller.enqueue(piece);
          if (pulls === 20) controller.close();
        },
      },
      { highWaterMark: 0 },
    );
    const target = await FetchTarget.of(
      "http://127.0.0.1:9/v1",
      (async () => new Response(stream)) as typeof globalThis.fetch,
    );
    const call = target.call("GET", [], undefined, 1000);
    const body = (await call.reply).body;
    await settleFor(50);
    expect(pulls).toBe(4); // 4 pieces (256 KiB) queued: no more reads
    const first = await body?.read();
    expect(first?.byteLength).toBe(4 * 64 * 1024);
    await settleFor(50);
    expect(pulls).toBeGreaterThan(4);
    let total = first?.byteLength ?? 0;
    for (let chunk = await body?.read(); chunk !== undefined; chunk = await body?.read()) {
      total += chunk.byteLength;
    }
    expect(total).toBe(20 * 64 * 1024);
  });
});

describe("which transport", () => {
  const url = "http://127.0.0.1:9/v1/chat/completions";
  const noSockets = async (): Promise<Target> => {
    throw Object.assign(new Error("Cannot find module 'node:net'"), {
      code: "ERR_MODULE_NOT_FOUND",
    });
  };

  it("is the socket transport by default", async () => {
    expect(await targetOf(url, undefined)).toBeInstanceOf(Target);
  });

  it("is fetch when a fetch is given", async () => {
    expect(await targetOf(url, globalThis.fetch)).toBeInstanceOf(FetchTarget);
  });

  it("is the platform's fetch where node:net cannot be loaded", async () => {
    const calls: string[] = [];
    vi.stubGlobal("fetch", (async (input: string) => {
      calls.push(input);
      return new Response("data: [DONE]\n\n", { headers: { "content-type": "text/event-stream" } });
    }) as typeof globalThis.fetch);
    const target = await targetOf(url, undefined, noSockets);
    expect(target).toBeInstanceOf(FetchTarget);
    const reply = await target.call("POST", [], new Uint8Array(), 1000).reply;
    expect(reply.status).toBe(200);
    expect(calls).toEqual([url]);
  });

  it("fails as the socket transport would without node:net nor fetch", async () => {
    vi.stubGlobal("fetch", undefined);
    await expect(targetOf(url, undefined, noSockets)).rejects.toThrow(/node:net/);
  });

  it("rejects a URL that does not parse, whichever transport", async () => {
    await expect(targetOf("not a url", globalThis.fetch)).rejects.toThrow(TypeError);
    await expect(targetOf("not a url", undefined, noSockets)).rejects.toThrow(TypeError);
  });
});

function settleFor(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
