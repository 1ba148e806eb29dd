// FallbackLLM against loopback mock-server routes: order, failover, hedging, cooldown, barge-in, the
// route event, AllEndpointsFailedError and clean-up. python/tests/core/test_fallback.py holds the
// same tests.
import { createServer } from "node:net";
import { resolve } from "node:path";
import { inspect } from "node:util";
import { afterAll, beforeAll, expect, test } from "vitest";
import {
  AllEndpointsFailedError,
  APIStatusError,
  ConfigError,
  CustomLLM,
  type Event,
  FallbackLLM,
  StreamError,
} from "../../src/index.js";
import { type MockServerHandle, startMockServer } from "../../src/testing.js";

const PY_SRC = resolve(__dirname, "..", "..", "..", "python", "src");
process.env.PYTHONPATH = [PY_SRC, process.env.PYTHONPATH].filter(Boolean).join(":");

const MESSAGES = [{ role: "user", content: "hi" }];
const KEY = "sk-fallback-secret-1";
const OK = { text: ["Hel", "lo"] };
const CLOSE_WITHIN = 1000;

let server: MockServerHandle;
let base: string;
let counter = 0;
beforeAll(async () => {
  server = await startMockServer({ script: { responses: [{ status: 404, json: {} }] } });
  base = server.url.replace(/\/v1$/, "");
});
afterAll(async () => {
  await server?.close();
});

/** Routes under a fresh prefix per test: name -> response(s); returns the prefix. */
async function routes(spec: Record<string, unknown>): Promise<string> {
  counter += 1;
  const prefix = `/t${counter}`;
  for (const [name, responses] of Object.entries(spec)) {
    await server.addRoute(`${prefix}/${name}/`, responses);
  }
  return prefix;
}

function endpoint(prefix: string, name: string, options: Record<string, unknown> = {}): CustomLLM {
  return new CustomLLM({
    baseUrl: `${base}${prefix}/${name}/v1`,
    model: name,
    maxRetries: 0,
    ...options,
  });
}

async function closedUrl(): Promise<string> {
  const listener = createServer();
  await new Promise<void>((done) => listener.listen(0, "127.0.0.1", done));
  const { port } = listener.address() as { port: number };
  await new Promise<void>((done) => listener.close(() => done()));
  return `http://127.0.0.1:${port}/v1`;
}

async function collect(stream: AsyncIterable<Event>): Promise<Event[]> {
  const events: Event[] = [];
  for await (const event of stream) events.push(event);
  return events;
}

function texts(events: readonly Event[]): string {
  return events.map((e) => (e.type === "text" ? e.content : "")).join("");
}

type Recorded = { path: string; client_closed: boolean; headers: [string, string][] };

async function recorded(prefix: string): Promise<Recorded[]> {
  return (await server.requests(prefix)).requests as unknown as Recorded[];
}

async function waitFor(check: () => Promise<boolean>, ms = CLOSE_WITHIN): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return check();
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected an error");
}

const placeholder = (): CustomLLM =>
  new CustomLLM({ baseUrl: "http://127.0.0.1:9/v1", model: "m" });

// -- construction -----------------------------------------------------------------------------

test("defaults come from the spec", () => {
  const llm = new FallbackLLM([placeholder()]);
  expect(llm.config.hedgeAfter).toBeUndefined();
  expect(llm.config.cooldown).toBe(30);
});

test.each([[[]], [null], ["x"], [[{}]]])(
  "llms must be a non-empty list of providers (%j)",
  (llms) => {
    // biome-ignore lint/suspicious/noExplicitAny: deliberately wrong types
    const err = thrown(() => new FallbackLLM(llms as any));
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).code).toBe("invalid_llms");
  },
);

test("a fallback is not an endpoint", () => {
  const inner = new FallbackLLM([placeholder()]);
  // biome-ignore lint/suspicious/noExplicitAny: deliberately wrong types
  const err = thrown(() => new FallbackLLM([inner as any]));
  expect((err as ConfigError).code).toBe("invalid_llms");
});

test.each([
  [{ hedgeAfter: -1 }, "below_minimum", "hedgeAfter must be >= 0, got -1"],
  [{ hedgeAfter: "1" }, "invalid_type", 'hedgeAfter must be a number, got "1"'],
  [{ cooldown: -0.5 }, "below_minimum", "cooldown must be >= 0, got -0.5"],
  [{ cooldown: true }, "invalid_type", "cooldown must be a number, got true"],
])("options are checked (%j)", (options, code, message) => {
  // biome-ignore lint/suspicious/noExplicitAny: deliberately wrong types
  const err = thrown(() => new FallbackLLM([placeholder()], options as any));
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as ConfigError).code).toBe(code);
  expect((err as Error).message).toBe(message);
});

test("an unknown option is refused (Python: TypeError)", () => {
  // biome-ignore lint/suspicious/noExplicitAny: deliberately wrong option names
  const err = thrown(() => new FallbackLLM([placeholder()], { hedge_after: 0.3 } as any));
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as ConfigError).code).toBe("unknown_option");
  expect((err as Error).message).toBe(
    'FallbackLLM got an unknown option "hedge_after"; did you mean "hedgeAfter"?',
  );
});

test("null means the default cooldown", () => {
  expect(new FallbackLLM([placeholder()], { cooldown: null }).config.cooldown).toBe(30);
});

test("inspect and JSON show providers and models, never keys", () => {
  const llm = new FallbackLLM(
    [
      new CustomLLM({ baseUrl: "http://127.0.0.1:9/v1", model: "a", apiKey: KEY }),
      new CustomLLM({ baseUrl: "http://127.0.0.1:9/v1", model: "b", sessionKey: KEY }),
    ],
    { hedgeAfter: 0.3 },
  );
  expect(inspect(llm)).toBe("FallbackLLM([custom:a, custom:b], hedgeAfter=0.3, cooldown=30)");
  expect(JSON.stringify(llm)).not.toContain(KEY);
  expect(JSON.parse(JSON.stringify(llm))).toEqual({
    llms: [
      { provider: "custom", model: "a" },
      { provider: "custom", model: "b" },
    ],
    hedgeAfter: 0.3,
    cooldown: 30,
  });
});

// -- turns ------------------------------------------------------------------------------------

test("the primary answers with a route event first", async () => {
  const p = await routes({ a: OK });
  const llm = new FallbackLLM([endpoint(p, "a"), endpoint(p, "b")]);
  const events = await collect(llm.stream(MESSAGES));
  expect(events[0]).toEqual({
    type: "route",
    endpoint: 0,
    provider: "custom",
    reason: "primary",
    failed: [],
  });
  expect(texts(events)).toBe("Hello");
  expect(events.at(-1)).toMatchObject({ type: "finish", reason: "stop" });
  expect(await recorded(`${p}/b/`)).toEqual([]);
});

test("a refused primary fails over at once", async () => {
  const p = await routes({ b: OK });
  // the primary would retry a refused connect after a backoff: inside a FallbackLLM it does not
  const primary = new CustomLLM({
    baseUrl: await closedUrl(),
    model: "a",
    maxRetries: 3,
    retryBudget: 5,
  });
  const llm = new FallbackLLM([primary, endpoint(p, "b")]);
  const started = performance.now();
  const events = await collect(llm.stream(MESSAGES));
  expect(performance.now() - started).toBeLessThan(500); // its own retries would wait 1.4 s
  expect(events[0]).toEqual({
    type: "route",
    endpoint: 1,
    provider: "custom",
    reason: "failover",
    failed: [{ endpoint: 0, code: "connection_error" }],
  });
  expect(texts(events)).toBe("Hello");
});

test("the last endpoint keeps its own retries", async () => {
  const p = await routes({ b: [{ status: 503, json: { error: "busy" } }, OK] });
  const last = endpoint(p, "b", { maxRetries: 1, retryBudget: 1 });
  const llm = new FallbackLLM([new CustomLLM({ baseUrl: await closedUrl(), model: "a" }), last]);
  const events = await collect(llm.stream(MESSAGES));
  expect(texts(events)).toBe("Hello");
  expect(await recorded(`${p}/b/`)).toHaveLength(2);
});

test("a waiting retry becomes a failover", async () => {
  const p = await routes({ a: { status: 503, json: { error: "busy" } }, b: OK });
  const llm = new FallbackLLM([
    endpoint(p, "a", { maxRetries: 2, retryBudget: 5 }),
    endpoint(p, "b"),
  ]);
  const events = await collect(llm.stream(MESSAGES));
  expect(events[0]).toMatchObject({ failed: [{ endpoint: 0, code: "http_status" }] });
  expect(await recorded(`${p}/a/`)).toHaveLength(1);
});

test("all failed carries each error in order", async () => {
  const p = await routes({ b: { status: 500, json: { error: { message: "boom" } } } });
  const llm = new FallbackLLM([
    new CustomLLM({ baseUrl: await closedUrl(), model: "a" }),
    endpoint(p, "b"),
  ]);
  const err = await collect(llm.stream(MESSAGES)).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AllEndpointsFailedError);
  const failure = err as AllEndpointsFailedError;
  expect(failure.code).toBe("all_endpoints_failed");
  expect(failure.message).toBe("every endpoint failed: connection_error, http_status");
  expect(failure.errors.map((e) => e.code)).toEqual(["connection_error", "http_status"]);
  expect(failure.errors[1]).toBeInstanceOf(APIStatusError);
  expect((failure.errors[1] as APIStatusError).status).toBe(500);
});

test("call arguments are checked before any attempt", async () => {
  const p = await routes({ a: OK });
  const llm = new FallbackLLM([endpoint(p, "a")]);
  await expect(collect(llm.stream([]))).rejects.toMatchObject({ code: "invalid_messages" });
  await expect(collect(llm.stream(MESSAGES, null, { callId: "a\r\nb" }))).rejects.toBeInstanceOf(
    ConfigError,
  );
  expect(await recorded(`${p}/`)).toEqual([]);
});

test("the hedge wins over a silent primary and closes it", async () => {
  const p = await routes({
    a: { text: ["late"], stall: "headers" },
    b: { text: ["Hel", "lo"], stall: 1 },
  });
  const llm = new FallbackLLM([endpoint(p, "a"), endpoint(p, "b")], { hedgeAfter: 0.1 });
  const started = performance.now();
  const stream = llm.stream(MESSAGES);
  const events: Event[] = [];
  for (;;) {
    const { value } = await stream.next();
    events.push(value as Event);
    if ((value as Event).type === "text") break; // the hedge still streams, held open here
  }
  expect(performance.now() - started).toBeLessThan(1000);
  expect(events[0]).toMatchObject({ reason: "hedge", endpoint: 1 });
  expect(await waitFor(async () => (await recorded(`${p}/a/`))[0]?.client_closed === true)).toBe(
    true,
  );
  await stream.return(undefined);
});

test("keep-alives do not hold off the hedge", async () => {
  const p = await routes({
    a: { sse: Array(50).fill(": keepalive\n\n"), delay_ms: 20, transfer: "chunked" },
    b: OK,
  });
  const llm = new FallbackLLM([endpoint(p, "a"), endpoint(p, "b")], { hedgeAfter: 0.1 });
  const events = await collect(llm.stream(MESSAGES));
  expect(events[0]).toMatchObject({ reason: "hedge" });
  expect(texts(events)).toBe("Hello");
});

test("the primary can still win after the hedge started", async () => {
  const p = await routes({
    a: { text: ["first", "!"], delay_before_headers_ms: 200, stall: 1 },
    b: { text: ["second"], stall: "headers" },
  });
  const llm = new FallbackLLM([endpoint(p, "a"), endpoint(p, "b")], { hedgeAfter: 0.05 });
  const stream = llm.stream(MESSAGES);
  const events: Event[] = [];
  for (;;) {
    const { value } = await stream.next();
    events.push(value as Event);
    if ((value as Event).type === "text") break; // the primary still streams, held open here
  }
  expect(events[0]).toMatchObject({ reason: "primary" });
  expect(texts(events)).toBe("first");
  expect(await waitFor(async () => (await recorded(`${p}/b/`))[0]?.client_closed === true)).toBe(
    true,
  );
  await stream.return(undefined);
});

test("at most one hedge per turn", async () => {
  const p = await routes({
    a: { text: ["a"], delay_before_headers_ms: 300 },
    b: { text: ["b"], stall: "headers" },
    c: OK,
  });
  const llm = new FallbackLLM([endpoint(p, "a"), endpoint(p, "b"), endpoint(p, "c")], {
    hedgeAfter: 0.05,
  });
  expect(texts(await collect(llm.stream(MESSAGES)))).toBe("a");
  expect(await recorded(`${p}/c/`)).toEqual([]);
});

test("an error after the first event is not a switch", async () => {
  const p = await routes({ a: { text: ["Hel", "lo"], drop_after: 1 }, b: OK });
  const llm = new FallbackLLM([endpoint(p, "a"), endpoint(p, "b")]);
  const events: Event[] = [];
  let error: unknown;
  try {
    for await (const event of llm.stream(MESSAGES)) events.push(event);
  } catch (err) {
    error = err;
  }
  expect(error).toBeInstanceOf(StreamError);
  expect((error as StreamError).code).toBe("interrupted");
  expect((error as StreamError).partialText).toBe("Hel");
  expect(texts(events)).toBe("Hel");
  expect(await recorded(`${p}/b/`)).toEqual([]);
});

test("an empty answer is an answer", async () => {
  const p = await routes({ a: { text: [] }, b: OK });
  const llm = new FallbackLLM([endpoint(p, "a"), endpoint(p, "b")], { hedgeAfter: 0.5 });
  const events = await collect(llm.stream(MESSAGES));
  expect(events.map((e) => e.type)).toEqual(["route", "finish"]);
  expect(await recorded(`${p}/b/`)).toEqual([]);
});

test("cooldown skips, then retries, a failed endpoint", async () => {
  const p = await routes({ a: [{ status: 503, json: { error: "busy" } }, OK], b: OK });
  const llm = new FallbackLLM([endpoint(p, "a"), endpoint(p, "b")], { cooldown: 0.3 });
  const first = await collect(llm.stream(MESSAGES));
  const second = await collect(llm.stream(MESSAGES));
  await new Promise((r) => setTimeout(r, 350));
  const third = await collect(llm.stream(MESSAGES));
  expect(first[0]).toMatchObject({ endpoint: 1, reason: "failover" });
  expect(second[0]).toMatchObject({ endpoint: 1, reason: "primary" });
  expect(third[0]).toMatchObject({ endpoint: 0, reason: "primary" });
  expect(await recorded(`${p}/a/`)).toHaveLength(2);
});

test("when every endpoint cools down all are tried", async () => {
  const p = await routes({ a: [{ status: 503, json: {} }, OK], b: { status: 503, json: {} } });
  const llm = new FallbackLLM([endpoint(p, "a"), endpoint(p, "b")]);
  await expect(collect(llm.stream(MESSAGES))).rejects.toBeInstanceOf(AllEndpointsFailedError);
  const events = await collect(llm.stream(MESSAGES));
  expect(events[0]).toMatchObject({ endpoint: 0 });
  expect(texts(events)).toBe("Hello");
});

test("a client error does not cool down", async () => {
  const p = await routes({ a: [{ status: 400, json: { error: "bad" } }, OK], b: OK });
  const llm = new FallbackLLM([endpoint(p, "a"), endpoint(p, "b")]);
  await collect(llm.stream(MESSAGES));
  expect((await collect(llm.stream(MESSAGES)))[0]).toMatchObject({ endpoint: 0 });
});

test("barge-in during the race closes every connection", async () => {
  const p = await routes({
    a: { text: ["x"], stall: "headers" },
    b: { text: ["y"], stall: "headers" },
  });
  const llm = new FallbackLLM([endpoint(p, "a"), endpoint(p, "b")], { hedgeAfter: 0.05 });
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 200);
  const started = performance.now();
  const events = await collect(llm.stream(MESSAGES, null, { signal: controller.signal }));
  expect(events).toEqual([]);
  expect(performance.now() - started).toBeLessThan(500);
  expect(
    await waitFor(async () => {
      const seen = await recorded(`${p}/`);
      return seen.length === 2 && seen.every((r) => r.client_closed);
    }),
  ).toBe(true);
});

test("barge-in after the winner started", async () => {
  const p = await routes({ a: { text: ["Hel", "lo"], stall: 1 } });
  const llm = new FallbackLLM([endpoint(p, "a"), endpoint(p, "b")]);
  const controller = new AbortController();
  const events: Event[] = [];
  for await (const event of llm.stream(MESSAGES, null, { signal: controller.signal })) {
    events.push(event);
    if (event.type === "text") controller.abort();
  }
  expect(events.map((e) => e.type)).toEqual(["route", "text"]);
  expect(await waitFor(async () => (await recorded(`${p}/a/`))[0]?.client_closed === true)).toBe(
    true,
  );
});

test("breaking out closes every connection", async () => {
  const p = await routes({
    a: { text: ["x", "y"], delay_before_headers_ms: 150, stall: 1 },
    b: { text: ["Hel", "lo"], stall: 1 },
  });
  const llm = new FallbackLLM([endpoint(p, "a"), endpoint(p, "b")], { hedgeAfter: 0.05 });
  for await (const event of llm.stream(MESSAGES)) {
    if (event.type === "text") break;
  }
  expect(await waitFor(async () => (await recorded(`${p}/`)).every((r) => r.client_closed))).toBe(
    true,
  );
});

test("a tool call is progress", async () => {
  const p = await routes({
    a: { tool_calls: [{ id: "c1", name: "lookup", arguments: '{"q":1}' }] },
  });
  const llm = new FallbackLLM([endpoint(p, "a"), endpoint(p, "b")], { hedgeAfter: 0.5 });
  const turn = await llm.complete(MESSAGES, [{ type: "function", function: { name: "lookup" } }]);
  expect(turn.finishReason).toBe("tool_calls");
  expect(turn.toolCalls.map((c) => c.name)).toEqual(["lookup"]);
});

test("progress events are held until the attempt wins", async () => {
  const progress = { event: "hermes.tool.progress", data: { tool: "x" } };
  const p = await routes({ a: { sse: [progress], transfer: "chunked", stall: 1 }, b: OK });
  const llm = new FallbackLLM([endpoint(p, "a"), endpoint(p, "b")], { hedgeAfter: 0.1 });
  const events = await collect(llm.stream(MESSAGES));
  expect(events.filter((e) => e.type === "progress")).toEqual([]);
  expect(events[0]).toMatchObject({ endpoint: 1 });
});

test("each endpoint sends its own session headers", async () => {
  const p = await routes({ a: { status: 503, json: {} }, b: OK });
  const a = endpoint(p, "a", { sessionIdHeader: "X-A", sessionIdPrefix: "a-" });
  const b = endpoint(p, "b", { sessionIdHeader: "X-B", sessionIdPrefix: "b-" });
  await collect(new FallbackLLM([a, b]).stream(MESSAGES, null, { callId: "c1" }));
  const header = (r: Recorded | undefined, name: string) =>
    r?.headers.find(([key]) => key === name)?.[1];
  expect(header((await recorded(`${p}/a/`))[0], "x-a")).toBe("a-c1");
  expect(header((await recorded(`${p}/b/`))[0], "x-b")).toBe("b-c1");
  expect(header((await recorded(`${p}/b/`))[0], "x-a")).toBeUndefined();
});

test("complete ignores the route event", async () => {
  const p = await routes({ a: OK });
  const llm = new FallbackLLM([endpoint(p, "a")]);
  const turn = await llm.complete(MESSAGES);
  expect([turn.text, turn.finishReason]).toEqual(["Hello", "stop"]);
  await llm.close();
});

test("warmup warms every endpoint and never throws", async () => {
  const p = await routes({});
  const llm = new FallbackLLM([
    endpoint(p, "a"),
    new CustomLLM({ baseUrl: await closedUrl(), model: "b" }),
  ]);
  await llm.warmup();
  expect((await recorded(`${p}/`)).map((r) => r.path)).toEqual([`${p}/a/v1/models`]);
});
