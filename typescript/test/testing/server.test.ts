// The TypeScript MockServer (src/testing/server.ts) through its API and a real brainline client.
// Its bytes are compared with the Python server's by tests/mockserver/test_drift.py.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, expect, test, vi } from "vitest";
import { main } from "../../src/command.js";
import { CustomLLM, type Event } from "../../src/index.js";
import {
  compileScript,
  MockServer,
  MockServerUnavailableError,
  ScriptError,
  startMockServer,
} from "../../src/testing.js";

const MESSAGES = [{ role: "user", content: "hi" }];
let server: MockServer | undefined;

afterEach(async () => {
  await server?.stop();
  server = undefined;
});

async function collect(llm: CustomLLM): Promise<Event[]> {
  const events: Event[] = [];
  for await (const ev of llm.stream(MESSAGES)) events.push(ev);
  return events;
}

test("a streamed turn, its record and one keep-alive connection for two turns", async () => {
  server = new MockServer({
    text: ["Hel", "lo"],
    usage: { prompt_tokens: 5, completion_tokens: 2 },
  });
  const url = await server.start();
  expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1$/);
  expect(server.origin).toBe(url.slice(0, -3));
  const llm = new CustomLLM({ baseUrl: url, model: "m", extraHeaders: { "X-Trace": "t1" } });
  const events = await collect(llm);
  await collect(llm);
  await llm.close();
  expect(events.map((e) => e.type)).toEqual(["text", "text", "usage", "finish"]);
  const [first, second] = server.requests;
  expect(first?.method).toBe("POST");
  expect(first?.path).toBe("/v1/chat/completions");
  expect(first?.header("X-TRACE")).toBe("t1");
  expect(first?.headerValues("x-trace")).toEqual(["t1"]);
  expect(first?.json).toMatchObject({ model: "m" });
  expect(first?.completed).toBe(true);
  expect(first?.status).toBe(200);
  expect(first?.route).toBeNull();
  expect(second?.connection).toBe(first?.connection);
  expect(server.lastRequest).toBe(second);
  expect(await server.waitFor(() => server?.connectionsOpen === 0)).toBe(true);
  expect(server.connectionsTotal).toBe(1);
  expect(server.connections[0]?.closedBy).toBe("client");
  expect(server.connections[0]?.requests).toEqual([1, 2]);
});

test("a barge-in closes the socket and the server records it", async () => {
  server = new MockServer({ text: ["a", "b"], stall: 1 });
  const url = await server.start();
  const llm = new CustomLLM({ baseUrl: url, model: "m" });
  const barge = new AbortController();
  const events: Event[] = [];
  for await (const ev of llm.stream(MESSAGES, undefined, { signal: barge.signal })) {
    events.push(ev);
    barge.abort();
  }
  await llm.close();
  expect(events[0]).toEqual({ type: "text", content: "a" });
  expect(await server.waitFor(() => server?.requests[0]?.clientClosed === true)).toBe(true);
  const request = server.requests[0];
  expect(request?.completed).toBe(false);
  expect(request?.closedAt).toBeGreaterThan(request?.receivedAt ?? Number.POSITIVE_INFINITY);
  expect(server.connectionsOpen).toBe(0);
});

test("routes, models, the 404 and the counters; setScript, addRoute and reset", async () => {
  server = new MockServer({ routes: { "/a/": [{ json: { n: 1 } }, { json: { n: 2 } }] } });
  const origin = new URL(await server.start()).origin;
  const post = async (path: string) => {
    const res = await fetch(origin + path, { method: "POST", body: "{}" });
    return [res.status, await res.json()];
  };
  expect(await post("/a/x")).toEqual([200, { n: 1 }]);
  expect(await post("/a/x")).toEqual([200, { n: 2 }]);
  expect(await post("/a/x")).toEqual([200, { n: 2 }]);
  const [status, body] = await post("/v1/chat/completions");
  expect(status).toBe(404);
  expect(body.error.message).toBe(
    "brainline mock server: no scripted response for POST /v1/chat/completions",
  );
  const models = await (await fetch(`${origin}/v1/models`)).json();
  expect(models.data.map((m: { id: string }) => m.id)).toEqual(["mock-model"]);
  expect(server.requestsUnder("/a/").map((r) => r.route)).toEqual(["/a/", "/a/", "/a/"]);
  server.addRoute("/a/", { json: { n: 3 } });
  expect(await post("/a/x")).toEqual([200, { n: 3 }]);
  server.setScript({ json: { all: true } });
  expect(await post("/a/x")).toEqual([200, { all: true }]);
  expect(() => server?.setScript({ nope: 1, json: {} })).toThrow(ScriptError);
  server.reset();
  expect(server.requests).toEqual([]);
  expect(server.snapshot()).toMatchObject({
    requests: [],
    connections_total: server.connectionsTotal,
  });
});

test("a script error names the key, as Python's does", () => {
  expect(() => compileScript({ text: "a", zeta: 1, alpha: 2 })).toThrow(
    "responses[0]: unknown response keys ['alpha', 'zeta']",
  );
  expect(() => compileScript({ sse: [{ weird: "it's" }] })).toThrow(
    `responses[0].sse[0]: a piece is a string or one of {hex}, {b64}, {repeat, count}, {data[, event, id]}, {concat}; got {'weird': "it's"}`,
  );
  try {
    compileScript({ routes: { "no-slash": { json: {} } } });
  } catch (err) {
    expect(err).toBeInstanceOf(ScriptError);
    expect((err as ScriptError).code).toBe("invalid_script");
  }
});

test("delays hold the bytes back; a drop with reset resets the connection", async () => {
  server = new MockServer([
    { text: ["a", "b", "c"], delay_ms: 60, delay_before_headers_ms: 60 },
    { text: ["a", "b"], drop_after: 1, drop_reset: true },
  ]);
  const origin = new URL(await server.start()).origin;
  const started = performance.now();
  const res = await fetch(`${origin}/v1/chat/completions`, { method: "POST", body: "{}" });
  await res.text();
  expect(performance.now() - started).toBeGreaterThanOrEqual(60 * 5 - 10); // 60 + 4 gaps of 60
  // the RST itself: tests/mockserver/test_drift.py (a Node socket reports it as an end)
  const received = await new Promise<string>((resolve) => {
    let text = "";
    const sock = connect(server?.port ?? 0, "127.0.0.1", () => {
      sock.write("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    });
    sock.on("data", (chunk) => {
      text += chunk.toString("latin1");
    });
    sock.on("error", () => undefined);
    sock.on("close", () => resolve(text));
  });
  expect(received).toMatch(/^HTTP\/1\.1 200 OK\r\n.*"content":"a".*\n\n\r\n$/s);
  expect(server.requests[1]?.dropped).toBe(true);
});

test("stop() closes the connections a stall holds", async () => {
  server = new MockServer({ text: ["a"], stall: "headers" });
  const origin = new URL(await server.start()).origin;
  const pending = fetch(`${origin}/v1/chat/completions`, { method: "POST", body: "{}" })
    .then((res) => res.text())
    .catch((err: unknown) => err);
  expect(await server.waitFor(() => server?.requests.length === 1)).toBe(true);
  await server.stop();
  expect(await pending).toBeInstanceOf(Error);
  expect(server.connections[0]?.closedBy).toBe("server");
  expect(server.requests[0]?.clientClosed).toBe(false);
});

test("startMockServer runs in-process: no Python, the demo turn by default", async () => {
  const handle = await startMockServer({ python: "/nonexistent/python" });
  try {
    const llm = new CustomLLM({ baseUrl: handle.url, model: "m" });
    const turn = await llm.complete(MESSAGES);
    await llm.close();
    expect(turn.text).toBe("Hello from the brainline mock server.");
    expect((await handle.requests()).requests).toHaveLength(1);
    expect(handle.server.requests[0]?.path).toBe("/v1/chat/completions");
    await expect(handle.setScript({ bogus: 1, json: {} })).rejects.toThrow(ScriptError);
  } finally {
    await handle.close();
  }
  const taken = new MockServer();
  await taken.start();
  try {
    await expect(startMockServer({ port: taken.port })).rejects.toThrow(MockServerUnavailableError);
  } finally {
    await taken.stop();
  }
});

test("brainline mock-server refuses a bad port, an unreadable or invalid script (exit 2)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "brainline-mock-"));
  const err = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
  try {
    const bad = join(dir, "bad.json");
    writeFileSync(bad, JSON.stringify({ text: "a", bogus: 1 }));
    expect(await main(["mock-server", "--port", "x"])).toBe(2);
    expect(await main(["mock-server", "--script", join(dir, "missing.json")])).toBe(2);
    expect(await main(["mock-server", "--script", bad])).toBe(2);
    const lines = err.mock.calls.map(([chunk]) => String(chunk));
    expect(lines[0]).toMatch(/^error: usage: --port must be an integer, got "x"/);
    expect(lines[1]).toMatch(/^cannot read script .*missing\.json: /);
    expect(lines[2]).toBe("invalid script: responses[0]: unknown response keys ['bogus']\n");
  } finally {
    err.mockRestore();
    rmSync(dir, { recursive: true, force: true });
  }
});
