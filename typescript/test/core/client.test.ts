import { spawn } from "node:child_process";
import { getEventListeners } from "node:events";
import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import * as zlib from "node:zlib";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { BaseLLM } from "../../src/core/client.js";
import {
  APIConnectionError,
  APIStatusError,
  APITimeoutError,
  ConfigError,
  StreamError,
} from "../../src/core/errors.js";
import type { Event } from "../../src/core/events.js";
import { METRICS_KEYS, type TurnMetrics, TurnMeter } from "../../src/core/metrics.js";
import type { SessionContext } from "../../src/core/session.js";
import type { LLMConfig } from "../../src/generated/options.js";

/**
 * A loopback port where a TCP connect hangs: a listener (in a Python child, since a Node server
 * accepts every connection) that never accepts, its backlog filled so the kernel drops new SYNs.
 */
async function stalledListener(): Promise<{ port: number; close: () => void }> {
  const script = [
    "import socket, sys, time",
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(0)",
    "port = s.getsockname()[1]; fillers = []",
    "for _ in range(4):",
    "    f = socket.socket(); f.setblocking(False)",
    "    try: f.connect(('127.0.0.1', port))",
    "    except BlockingIOError: pass",
    "    fillers.append(f)",
    "time.sleep(0.05); print(port, flush=True); sys.stdin.read()",
  ].join("\n");
  const child = spawn(process.env.BRAINLINE_PYTHON ?? "python3", ["-c", script], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.once("data", (data: Buffer) => resolve(Number(String(data).trim())));
    child.once("error", reject);
  });
  return { port, close: () => child.stdin.end() };
}

// -- a real HTTP server on 127.0.0.1 ---------------------------------------------------------------

interface Seen {
  method: string;
  url: string;
  rawHeaders: string[];
  body: string;
  socket: number;
  closedAt: number | undefined;
}

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, seen: Seen) => void;

/** Headers the HTTP layer adds on its own; the rest is what brainline sent, in order. */
const TRANSPORT_HEADERS = new Set(["host", "connection", "content-length", "accept-encoding"]);

class TestServer {
  connections = 0;
  readonly requests: Seen[] = [];
  handler: Handler = (_req, res) => res.end();
  private readonly server = http.createServer((req, res) => this.onRequest(req, res));
  private readonly socketIds = new WeakMap<Socket, number>();

  constructor() {
    this.server.on("connection", (socket: Socket) => {
      this.connections += 1;
      this.socketIds.set(socket, this.connections);
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
  }

  /** Close the connections that wait for a request (as a server's keep-alive timeout does). */
  closeIdle(): void {
    this.server.closeIdleConnections();
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  get origin(): string {
    const address = this.server.address();
    if (address === null || typeof address === "string") throw new Error("not listening");
    return `http://127.0.0.1:${address.port}`;
  }

  get baseUrl(): string {
    return `${this.origin}/v1`;
  }

  /** The request headers brainline chose, in wire order, as [name, value]. */
  static headers(seen: Seen): [string, string][] {
    const pairs: [string, string][] = [];
    for (let i = 0; i < seen.rawHeaders.length; i += 2) {
      const name = seen.rawHeaders[i] as string;
      if (!TRANSPORT_HEADERS.has(name.toLowerCase()))
        pairs.push([name, seen.rawHeaders[i + 1] as string]);
    }
    return pairs;
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const parts: Buffer[] = [];
    const seen: Seen = {
      method: req.method ?? "",
      url: req.url ?? "",
      rawHeaders: req.rawHeaders,
      body: "",
      socket: this.socketIds.get(req.socket) ?? 0,
      closedAt: undefined,
    };
    req.socket.once("close", () => {
      seen.closedAt = performance.now();
    });
    req.on("data", (part: Buffer) => parts.push(part));
    req.on("end", () => {
      seen.body = Buffer.concat(parts).toString("utf8");
      this.requests.push(seen);
      this.handler(req, res, seen);
    });
  }
}

// -- helpers --------------------------------------------------------------------------------------

function makeConfig(overrides: Partial<LLMConfig> = {}): LLMConfig {
  return {
    providerKey: "openai_compatible",
    apiKey: undefined,
    apiKeyEnv: undefined,
    baseUrl: "http://127.0.0.1:1/v1",
    model: "test-model",
    timeout: 5,
    extraHeaders: undefined,
    userAgent: "brainline/test",
    sessionUserPrefix: undefined,
    sessionIdHeader: undefined,
    sessionIdPrefix: "",
    sessionKeyHeader: undefined,
    sessionKey: undefined,
    sessionKeyFactory: undefined,
    sessionKeyFrom: undefined,
    // Transport: the spec's defaults, except no retries unless a test asks for them.
    maxRetries: 0,
    retryBudget: 2,
    streamOptions: "auto",
    maxTokensField: "auto",
    temperature: undefined,
    maxTokens: undefined,
    topP: undefined,
    frequencyPenalty: undefined,
    presencePenalty: undefined,
    stop: undefined,
    seed: undefined,
    responseFormat: undefined,
    parallelToolCalls: undefined,
    toolChoice: undefined,
    ...overrides,
  } as LLMConfig;
}

const MESSAGES = [{ role: "user", content: "hi" }];
const sseData = (value: unknown): string => `data: ${JSON.stringify(value)}\n\n`;
const textChunk = (content: string): string =>
  sseData({ choices: [{ index: 0, delta: { content }, finish_reason: null }] });
const finishChunk = (reason: string): string =>
  sseData({ choices: [{ index: 0, delta: {}, finish_reason: reason }] });
const DONE = "data: [DONE]\n\n";
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function sseHead(res: http.ServerResponse): void {
  res.writeHead(200, { "Content-Type": "text/event-stream" });
  res.flushHeaders();
}

/** Serve these SSE pieces, each written after `gapMs`, then end the response. */
function serve(pieces: readonly string[], gapMs = 0): Handler {
  return async (_req, res) => {
    sseHead(res);
    for (const piece of pieces) {
      if (gapMs > 0) await sleep(gapMs);
      res.write(piece);
    }
    res.end();
  };
}

/** The event without the finish event's metrics record (times; the "turn metrics" tests check it). */
function plain(event: Event): Event {
  if (event.type !== "finish" || event.metrics === undefined) return event;
  const { metrics: _metrics, ...rest } = event;
  return rest;
}

async function collect(
  iterable: AsyncIterable<Event>,
  onEvent?: (event: Event, count: number) => void | Promise<void>,
): Promise<{ events: Event[]; error: unknown }> {
  const events: Event[] = [];
  try {
    for await (const event of iterable) {
      events.push(plain(event));
      await onEvent?.(event, events.length);
    }
  } catch (error) {
    return { events, error };
  }
  return { events, error: undefined };
}

async function waitFor(check: () => boolean, ms = 1000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!check()) {
    if (performance.now() > deadline) throw new Error("condition not met in time");
    await sleep(5);
  }
}

/**
 * Count the timers the client starts (by the stack that starts them) and that neither fired nor
 * were cleared: undici keeps timers of its own for idle sockets, which are not ours to check.
 */
function trackClientTimers(): { pending: () => number; restore: () => void } {
  const realSet = globalThis.setTimeout;
  const realClear = globalThis.clearTimeout;
  const pending = new Set<unknown>();
  const tracked = (fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
    // Frame 0 is "Error", 1 this wrapper, 2 whoever called setTimeout.
    const ours = new Error().stack?.split("\n")[2]?.includes("src/core/client") ?? false;
    const handle = realSet(() => {
      pending.delete(handle);
      fn(...args);
    }, ms);
    if (ours) pending.add(handle);
    return handle;
  };
  globalThis.setTimeout = tracked as unknown as typeof setTimeout;
  globalThis.clearTimeout = ((handle: Parameters<typeof clearTimeout>[0]) => {
    pending.delete(handle);
    realClear(handle);
  }) as typeof clearTimeout;
  return {
    pending: () => pending.size,
    restore: () => {
      globalThis.setTimeout = realSet;
      globalThis.clearTimeout = realClear;
    },
  };
}

async function freePort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

let server: TestServer;
beforeEach(async () => {
  server = new TestServer();
  await server.start();
});
afterEach(async () => {
  vi.unstubAllGlobals();
  await server.stop();
});

function llm(overrides: Partial<LLMConfig> = {}): BaseLLM {
  return new BaseLLM(makeConfig({ baseUrl: server.baseUrl, ...overrides }));
}

// -- the request ------------------------------------------------------------------------------------

describe("the request", () => {
  it("sends the headers and the body in the documented order, byte for byte", async () => {
    server.handler = serve([textChunk("ok"), DONE]);
    const client = llm({
      baseUrl: `${server.baseUrl}//`,
      apiKey: "sk-test",
      extraHeaders: { "user-agent": "custom/1", "X-Extra": "1" },
      sessionUserPrefix: "u-",
      sessionIdHeader: "X-Session-Id",
      sessionIdPrefix: "call-",
      sessionKeyHeader: "X-Session-Key",
      sessionKeyFrom: "caller_hash",
      temperature: 0.5,
      maxTokens: 100,
      topP: 1,
      frequencyPenalty: 0,
      presencePenalty: -1.5,
      stop: ["x"],
      seed: 7,
      responseFormat: { type: "json_object" },
      parallelToolCalls: false,
      toolChoice: "auto",
    });
    const tools = [{ type: "function", function: { name: "f", parameters: {} } }];
    const messages = [{ role: "user", content: "héllo ☕" }];
    const { error } = await collect(
      client.stream(messages, tools, { callId: "c1", caller: "+15551234567", callee: "+1999" }),
    );
    expect(error).toBeUndefined();
    const [seen] = server.requests;
    if (seen === undefined) throw new Error("no request");
    expect(seen.method).toBe("POST");
    expect(seen.url).toBe("/v1/chat/completions");
    expect(TestServer.headers(seen)).toEqual([
      ["Content-Type", "application/json"],
      ["Accept", "text/event-stream"],
      ["user-agent", "custom/1"],
      ["Authorization", "Bearer sk-test"],
      ["X-Extra", "1"],
      ["X-Session-Id", "call-c1"],
      ["X-Session-Key", "patter-caller-8a59780bb8cd2ba0"],
    ]);
    expect(seen.body).toBe(
      '{"model":"test-model","messages":[{"role":"user","content":"héllo ☕"}],"stream":true,' +
        '"stream_options":{"include_usage":true},' +
        '"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],' +
        '"temperature":0.5,"max_completion_tokens":100,"top_p":1,"frequency_penalty":0,' +
        '"presence_penalty":-1.5,"stop":["x"],"seed":7,"response_format":{"type":"json_object"},' +
        '"parallel_tool_calls":false,"tool_choice":"auto","user":"u-c1"}',
    );
    expect(JSON.stringify(seen.rawHeaders) + seen.body).not.toContain("5551234567");
  });

  it("sends no Authorization header without a key, and only the set fields", async () => {
    server.handler = serve([DONE]);
    for (const apiKey of [undefined, ""]) {
      await collect(
        llm({ apiKey, sessionUserPrefix: "u-", sessionIdHeader: "X-S" }).stream(MESSAGES, []),
      );
    }
    expect(server.requests).toHaveLength(2);
    for (const seen of server.requests) {
      expect(TestServer.headers(seen)).toEqual([
        ["Content-Type", "application/json"],
        ["Accept", "text/event-stream"],
        ["User-Agent", "brainline/test"],
      ]);
      expect(seen.body).toBe(
        '{"model":"test-model","messages":[{"role":"user","content":"hi"}],"stream":true,' +
          '"stream_options":{"include_usage":true}}',
      );
    }
  });

  it("uses the session-key factory with the session context, omitting a falsy result", async () => {
    server.handler = serve([DONE]);
    const contexts: SessionContext[] = [];
    const client = llm({
      sessionKeyHeader: "X-Key",
      sessionKey: "static",
      sessionKeyFactory: (ctx) => {
        contexts.push(ctx);
        return ctx.callId ? `key-${ctx.callId}` : null;
      },
    });
    await collect(client.stream(MESSAGES, null, { callId: "c9", caller: "+15551234567" }));
    await collect(client.stream(MESSAGES));
    // `caller` is a getter (no serializer shows it): read each field.
    const fields = (ctx: SessionContext) => [ctx.callId, ctx.caller, ctx.callee, ctx.callerHash];
    expect(contexts.map(fields)).toEqual([
      ["c9", "+15551234567", undefined, "8a59780bb8cd2ba0"],
      [undefined, undefined, undefined, undefined],
    ]);
    expect(TestServer.headers(server.requests[0] as Seen).at(-1)).toEqual(["X-Key", "key-c9"]);
    expect(TestServer.headers(server.requests[1] as Seen).map(([name]) => name)).not.toContain(
      "X-Key",
    );
  });

  it("sends non-ASCII header values as UTF-8 bytes", async () => {
    server.handler = serve([DONE]);
    const client = llm({ sessionIdHeader: "X-Session-Id", sessionIdPrefix: "appel-" });
    const { error } = await collect(client.stream(MESSAGES, null, { callId: "café ☕" }));
    expect(error).toBeUndefined();
    const [name, value] = TestServer.headers(server.requests[0] as Seen).at(-1) ?? [];
    expect(name).toBe("X-Session-Id");
    // node:http reads header bytes as Latin-1.
    expect(Buffer.from(value as string, "latin1").toString("utf8")).toBe("appel-café ☕");
  });

  it("checks the call arguments before anything is sent", async () => {
    const client = llm({ sessionKeyHeader: "X-Key", sessionKeyFactory: () => "bad\r\nkey" });
    const cases: [unknown[], string, string][] = [
      [
        [[]],
        "invalid_messages",
        "messages must be a non-empty list of message objects, each with a string role",
      ],
      [
        ["hi"],
        "invalid_messages",
        "messages must be a non-empty list of message objects, each with a string role",
      ],
      [
        [[{ content: "x" }]],
        "invalid_messages",
        "messages must be a non-empty list of message objects, each with a string role",
      ],
      [
        [[null]],
        "invalid_messages",
        "messages must be a non-empty list of message objects, each with a string role",
      ],
      [[MESSAGES, "tools"], "invalid_tools", "tools must be a list of tool objects"],
      [[MESSAGES, [1]], "invalid_tools", "tools must be a list of tool objects"],
      [[MESSAGES, null, { callId: 5 }], "invalid_type", "callId must be a string, got 5"],
      [
        [MESSAGES, null, { caller: ["x"] }],
        "invalid_secret_type",
        "caller must be a string (the value is not shown: it may be a key or a phone number)",
      ],
      [[MESSAGES, null, { callee: true }], "invalid_type", "callee must be a string, got true"],
      [
        [MESSAGES, null, { callId: "a\nb" }],
        "invalid_header_value",
        "callId must not contain CR, LF or NUL",
      ],
      [
        [MESSAGES, null, { callId: "ok" }],
        "invalid_header_value",
        "sessionKeyFactory must not contain CR, LF or NUL",
      ],
    ];
    for (const [args, code, message] of cases) {
      const stream = (client.stream as (...a: unknown[]) => AsyncIterable<Event>)(...args);
      const { error } = await collect(stream);
      expect(error, code).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).code).toBe(code);
      expect((error as ConfigError).message).toBe(message);
    }
    expect(server.requests).toHaveLength(0);
  });
});

// -- the stream -------------------------------------------------------------------------------------

describe("the stream", () => {
  it("yields content, then usage and finish", async () => {
    server.handler = serve([
      sseData({ choices: [{ index: 0, delta: { role: "assistant", reasoning_content: "hm" } }] }),
      textChunk("Hel"),
      textChunk("lo"),
      sseData({
        choices: [
          {
            index: 0,
            delta: {
              tool_calls: [{ index: 0, id: "c", function: { name: "f", arguments: "{}" } }],
            },
          },
        ],
      }),
      finishChunk("tool_calls"),
      sseData({ choices: [], usage: { prompt_tokens: 9, completion_tokens: 3 } }),
      DONE,
    ]);
    const { events, error } = await collect(llm().stream(MESSAGES));
    expect(error).toBeUndefined();
    expect(events).toEqual([
      { type: "reasoning", content: "hm" },
      { type: "text", content: "Hel" },
      { type: "text", content: "lo" },
      { type: "tool_call", index: 0, id: "c", name: "f", arguments: "{}" },
      { type: "usage", input_tokens: 9, output_tokens: 3, cache_read_tokens: 0 },
      { type: "finish", reason: "tool_calls" },
    ]);
  });

  it("stops at [DONE], drains the rest and reuses the connection", async () => {
    server.handler = async (_req, res) => {
      sseHead(res);
      res.write(textChunk("a") + DONE);
      await sleep(30);
      res.write(`: after\n\n${textChunk("not yielded")}${DONE}`);
      res.end();
    };
    const client = llm();
    const first = await collect(client.stream(MESSAGES));
    const second = await collect(client.stream(MESSAGES));
    for (const turn of [first, second]) {
      expect(turn.error).toBeUndefined();
      expect(turn.events).toEqual([
        { type: "text", content: "a" },
        { type: "finish", reason: "stop" },
      ]);
    }
    expect(server.requests).toHaveLength(2);
    expect(server.connections).toBe(1);
  });

  it("reports a stream that ends without [DONE] or finish_reason as truncated", async () => {
    server.handler = serve([textChunk("a"), sseData({ usage: { prompt_tokens: 1 } })]);
    const { events } = await collect(llm().stream(MESSAGES));
    expect(events).toEqual([
      { type: "text", content: "a" },
      { type: "usage", input_tokens: 1, output_tokens: 0, cache_read_tokens: 0 },
      { type: "finish", reason: "truncated" },
    ]);
  });

  it("dispatches the last event at the end of the body, even without its blank line", async () => {
    server.handler = serve([textChunk("a"), finishChunk("length").trimEnd()]);
    const { events } = await collect(llm().stream(MESSAGES));
    expect(events.at(-1)).toEqual({ type: "finish", reason: "length" });
  });

  it("reads CRLF streams split at awkward places", async () => {
    const body = (textChunk("Caffè ☕") + finishChunk("stop") + DONE).replaceAll("\n", "\r\n");
    const bytes = Buffer.from(body, "utf8");
    server.handler = async (_req, res) => {
      sseHead(res);
      for (let i = 0; i < bytes.length; i += 7) {
        res.write(bytes.subarray(i, i + 7));
        await sleep(1);
      }
      res.end();
    };
    const { events } = await collect(llm().stream(MESSAGES));
    expect(events).toEqual([
      { type: "text", content: "Caffè ☕" },
      { type: "finish", reason: "stop" },
    ]);
  });

  it("raises malformed for data that is not JSON, with the text so far", async () => {
    server.handler = serve([textChunk("Hi"), `data: ${"x".repeat(300)}\n\n`, DONE]);
    const { events, error } = await collect(llm().stream(MESSAGES));
    expect(events).toEqual([{ type: "text", content: "Hi" }]);
    expect(error).toBeInstanceOf(StreamError);
    expect((error as StreamError).code).toBe("malformed");
    expect((error as StreamError).message).toBe(
      `malformed stream: data is not JSON: ${"x".repeat(200)}`,
    );
    expect((error as StreamError).partialText).toBe("Hi");
    // No parser error as the cause: its message quotes the start of the data.
    expect((error as StreamError).cause).toBeUndefined();
  });

  it("raises server_error for an error object or an event named error", async () => {
    server.handler = serve([
      textChunk("Par"),
      sseData({ error: { message: "Compute error.", code: 502 } }),
    ]);
    const first = await collect(llm().stream(MESSAGES));
    expect(first.events).toEqual([{ type: "text", content: "Par" }]);
    expect((first.error as StreamError).code).toBe("server_error");
    expect((first.error as StreamError).message).toBe(
      "the server reported an error: Compute error.",
    );
    expect((first.error as StreamError).partialText).toBe("Par");

    server.handler = serve([`event: error\ndata: {"error":{"type":"overloaded"}}\n\n`]);
    const second = await collect(llm().stream(MESSAGES));
    expect((second.error as StreamError).message).toBe(
      'the server reported an error: {"type":"overloaded"}',
    );
    server.handler = serve([`event: error\ndata: {"message":"down"}\n\n`]);
    const third = await collect(llm().stream(MESSAGES));
    expect((third.error as StreamError).message).toBe("the server reported an error: down");
  });

  it("raises too_large for a line over the limit", async () => {
    server.handler = serve([textChunk("a"), `data: ${"x".repeat(1048576)}\n\n`]);
    const { events, error } = await collect(llm().stream(MESSAGES));
    expect(events).toEqual([{ type: "text", content: "a" }]);
    expect((error as StreamError).code).toBe("too_large");
    expect((error as StreamError).message).toBe("a stream line exceeded 1048576 bytes");
    expect((error as StreamError).partialText).toBe("a");
  });

  it("raises interrupted when the connection is lost mid-stream", async () => {
    server.handler = async (_req, res) => {
      sseHead(res);
      res.write(textChunk("Hel"));
      await sleep(30);
      res.socket?.destroy();
    };
    const { events, error } = await collect(llm().stream(MESSAGES));
    expect(events).toEqual([{ type: "text", content: "Hel" }]);
    expect(error).toBeInstanceOf(StreamError);
    expect((error as StreamError).code).toBe("interrupted");
    expect((error as StreamError).message).toBe("the connection was lost mid-stream");
    expect((error as StreamError).partialText).toBe("Hel");
    expect((error as StreamError).cause).toBeDefined();
  });
});

// -- other answers ----------------------------------------------------------------------------------

describe("non-SSE answers", () => {
  it("raises APIStatusError with the error message, the body and Retry-After", async () => {
    const body = JSON.stringify({ error: { message: "Too many concurrent runs (max 10)" } });
    server.handler = (_req, res) => {
      res.writeHead(429, { "Content-Type": "application/json", "Retry-After": "2" });
      res.end(body);
    };
    const { events, error } = await collect(llm().stream(MESSAGES));
    expect(events).toEqual([]);
    expect(error).toBeInstanceOf(APIStatusError);
    const status = error as APIStatusError;
    expect(status.code).toBe("http_status");
    expect(status.status).toBe(429);
    expect(status.retryAfter).toBe(2);
    expect(status.body).toBe(body);
    expect(status.message).toBe(
      `${server.baseUrl}/chat/completions answered HTTP 429: Too many concurrent runs (max 10)`,
    );
  });

  it("keeps at most 2 KiB of the body, decoded with replacement, and cuts the detail", async () => {
    server.handler = (_req, res) => {
      res.writeHead(503, { "Retry-After": new Date(Date.now() + 60_000).toUTCString() });
      res.end(`a${"é".repeat(5000)}`);
    };
    const { error } = await collect(llm().stream(MESSAGES));
    const status = error as APIStatusError;
    expect(status.status).toBe(503);
    expect(status.body).toBe(`a${"é".repeat(1023)}\ufffd`);
    expect(Buffer.byteLength(status.body.slice(0, -1))).toBe(2047);
    expect(status.message).toBe(
      `${server.baseUrl}/chat/completions answered HTTP 503: a${"é".repeat(199)}`,
    );
    expect(status.retryAfter).toBeGreaterThan(55);
    expect(status.retryAfter).toBeLessThanOrEqual(60);
  });

  it("keeps keys out of the error even when the server echoes them", async () => {
    server.handler = (req, res) => {
      res.writeHead(401, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ error: { message: `bad key ${req.headers.authorization}` } }));
    };
    const { error } = await collect(llm({ apiKey: "sk-secret" }).stream(MESSAGES));
    const status = error as APIStatusError;
    expect(status.message).toBe(
      `${server.baseUrl}/chat/completions answered HTTP 401: bad key Bearer ***`,
    );
    expect(status.body).toBe('{"error":{"message":"bad key Bearer ***"}}');

    server.handler = serve([sseData({ error: { message: "unknown scope k-42" } })]);
    const client = llm({ sessionKeyHeader: "X-Key", sessionKeyFactory: () => "k-42" });
    const echoed = await collect(client.stream(MESSAGES));
    expect((echoed.error as StreamError).message).toBe(
      "the server reported an error: unknown scope ***",
    );
  });

  it("uses the body text as the detail, and reuses a connection whose error body was read", async () => {
    server.handler = (_req, res) => {
      res.writeHead(500, { "Content-Type": "text/plain" });
      res.end("oops");
    };
    const client = llm();
    for (let i = 0; i < 2; i++) {
      const { error } = await collect(client.stream(MESSAGES));
      expect((error as APIStatusError).message).toBe(
        `${server.baseUrl}/chat/completions answered HTTP 500: oops`,
      );
      expect((error as APIStatusError).retryAfter).toBeUndefined();
    }
    expect(server.connections).toBe(1);
  });

  it("turns a 200 chat.completion JSON body into events", async () => {
    server.handler = (_req, res) => {
      res.writeHead(200, { "Content-Type": "application/json; charset=utf-8" });
      res.end(
        JSON.stringify({
          object: "chat.completion",
          choices: [
            {
              index: 0,
              message: {
                role: "assistant",
                content: "Hello",
                tool_calls: [
                  { id: "t", type: "function", function: { name: "f", arguments: "{}" } },
                ],
              },
              finish_reason: "tool_calls",
            },
          ],
          usage: {
            prompt_tokens: 4,
            completion_tokens: 2,
            prompt_tokens_details: { cached_tokens: 1 },
          },
        }),
      );
    };
    const { events, error } = await collect(llm().stream(MESSAGES));
    expect(error).toBeUndefined();
    expect(events).toEqual([
      { type: "text", content: "Hello" },
      { type: "tool_call", index: 0, id: "t", name: "f", arguments: "{}" },
      { type: "usage", input_tokens: 3, output_tokens: 2, cache_read_tokens: 1 },
      { type: "finish", reason: "tool_calls" },
    ]);
  });

  it("raises server_error for a 200 JSON error body, malformed for a broken one", async () => {
    server.handler = (_req, res) => {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end('{"error":{"message":"model not loaded"}}');
    };
    const { error } = await collect(llm().stream(MESSAGES));
    expect(error).toBeInstanceOf(StreamError);
    expect((error as StreamError).code).toBe("server_error");
    expect((error as StreamError).message).toBe("the server reported an error: model not loaded");
    expect((error as StreamError).partialText).toBe("");

    server.handler = (_req, res) => {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end("");
    };
    const broken = await collect(llm().stream(MESSAGES));
    expect((broken.error as StreamError).code).toBe("malformed");
    expect((broken.error as StreamError).message).toBe("malformed stream: empty response body");
  });
});

// -- transport failures and timeouts ----------------------------------------------------------------

describe("transport failures", () => {
  it("raises APIConnectionError when nothing listens", async () => {
    const port = await freePort();
    const client = new BaseLLM(makeConfig({ baseUrl: `http://127.0.0.1:${port}/v1` }));
    const { error } = await collect(client.stream(MESSAGES));
    expect(error).toBeInstanceOf(APIConnectionError);
    expect((error as APIConnectionError).code).toBe("connection_error");
    expect((error as APIConnectionError).message).toBe(
      `could not connect to http://127.0.0.1:${port}/v1/chat/completions`,
    );
    expect((error as APIConnectionError).cause).toBeDefined();
  });

  it("caps the connect phase at 10 s, whatever the timeout", async () => {
    const stalled = await stalledListener();
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    try {
      let settled = false;
      const turn = collect(
        llm({ timeout: 30, baseUrl: `http://127.0.0.1:${stalled.port}/v1` }).stream(MESSAGES),
      ).finally(() => {
        settled = true;
      });
      // Until the request has its (connecting) socket: real I/O, so real event-loop turns.
      for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
      await vi.advanceTimersByTimeAsync(9_990);
      expect(settled).toBe(false);
      await vi.advanceTimersByTimeAsync(20);
      const { error } = await turn;
      expect(error).toBeInstanceOf(APITimeoutError);
      expect((error as APITimeoutError).code).toBe("connect_timeout");
      expect((error as APITimeoutError).message).toBe(
        `no connection to http://127.0.0.1:${stalled.port}/v1/chat/completions within 10 s`,
      );
    } finally {
      vi.useRealTimers();
      stalled.close();
    }
  });

  it("raises read_timeout when the headers do not come in time", async () => {
    server.handler = () => {};
    const started = performance.now();
    const { error } = await collect(llm({ timeout: 0.2 }).stream(MESSAGES));
    const elapsed = performance.now() - started;
    expect(error).toBeInstanceOf(APITimeoutError);
    expect((error as APITimeoutError).code).toBe("read_timeout");
    expect((error as APITimeoutError).message).toBe(
      `no data from ${server.baseUrl}/chat/completions for 0.2 s`,
    );
    expect(elapsed).toBeGreaterThanOrEqual(190);
    expect(elapsed).toBeLessThan(1000);
    await waitFor(() => server.requests[0]?.closedAt !== undefined);
  });

  it("tells a connect that never completes from headers that never come, in turns run together", async () => {
    const stalled = await stalledListener();
    try {
      const started = performance.now();
      server.handler = () => {};
      const [connecting, waiting] = await Promise.all([
        collect(
          llm({ timeout: 0.3, baseUrl: `http://127.0.0.1:${stalled.port}/v1` }).stream(MESSAGES),
        ),
        collect(llm({ timeout: 0.3 }).stream(MESSAGES)),
      ]);
      expect(performance.now() - started).toBeLessThan(2000);
      expect((connecting.error as APITimeoutError).code).toBe("connect_timeout");
      expect((connecting.error as APITimeoutError).message).toBe(
        `no connection to http://127.0.0.1:${stalled.port}/v1/chat/completions within 0.3 s`,
      );
      expect((waiting.error as APITimeoutError).code).toBe("read_timeout");
      expect(server.requests).toHaveLength(1);
    } finally {
      stalled.close();
    }
  });

  it("raises read_timeout when the stream stalls", async () => {
    server.handler = (_req, res) => {
      sseHead(res);
      res.write(textChunk("a"));
    };
    const { events, error } = await collect(llm({ timeout: 0.2 }).stream(MESSAGES));
    expect(events).toEqual([{ type: "text", content: "a" }]);
    expect((error as APITimeoutError).code).toBe("read_timeout");
    await waitFor(() => server.requests[0]?.closedAt !== undefined);
  });

  it("counts keep-alive bytes as data, and never the consumer's own time", async () => {
    server.handler = serve([textChunk("a"), ": ping\n\n", ": ping\n\n", textChunk("b"), DONE], 120);
    const { events, error } = await collect(llm({ timeout: 0.2 }).stream(MESSAGES), async () => {
      await sleep(350);
    });
    expect(error).toBeUndefined();
    expect(events.map((e) => e.type)).toEqual(["text", "text", "finish"]);
  });
});

// -- cancellation -----------------------------------------------------------------------------------

describe("cancellation", () => {
  it("sends nothing when the signal is already aborted", async () => {
    const controller = new AbortController();
    controller.abort();
    const { events, error } = await collect(
      llm().stream(MESSAGES, null, { signal: controller.signal }),
    );
    expect(events).toEqual([]);
    expect(error).toBeUndefined();
    await sleep(50);
    expect(server.requests).toHaveLength(0);
  });

  it("aborts before the headers; the server sees the close at once", async () => {
    server.handler = () => {};
    const controller = new AbortController();
    let abortedAt = 0;
    const timer = setTimeout(() => {
      abortedAt = performance.now();
      controller.abort();
    }, 100);
    const { events, error } = await collect(
      llm().stream(MESSAGES, null, { signal: controller.signal }),
    );
    clearTimeout(timer);
    expect(events).toEqual([]);
    expect(error).toBeUndefined();
    expect(performance.now() - abortedAt).toBeLessThan(100);
    await waitFor(() => server.requests[0]?.closedAt !== undefined);
    expect((server.requests[0]?.closedAt as number) - abortedAt).toBeLessThan(100);
  });

  it("aborts mid-stream: no more events, no finish, the server sees the close", async () => {
    server.handler = (_req, res) => {
      sseHead(res);
      res.write(textChunk("a") + textChunk("b") + textChunk("c"));
    };
    const controller = new AbortController();
    let abortedAt = 0;
    const { events, error } = await collect(
      llm().stream(MESSAGES, null, { signal: controller.signal }),
      () => {
        abortedAt = performance.now();
        controller.abort();
      },
    );
    expect(error).toBeUndefined();
    expect(events).toEqual([{ type: "text", content: "a" }]);
    await waitFor(() => server.requests[0]?.closedAt !== undefined);
    expect((server.requests[0]?.closedAt as number) - abortedAt).toBeLessThan(100);
  });

  it("aborts during a stall, and the instance serves the next turn", async () => {
    server.handler = (_req, res) => {
      sseHead(res);
      res.write(textChunk("a"));
    };
    const client = llm();
    const controller = new AbortController();
    let abortedAt = 0;
    const timer = setTimeout(() => {
      abortedAt = performance.now();
      controller.abort();
    }, 150);
    const { events, error } = await collect(
      client.stream(MESSAGES, null, { signal: controller.signal }),
    );
    clearTimeout(timer);
    expect(error).toBeUndefined();
    expect(events).toEqual([{ type: "text", content: "a" }]);
    expect(performance.now() - abortedAt).toBeLessThan(100);
    await waitFor(() => server.requests[0]?.closedAt !== undefined);
    expect((server.requests[0]?.closedAt as number) - abortedAt).toBeLessThan(100);

    server.handler = serve([textChunk("next"), DONE]);
    const next = await collect(client.stream(MESSAGES));
    expect(next.events).toEqual([
      { type: "text", content: "next" },
      { type: "finish", reason: "stop" },
    ]);
  });

  it("aborts the request when the consumer breaks out early", async () => {
    server.handler = (_req, res) => {
      sseHead(res);
      res.write(textChunk("a"));
    };
    const timers = trackClientTimers();
    const controller = new AbortController();
    let brokeAt = 0;
    try {
      for await (const event of llm().stream(MESSAGES, null, { signal: controller.signal })) {
        expect(event).toEqual({ type: "text", content: "a" });
        expect(timers.pending()).toBe(1);
        break;
      }
      brokeAt = performance.now();
      expect(timers.pending()).toBe(0);
    } finally {
      timers.restore();
    }
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
    await waitFor(() => server.requests[0]?.closedAt !== undefined);
    expect((server.requests[0]?.closedAt as number) - brokeAt).toBeLessThan(100);
  });

  it("ends the turns still running on close()", async () => {
    server.handler = (_req, res) => {
      sseHead(res);
      res.write(textChunk("a"));
    };
    const client = llm();
    const { events, error } = await collect(client.stream(MESSAGES), () => {
      setTimeout(() => void client.close(), 50);
    });
    expect(error).toBeUndefined();
    expect(events).toEqual([{ type: "text", content: "a" }]);
    await waitFor(() => server.requests[0]?.closedAt !== undefined);
  });

  it("leaves no timer or listener behind after a turn", async () => {
    server.handler = serve([textChunk("a"), DONE]);
    const client = llm();
    const controller = new AbortController();
    const timers = trackClientTimers();
    try {
      await collect(client.stream(MESSAGES, null, { signal: controller.signal }));
      expect(timers.pending()).toBe(0);
      server.handler = () => {};
      setTimeout(() => controller.abort(), 50);
      await collect(client.stream(MESSAGES, null, { signal: controller.signal }));
      expect(timers.pending()).toBe(0);
      server.handler = (_req, res) => {
        res.writeHead(500);
        res.end();
      };
      await collect(client.stream(MESSAGES, null, { signal: new AbortController().signal }));
      expect(timers.pending()).toBe(0);
      await collect(client.stream(MESSAGES, null, { signal: new AbortController().signal }), () =>
        sleep(1),
      );
      await client.warmup();
      expect(timers.pending()).toBe(0);
    } finally {
      timers.restore();
    }
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
  });
});

describe("connection pool", () => {
  it("opens a new connection when the server closed the idle one", async () => {
    server.handler = serve([textChunk("a"), DONE]);
    const client = llm({ maxRetries: 0 });
    expect((await collect(client.stream(MESSAGES))).error).toBeUndefined();
    // The server closes its side of the idle connection; the next turn must not fail on it.
    await waitFor(() => server.requests[0] !== undefined);
    server.closeIdle();
    await sleep(50);
    const { events, error } = await collect(client.stream(MESSAGES));
    expect(error).toBeUndefined();
    expect(events[0]).toEqual({ type: "text", content: "a" });
    expect(server.connections).toBe(2);
  });

  it("keeps a turn's connection while it waits longer than the pool's idle expiry", async () => {
    server.handler = (_req, res) => {
      sseHead(res);
      res.write(textChunk("a"));
      setTimeout(() => res.end(textChunk("b") + DONE), 5_500);
    };
    const { events, error } = await collect(llm({ timeout: 30 }).stream(MESSAGES));
    expect(error).toBeUndefined();
    expect(events.map((event) => event.type)).toEqual(["text", "text", "finish"]);
  }, 15_000);

  it("pauses a server faster than its consumer, and loses nothing", async () => {
    const texts = Array.from({ length: 20_000 }, (_, i) => `w${i} `);
    server.handler = serve([texts.map((text) => textChunk(text)).join("") + DONE]);
    let seen = "";
    const turn = llm().stream(MESSAGES);
    for await (const event of turn) {
      if (event.type !== "text") continue;
      // Holding the first event lets more than the queue's 256 KiB arrive meanwhile.
      if (seen === "") await sleep(100);
      seen += event.content;
    }
    expect(seen).toBe(texts.join(""));
  });

  it("speaks HTTPS, keeping one connection, and checks the server's certificate", async () => {
    const fixture = (name: string) =>
      readFileSync(new URL(`../fixtures/${name}`, import.meta.url), "latin1");
    const start = async (name: string) => {
      const key = fixture(`${name}-key.pem`);
      const cert = fixture(`${name}-cert.pem`);
      const tlsServer = https.createServer({ key, cert }, (req, res) => {
        req.resume();
        req.on("end", () => serve([textChunk("secure"), DONE])(req, res, {} as Seen));
      });
      let handshakes = 0;
      tlsServer.on("secureConnection", () => {
        handshakes += 1;
      });
      await new Promise<void>((ok) => tlsServer.listen(0, "127.0.0.1", ok));
      const { port } = tlsServer.address() as AddressInfo;
      return { tlsServer, url: `https://localhost:${port}/v1`, handshakes: () => handshakes };
    };
    const trusted = await start("localhost");
    const untrusted = await start("untrusted");
    try {
      const client = llm({ baseUrl: trusted.url });
      for (let turn = 0; turn < 2; turn++) {
        const { events, error } = await collect(client.stream(MESSAGES));
        expect(error).toBeUndefined();
        expect(events[0]).toEqual({ type: "text", content: "secure" });
      }
      expect(trusted.handshakes()).toBe(1);
      const { error } = await collect(
        llm({ baseUrl: untrusted.url, maxRetries: 0 }).stream(MESSAGES),
      );
      expect((error as APIConnectionError).code).toBe("connection_error");
      expect(String(((error as APIConnectionError).cause as Error).message)).toMatch(/certificate/);
    } finally {
      for (const { tlsServer } of [trusted, untrusted]) {
        tlsServer.closeAllConnections();
        tlsServer.close();
      }
    }
  });

  it("decodes a gzip stream as it arrives", async () => {
    const gzip = zlib.createGzip();
    server.handler = (_req, res) => {
      res.writeHead(200, { "Content-Type": "text/event-stream", "Content-Encoding": "gzip" });
      gzip.pipe(res);
      gzip.write(textChunk("first"));
      gzip.flush();
    };
    const client = llm();
    const turn = client.stream(MESSAGES)[Symbol.asyncIterator]();
    // The first event arrives while the compressed stream is still open.
    expect((await turn.next()).value).toEqual({ type: "text", content: "first" });
    gzip.end(textChunk("second") + DONE);
    expect((await turn.next()).value).toEqual({ type: "text", content: "second" });
    expect(plain((await turn.next()).value as Event)).toEqual({ type: "finish", reason: "stop" });
    expect((await turn.next()).done).toBe(true);
    expect(server.requests[0]?.rawHeaders).toContain("gzip, deflate");
  });
});

// -- the other calls --------------------------------------------------------------------------------

describe("complete, warmup, config", () => {
  it("complete() assembles the turn", async () => {
    server.handler = serve([
      sseData({ choices: [{ delta: { reasoning: "r" } }] }),
      textChunk("Hi "),
      textChunk("there"),
      sseData({
        choices: [
          {
            delta: {
              tool_calls: [{ index: 0, id: "c", function: { name: "f", arguments: '{"a"' } }],
            },
          },
        ],
      }),
      sseData({
        choices: [{ delta: { tool_calls: [{ index: 0, function: { arguments: ":1}" } }] } }],
      }),
      sseData({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 2 } }),
      DONE,
    ]);
    const turn = await llm().complete(MESSAGES);
    expect(turn).toEqual({
      text: "Hi there",
      reasoning: "r",
      toolCalls: [{ index: 0, id: "c", name: "f", arguments: '{"a":1}' }],
      usage: { inputTokens: 5, outputTokens: 2, cacheReadTokens: 0 },
      finishReason: "tool_calls",
    });
  });

  it("complete() gives a null finish reason when cancelled", async () => {
    server.handler = (_req, res) => {
      sseHead(res);
      res.write(textChunk("partial"));
    };
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const turn = await llm().complete(MESSAGES, null, { signal: controller.signal });
    expect(turn).toEqual({
      text: "partial",
      reasoning: "",
      toolCalls: [],
      usage: null,
      finishReason: null,
    });
  });

  it("warmup() GETs /models with the User-Agent and the key only", async () => {
    server.handler = (_req, res) => {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end('{"data":[]}');
    };
    await expect(
      llm({ apiKey: "k", extraHeaders: { "X-A": "1" } }).warmup(),
    ).resolves.toBeUndefined();
    await llm().warmup();
    const [withKey, keyless] = server.requests;
    // The transport adds "Accept: */*" when none is given, as httpx does.
    for (const seen of server.requests) {
      const at = seen.rawHeaders.indexOf("Accept");
      expect(at % 2 === 0 && seen.rawHeaders[at + 1]).toBe("*/*");
      seen.rawHeaders = seen.rawHeaders.filter((_, i, all) => all[i - (i % 2)] !== "Accept");
    }
    expect(withKey?.method).toBe("GET");
    expect(withKey?.url).toBe("/v1/models");
    expect(TestServer.headers(withKey as Seen)).toEqual([
      ["User-Agent", "brainline/test"],
      ["Authorization", "Bearer k"],
    ]);
    expect(TestServer.headers(keyless as Seen)).toEqual([["User-Agent", "brainline/test"]]);
    expect(server.connections).toBe(1);
  });

  it("warmup() never throws", async () => {
    const port = await freePort();
    await expect(
      new BaseLLM(makeConfig({ baseUrl: `http://127.0.0.1:${port}/v1` })).warmup(),
    ).resolves.toBeUndefined();
    server.handler = (_req, res) => {
      res.writeHead(500);
      res.end("no");
    };
    await expect(llm().warmup()).resolves.toBeUndefined();
  });

  it("exposes the config read-only and the provider key", () => {
    class Custom extends BaseLLM {
      static override readonly providerKey: string = "custom";
    }
    const config = makeConfig();
    const client = new Custom(config);
    expect(client.config).toEqual(config);
    expect(Object.isFrozen(client.config)).toBe(true);
    expect(Custom.providerKey).toBe("custom");
    expect(client.providerKey).toBe("custom");
  });
});

// -- retries, clocks and dialects (mirrors python/tests/core/test_transport.py) --------------------

/** Count the timers the client starts (by the stack that starts them). */
function countClientTimers(): { started: () => number; restore: () => void } {
  const realSet = globalThis.setTimeout;
  let started = 0;
  const counting = (fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
    if (new Error().stack?.split("\n")[2]?.includes("src/core/client")) started += 1;
    return realSet(fn, ms, ...args);
  };
  globalThis.setTimeout = counting as unknown as typeof setTimeout;
  return { started: () => started, restore: () => (globalThis.setTimeout = realSet) };
}

function answer(status: number, headers: Record<string, string> = {}, body = "{}"): Handler {
  return (_req, res) => {
    res.writeHead(status, { "Content-Type": "application/json", ...headers });
    res.end(body);
  };
}

/** The handlers in turn, the last one repeating. */
function inTurn(...handlers: Handler[]): Handler {
  let at = 0;
  return (req, res, seen) => {
    const handler = handlers[Math.min(at++, handlers.length - 1)] as Handler;
    handler(req, res, seen);
  };
}

describe("retries", () => {
  it("retries a refused connection after the backoff", async () => {
    const port = await freePort();
    const late = http.createServer((_req, res) => {
      res.writeHead(200, { "Content-Type": "text/event-stream" });
      res.end(textChunk("Hello") + DONE);
    });
    setTimeout(() => late.listen(port, "127.0.0.1"), 50); // the retry waits 200 ms
    const client = new BaseLLM(
      makeConfig({ baseUrl: `http://127.0.0.1:${port}/v1`, maxRetries: 1 }),
    );
    const started = performance.now();
    try {
      const { events, error } = await collect(client.stream(MESSAGES));
      const elapsed = performance.now() - started;
      expect(error).toBeUndefined();
      expect(events.map((e) => e.type)).toEqual(["text", "finish"]);
      expect(elapsed).toBeGreaterThanOrEqual(150);
      expect(elapsed).toBeLessThan(1500);
    } finally {
      late.closeAllConnections();
      await new Promise<void>((resolve) => late.close(() => resolve()));
    }
  });

  it("fails at once when Retry-After is beyond the budget", async () => {
    server.handler = answer(429, { "Retry-After": "2" }, '{"error":{"message":"slow"}}');
    const client = llm({ maxRetries: 1, retryBudget: 1.5 });
    const started = performance.now();
    const { error } = await collect(client.stream(MESSAGES));
    expect(performance.now() - started).toBeLessThan(500);
    expect(error).toBeInstanceOf(APIStatusError);
    expect((error as APIStatusError).retryAfter).toBe(2);
    expect(server.requests).toHaveLength(1);
  });

  it("adds the waits up within the budget, retry-after-ms first", async () => {
    const busy = answer(503, { "retry-after-ms": "200", "Retry-After": "9" });
    server.handler = inTurn(busy, busy, serve([textChunk("Hello"), DONE]));
    const client = llm({ maxRetries: 3, retryBudget: 0.5 });
    const started = performance.now();
    const { events, error } = await collect(client.stream(MESSAGES));
    const elapsed = performance.now() - started;
    expect(error).toBeUndefined();
    expect(events.map((e) => e.type)).toEqual(["text", "finish"]);
    expect(server.requests).toHaveLength(3);
    expect(elapsed).toBeGreaterThanOrEqual(350);
    expect(elapsed).toBeLessThan(1500);
  });

  it("ends quietly at once when cancelled during the wait, leaving nothing behind", async () => {
    server.handler = answer(503, { "Retry-After": "1.5" });
    const client = llm({ maxRetries: 1 });
    const controller = new AbortController();
    const timers = trackClientTimers();
    try {
      setTimeout(() => controller.abort(), 200);
      const started = performance.now();
      const { events, error } = await collect(
        client.stream(MESSAGES, null, { signal: controller.signal }),
      );
      expect(performance.now() - started).toBeLessThan(600);
      expect(events).toEqual([]);
      expect(error).toBeUndefined();
      expect(server.requests).toHaveLength(1);
      expect(timers.pending()).toBe(0);
    } finally {
      timers.restore();
    }
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
  });
});

describe("turn clocks", () => {
  it("bounds the retry wait by total_timeout", async () => {
    server.handler = answer(503, { "Retry-After": "1.5" });
    const client = llm({ maxRetries: 1, totalTimeout: 0.3 });
    const started = performance.now();
    const { error } = await collect(client.stream(MESSAGES));
    const elapsed = performance.now() - started;
    expect(error).toBeInstanceOf(APITimeoutError);
    expect((error as APITimeoutError).code).toBe("total_timeout");
    expect(elapsed).toBeGreaterThanOrEqual(250);
    expect(elapsed).toBeLessThan(1000);
  });

  it("does not count keep-alives or trickling bytes as the first token", async () => {
    const pieces = [": keepalive\n\n", 'data: {"choices":[{"index":0,"delta":{"content":"'];
    server.handler = serve([...pieces, ...Array<string>(40).fill("x")], 50);
    const client = llm({ timeout: 5, firstTokenTimeout: 0.4 });
    const timers = trackClientTimers();
    const started = performance.now();
    try {
      const { error } = await collect(client.stream(MESSAGES));
      const elapsed = performance.now() - started;
      expect(error).toBeInstanceOf(APITimeoutError);
      expect((error as APITimeoutError).code).toBe("first_token_timeout");
      expect((error as Error).message).toBe(
        `no first token from ${server.baseUrl}/chat/completions within 0.4 s`,
      );
      expect(elapsed).toBeGreaterThanOrEqual(350);
      expect(elapsed).toBeLessThan(1500);
      expect(timers.pending()).toBe(0);
    } finally {
      timers.restore();
    }
  });

  it("does not count the time the caller holds an event", async () => {
    // One event every 100 ms while the caller takes 500 ms over each: the idle clock (300 ms)
    // counts only the waits for the network, so the turn completes.
    server.handler = serve([...Array<string>(4).fill(textChunk("x")), DONE], 100);
    const client = llm({ timeout: 5, idleTimeout: 0.3, firstTokenTimeout: 0.3 });
    const { events, error } = await collect(client.stream(MESSAGES), () => sleep(500));
    expect(error).toBeUndefined();
    expect(events.map((e) => e.type)).toEqual(["text", "text", "text", "text", "finish"]);
  });

  it("runs the idle clock again once the caller asks for more", async () => {
    server.handler = async (_req, res) => {
      sseHead(res);
      res.write(textChunk("a") + textChunk("b")); // one read, then a keep-alive, then nothing
      await sleep(50);
      res.write(": keepalive\n\n");
    };
    const client = llm({ timeout: 5, idleTimeout: 0.3 });
    let askedAt = 0;
    const { events, error } = await collect(client.stream(MESSAGES), async () => {
      await sleep(500);
      askedAt = performance.now();
    });
    const waited = performance.now() - askedAt;
    expect(events.map((e) => e.type)).toEqual(["text", "text"]);
    expect((error as APITimeoutError).code).toBe("idle_timeout");
    expect(waited).toBeGreaterThanOrEqual(200);
    expect(waited).toBeLessThan(800);
  });

  it("gives unset progress clocks the value of timeout", async () => {
    // Keep-alives every 100 ms and never a token: with only `timeout` (1 s), the first-token
    // clock ends the turn at timeout + PROGRESS_CLOCK_GRACE, naming `timeout`.
    server.handler = serve(Array<string>(60).fill(": keepalive\n\n"), 100);
    const client = llm({ timeout: 1 });
    const started = performance.now();
    const { error } = await collect(client.stream(MESSAGES));
    const elapsed = performance.now() - started;
    expect((error as APITimeoutError).code).toBe("first_token_timeout");
    expect((error as Error).message).toBe(
      `no first token from ${server.baseUrl}/chat/completions within 1 s`,
    );
    expect(elapsed).toBeGreaterThanOrEqual(1200);
    expect(elapsed).toBeLessThan(2000);
  });

  it("uses one timer per turn, not one per read", async () => {
    server.handler = serve([...Array<string>(300).fill(textChunk("x")), DONE]);
    const client = llm({ firstTokenTimeout: 5, idleTimeout: 5, totalTimeout: 10 });
    const timers = countClientTimers();
    try {
      const { events, error } = await collect(client.stream(MESSAGES));
      expect(error).toBeUndefined();
      expect(events).toHaveLength(301);
      expect(timers.started()).toBeLessThanOrEqual(3);
    } finally {
      timers.restore();
    }
  });
});

describe("turn metrics", () => {
  it("gives one record to the callback and the finish event", async () => {
    server.handler = serve(
      [
        sseData({ choices: [{ index: 0, delta: { reasoning_content: "hmm" } }] }),
        textChunk("Hel"),
        textChunk("lo"),
        DONE,
      ],
      30,
    );
    const sink: TurnMetrics[] = [];
    const events: Event[] = [];
    for await (const event of llm({ onMetrics: (m) => sink.push(m) }).stream(MESSAGES)) {
      events.push(event);
    }
    const finish = events.at(-1) as Event & { metrics?: TurnMetrics };
    expect(finish.type).toBe("finish");
    expect(sink).toHaveLength(1);
    expect(sink[0]).toBe(finish.metrics);
    const record = sink[0] as TurnMetrics;
    expect(Object.keys(record)).toEqual(METRICS_KEYS);
    const { headers_ms, first_progress_ms, first_text_ms, duration_ms } = record;
    expect(headers_ms).not.toBeNull();
    expect(headers_ms as number).toBeLessThanOrEqual(first_progress_ms as number);
    expect(first_progress_ms as number).toBeLessThan(first_text_ms as number);
    expect((first_text_ms as number) - (first_progress_ms as number)).toBeGreaterThanOrEqual(20);
    expect(first_text_ms as number).toBeLessThanOrEqual(duration_ms);
  });

  it("logs a callback that throws, and the turn goes on", async () => {
    server.handler = serve([textChunk("Hi"), DONE]);
    const warn = vi.spyOn(console, "error").mockImplementation(() => {});
    try {
      const broken = (): void => {
        throw new RangeError("exporter down");
      };
      const { events, error } = await collect(llm({ onMetrics: broken }).stream(MESSAGES));
      expect(error).toBeUndefined();
      expect(events.map((e) => e.type)).toEqual(["text", "finish"]);
      expect(warn.mock.calls.flat().join(" ")).toContain("onMetrics threw RangeError");
    } finally {
      warn.mockRestore();
    }
  });

  it("gives a cancelled record when the caller stops early", async () => {
    server.handler = serve([textChunk("a"), textChunk("b"), textChunk("c"), DONE], 50);
    const sink: TurnMetrics[] = [];
    for await (const _ of llm({ onMetrics: (m) => sink.push(m) }).stream(MESSAGES)) break;
    expect(sink).toHaveLength(1);
    expect(sink[0]?.cancelled).toBe(true);
    expect(sink[0]?.error_code).toBeNull();
    expect(sink[0]?.chunks).toBe(1);
  });

  it("gives a record without a request when cancelled before the start", async () => {
    const sink: TurnMetrics[] = [];
    const signal = AbortSignal.abort();
    const { events } = await collect(
      llm({ onMetrics: (m) => sink.push(m) }).stream(MESSAGES, null, { signal }),
    );
    expect(events).toEqual([]);
    expect(sink).toHaveLength(1);
    expect(sink[0]?.cancelled).toBe(true);
    expect(sink[0]?.attempts).toBe(0);
    expect(server.requests).toHaveLength(0);
  });

  it("builds the record once", () => {
    const calls: TurnMetrics[] = [];
    const meter = new TurnMeter("custom", "m", (m) => calls.push(m));
    const first = meter.finish({ finishReason: "stop" });
    expect(meter.finish({ errorCode: "interrupted" })).toBe(first);
    expect(calls).toHaveLength(1);
    expect(first.error_code).toBeNull();
  });
});

describe("dialects", () => {
  it("remembers the working form per instance", async () => {
    const rejected = answer(400, {}, '{"error":{"message":"Unknown field: stream_options"}}');
    const ok = serve([textChunk("a"), DONE]);
    server.handler = inTurn(rejected, ok, ok, ok);
    const first = llm();
    await collect(first.stream(MESSAGES));
    await collect(first.stream(MESSAGES));
    await collect(llm().stream(MESSAGES));
    const sent = server.requests.map((r) => "stream_options" in JSON.parse(r.body));
    expect(sent).toEqual([true, false, false, true]);
  });

  it("merges extra_body last and appends extra_query, also to warmup", async () => {
    server.handler = serve([textChunk("a"), DONE]);
    const client = llm({
      temperature: 0.7,
      extraBody: { top_k: 40, temperature: 0.1 },
      extraQuery: { "a b": "é/&=~*+!'()" },
    });
    await collect(client.stream(MESSAGES));
    await client.warmup();
    const query = "?a%20b=%C3%A9%2F%26%3D~%2A%2B%21%27%28%29";
    expect(server.requests.map((r) => r.url)).toEqual([
      `/v1/chat/completions${query}`,
      `/v1/models${query}`,
    ]);
    expect(server.requests[0]?.body).toBe(
      '{"model":"test-model","messages":[{"role":"user","content":"hi"}],"stream":true,' +
        '"stream_options":{"include_usage":true},"temperature":0.1,"top_k":40}',
    );
  });
});
