// The `brainline` command (src/command.ts) and the brainline/testing helper, against the
// TypeScript mock server it starts in-process.
import { afterAll, beforeAll, expect, test, vi } from "vitest";
import { flagMessage, main, parseFlag } from "../src/command.js";
import { ConfigError, CustomLLM } from "../src/index.js";
import { type MockServerHandle, startMockServer } from "../src/testing.js";

const TURN = {
  text: ["It is ", "sunny."],
  tool_calls: [{ id: "call_1", name: "get_weather", arguments: ['{"city":', '"Rome"}'] }],
  usage: { prompt_tokens: 9, completion_tokens: 4 },
};

let server: MockServerHandle;
beforeAll(async () => {
  server = await startMockServer({ script: TURN });
});
afterAll(async () => {
  await server?.close();
});

/** Run `brainline ...` in-process: [exit code, stdout, stderr]. */
async function run(...argv: string[]): Promise<[number, string, string]> {
  let out = "";
  let err = "";
  const o = vi.spyOn(process.stdout, "write").mockImplementation((chunk) => {
    out += String(chunk);
    return true;
  });
  const e = vi.spyOn(process.stderr, "write").mockImplementation((chunk) => {
    err += String(chunk);
    return true;
  });
  try {
    const code = await main(argv);
    return [code, out, err];
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}

test("parseFlag reads the spec type and passes bad text on", () => {
  expect(parseFlag("number", "1.5")).toBe(1.5);
  expect(parseFlag("number", "abc")).toBe("abc");
  expect(parseFlag("integer", "3")).toBe(3);
  expect(parseFlag("integer", "3.5")).toBe("3.5");
  expect(parseFlag("boolean", "false")).toBe(false);
  expect(parseFlag("boolean", "no")).toBe("no");
  expect(parseFlag("headers", '{"X-A":"1"}')).toEqual({ "X-A": "1" });
  expect(parseFlag("json_object", "{bad")).toBe("{bad");
  expect(parseFlag("tool_choice", "auto")).toBe("auto");
  expect(parseFlag("string", "12")).toBe("12");
});

test("flagMessage names the flag the user typed", () => {
  const err = new ConfigError("invalid_type", 'maxRetries must be an integer, got "x"');
  expect(flagMessage(err)).toBe('--max-retries must be an integer, got "x"');
  const choice = new ConfigError(
    "invalid_session_key_from",
    "sessionKeyFrom must be 'caller_hash' or undefined, got \"x\"",
  );
  expect(flagMessage(choice)).toBe("--session-key-from must be 'caller_hash' or unset, got \"x\"");
});

test("chat --json prints one event per line and the flags reach the wire", async () => {
  await server.reset();
  const [code, out] = await run(
    ...["chat", "What is the weather?", "--base-url", server.url, "--model", "m", "--json"],
    ...[
      "--temperature",
      "0.5",
      "--stop",
      "a",
      "--stop",
      "b",
      "--extra-headers",
      '{"X-Trace":"t1"}',
    ],
  );
  expect(code).toBe(0);
  const events = out
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line));
  expect(events.map((e) => e.type)).toEqual([
    "text",
    "text",
    "tool_call",
    "tool_call",
    "tool_call",
    "usage",
    "finish",
  ]);
  expect(out.split("\n")[0]).toBe('{"type":"text","content":"It is "}');
  const records = await server.requests();
  expect(records.requests).toHaveLength(1);
  const req = records.requests[0] as { json: Record<string, unknown>; headers: string[][] };
  expect(req.json.temperature).toBe(0.5);
  expect(req.json.stop).toEqual(["a", "b"]);
  expect(req.headers).toContainEqual(["x-trace", "t1"]);
});

test("chat streams text to stdout and the rest to stderr", async () => {
  const [code, out, err] = await run("chat", "hi", "--base-url", server.url, "--model", "m");
  expect(code).toBe(0);
  expect(out).toBe("It is sunny.\n");
  const lines = err.split("\n");
  expect(lines.splice(2, 1)[0]).toMatch(/^timing: first token \d+ ms, \d+ ms in all, 7 chunks$/);
  expect(lines).toEqual([
    "usage: 9 in (+0 cached), 4 out",
    'tool call: get_weather({"city":"Rome"}) id=call_1',
    "finish: tool_calls",
    "",
  ]);
});

test("an API error exits 1 and a config error 2, with their codes", async () => {
  const [code, , err] = await run(
    "chat",
    "hi",
    "--base-url",
    "http://127.0.0.1:9/v1",
    "--model",
    "m",
  );
  expect(code).toBe(1);
  expect(err).toMatch(/^error: connection_error: /);
  const [code2, , err2] = await run(
    ...["chat", "hi", "--base-url", server.url, "--model", "m", "--timeout", "abc"],
  );
  expect(code2).toBe(2);
  expect(err2).toBe('error: invalid_type: --timeout must be a number, got "abc"\n');
});

test("a bad command line is a usage error (exit 2)", async () => {
  const [code, , err] = await run("chat", "hi", "--no-such-flag");
  expect(code).toBe(2);
  expect(err).toMatch(/^error: usage: /);
  const [code2, , err2] = await run("chat", "hi", "--provider", "hermes", "--agent", "main");
  expect(code2).toBe(2);
  expect(err2).toMatch(/^error: usage: --agent not accepted by --provider hermes/);
});

test("without --base-url chat talks to the embedded server", async () => {
  const [code, out, err] = await run("chat", "hi");
  expect(code).toBe(0);
  expect(out).toBe("Hello from the brainline mock server.\n");
  expect(err).toMatch(/^embedded mock server: http:\/\/127\.0\.0\.1:\d+\/v1\n/);
});

test("startMockServer: scripts, records and control endpoints from TypeScript", async () => {
  await server.setScript({ text: ["Hel", "lo"] });
  await server.reset();
  const llm = new CustomLLM({ baseUrl: server.url, model: "m" });
  const turn = await llm.complete([{ role: "user", content: "hi" }]);
  await llm.close();
  expect(turn.text).toBe("Hello");
  const records = await server.requests();
  expect(records.requests).toHaveLength(1);
  expect(records.connections_total).toBeGreaterThanOrEqual(1);
  await server.setScript(TURN);
});
