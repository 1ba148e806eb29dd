// Secrets and privacy, in TypeScript (tests/reliability/test_secrets.py mirrors it): API keys and
// memory-scope keys never appear in console output, util.inspect output, error messages or anywhere
// in an error's cause chain; the raw caller never reaches the wire; header injection (CR, LF, NUL)
// is refused with a ConfigError before a byte is sent; session keys are limited to
// SESSION_KEY_MAX_LENGTH; base_url is http(s) without credentials and never echoes a password.
import { inspect } from "node:util";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { BrainlineError, ConfigError } from "../../src/core/errors.js";
import { SESSION_KEY_MAX_LENGTH } from "../../src/generated/constants.js";
import { CustomLLM } from "../../src/generated/custom.js";
import { Mock } from "./mock.js";

const API_KEY = "sk-live-SECRETapikey0123456789";
const SESSION_KEY = "memory-SECRETsessionkey-42";
const FACTORY_KEY = "factory-SECRETscope-77";
const CALLER = "+15551234567";
const SECRETS = [API_KEY, SESSION_KEY, FACTORY_KEY, CALLER, CALLER.slice(1)];
const MESSAGES = [{ role: "user", content: "hi" }];
const ECHO = `key ${API_KEY} scope ${SESSION_KEY} scope ${FACTORY_KEY}`;

type Options = ConstructorParameters<typeof CustomLLM>[0];

function llm(url: string, options: Record<string, unknown> = {}): CustomLLM {
  return new CustomLLM({
    baseUrl: url,
    model: "m",
    apiKey: API_KEY,
    sessionIdHeader: "X-Session-Id",
    sessionKeyHeader: "X-Session-Key",
    sessionKey: SESSION_KEY,
    timeout: 2,
    maxRetries: 0,
    ...options,
  } as Options);
}

/** Message, stack, inspect output and fields of every error in the cause chain. */
function errorText(err: unknown): string {
  const parts: string[] = [inspect(err, { depth: 10 })];
  const seen = new Set<unknown>();
  let current: unknown = err;
  while (current !== undefined && current !== null && !seen.has(current)) {
    seen.add(current);
    if (current instanceof Error) {
      parts.push(current.message, String(current.stack), String(current));
      if (current instanceof BrainlineError) parts.push(JSON.stringify({ ...current }));
      current = current.cause;
    } else {
      parts.push(String(current));
      current = undefined;
    }
  }
  return parts.join("\n");
}

function expectClean(text: string, where: string, secrets: string[] = SECRETS): void {
  for (const secret of secrets) {
    expect(text.includes(secret), `${secret} leaked into ${where}`).toBe(false);
  }
}

const FAILURES: Record<string, unknown> = {
  http_status: { status: 401, json: { error: { message: ECHO } } },
  http_status_text: { status: 500, body: ECHO },
  server_error: { sse: [{ data: { error: { message: ECHO } } }] },
  server_error_event: { sse: [{ event: "error", data: { message: ECHO } }] },
  // The key first: a JSON parser's own message may quote the start of the data.
  malformed: { sse: [`data: ${API_KEY} not json ${ECHO}\n\n`] },
  interrupted: { text: ["a", "b"], drop_after: 1 },
  json_error: { json: { error: { message: ECHO } } },
};

let server: Mock;
let consoleText: string[] = [];

beforeAll(async () => {
  server = await Mock.start({ text: ["x"] });
});
afterAll(async () => {
  await server.close();
});
beforeEach(async () => {
  consoleText = [];
  for (const method of ["log", "debug", "info", "warn", "error", "trace"] as const) {
    vi.spyOn(console, method).mockImplementation((...args: unknown[]) => {
      consoleText.push(args.map((a) => inspect(a)).join(" "));
    });
  }
  await server.reset();
});
afterEach(() => {
  vi.restoreAllMocks();
});

async function drain(client: CustomLLM, options: Record<string, unknown> = {}): Promise<unknown> {
  try {
    for await (const _ of client.stream(MESSAGES, undefined, options)) {
    }
  } catch (err) {
    return err;
  }
  return undefined;
}

describe("secrets stay out of errors and logs", () => {
  for (const kind of Object.keys(FAILURES)) {
    for (const factory of [false, true]) {
      it(`${kind}${factory ? " (factory key)" : ""}`, async () => {
        await server.setScript([FAILURES[kind]]);
        const secrets = SECRETS.filter((s) => factory || s !== FACTORY_KEY);
        const client = llm(server.url, factory ? { sessionKeyFactory: () => FACTORY_KEY } : {});
        const err = await drain(client, { callId: "c1", caller: CALLER });
        await client.close();
        expect(err).toBeInstanceOf(BrainlineError);
        expectClean(errorText(err), `the ${kind} error chain`, secrets);
        expectClean(consoleText.join("\n"), "the console", secrets);
      });
    }
  }

  it("connection refused and a failed warmup are clean", async () => {
    const client = llm("http://127.0.0.1:9/v1");
    const err = await drain(client, { callId: "c1", caller: CALLER });
    await client.warmup();
    await client.close();
    expect((err as BrainlineError).code).toBe("connection_error");
    expectClean(errorText(err), "the connection_error chain");
    expectClean(consoleText.join("\n"), "the console");
  });

  it("a turn and a barge-in put the caller's hash on the wire, never the number", async () => {
    await server.setScript([{ text: ["Hel", "lo"] }, { text: ["a"], stall: 1 }]);
    const client = llm(server.url, { sessionKey: undefined, sessionKeyFrom: "caller_hash" });
    expect(await drain(client, { callId: "c1", caller: CALLER })).toBeUndefined();
    const barge = new AbortController();
    for await (const _ of client.stream(MESSAGES, undefined, {
      signal: barge.signal,
      callId: "c2",
      caller: CALLER,
    })) {
      barge.abort();
    }
    await client.warmup();
    await client.close();
    expectClean(consoleText.join("\n"), "the console");
    const { requests } = await server.records();
    expect(requests.length).toBeGreaterThanOrEqual(2);
    for (const request of requests) {
      const wire = request.headers.map(([k, v]) => `${k}: ${v}`).join("\n") + request.path;
      expect(wire + request.body).not.toContain(CALLER.slice(1));
    }
    const key = requests[0]?.headers.find(([k]) => k === "x-session-key")?.[1];
    expect(key).toMatch(/^patter-caller-[0-9a-f]+$/);
  });

  it("util.inspect of the instance and its config never shows a key", () => {
    const client = llm("http://127.0.0.1:9/v1");
    for (const text of [
      inspect(client, { depth: 10, showHidden: true }),
      inspect(client.config, { depth: 10 }),
      String(client),
      String(client.config),
    ]) {
      expectClean(text, "inspect output");
    }
  });
});

describe("header injection", () => {
  const BAD = ["a\rb", "a\nb", "a\u0000b", "a\r\nX-Evil: 1"];
  const OPTIONS = [
    "apiKey",
    "sessionKey",
    "sessionIdPrefix",
    "sessionUserPrefix",
    "userAgent",
    "extraHeaders",
  ];
  for (const option of OPTIONS) {
    it(`refuses CR, LF and NUL in ${option}`, () => {
      for (const bad of BAD) {
        const value = option === "extraHeaders" ? { "X-Extra": bad } : bad;
        let err: unknown;
        try {
          llm("http://127.0.0.1:9/v1", { [option]: value });
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(ConfigError);
        expect((err as ConfigError).code).toBe("invalid_header_value");
        expect((err as ConfigError).message).not.toContain(bad);
      }
    });
  }

  it("refuses bad header names", () => {
    for (const name of ["X-A\r\nB", "X A", "X:A", "", "X\u0000"]) {
      for (const options of [{ extraHeaders: { [name]: "v" } }, { sessionIdHeader: name }]) {
        expect(() => llm("http://127.0.0.1:9/v1", options)).toThrow(ConfigError);
      }
    }
  });

  it("refuses CR, LF and NUL in the call id and the factory's key before a byte is sent", async () => {
    for (const bad of BAD) {
      const cases: [Record<string, unknown>, Record<string, unknown>][] = [
        [{}, { callId: bad }],
        [{ sessionKeyFactory: () => bad }, { callId: "c1" }],
        [{ sessionKeyFactory: (ctx: { callId?: string }) => ctx.callId }, { callId: bad }],
      ];
      for (const [options, call] of cases) {
        const client = llm(server.url, options);
        const err = await drain(client, call);
        await client.close();
        expect(err).toBeInstanceOf(ConfigError);
        expect((err as ConfigError).code).toBe("invalid_header_value");
        expect((err as ConfigError).message).not.toContain(bad);
      }
    }
    const records = await server.records();
    expect(records.requests).toEqual([]);
  });
});

describe("session-key length", () => {
  it("limits the static key", () => {
    llm("http://127.0.0.1:9/v1", { sessionKey: "k".repeat(SESSION_KEY_MAX_LENGTH) });
    let err: unknown;
    try {
      llm("http://127.0.0.1:9/v1", { sessionKey: "k".repeat(SESSION_KEY_MAX_LENGTH + 1) });
    } catch (e) {
      err = e;
    }
    expect((err as ConfigError).code).toBe("too_long");
    expect((err as ConfigError).message).not.toContain("k".repeat(20));
  });

  it("limits the factory's key before a byte is sent", async () => {
    const ok = llm(server.url, { sessionKeyFactory: () => "k".repeat(SESSION_KEY_MAX_LENGTH) });
    expect(await drain(ok)).toBeUndefined();
    await ok.close();
    const long = llm(server.url, {
      sessionKeyFactory: () => "k".repeat(SESSION_KEY_MAX_LENGTH + 1),
    });
    const err = await drain(long);
    await long.close();
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).code).toBe("too_long");
    expect((err as ConfigError).message).not.toContain("k".repeat(20));
    expect((await server.records()).requests.length).toBe(1);
  });
});

describe("base_url", () => {
  it("must be http or https", () => {
    for (const url of [
      "ftp://127.0.0.1/v1",
      "127.0.0.1:8000/v1",
      "file:///etc/passwd",
      "javascript:alert(1)",
      "http://",
      "http:///v1",
      "ws://127.0.0.1/v1",
    ]) {
      let err: unknown;
      try {
        llm(url);
      } catch (e) {
        err = e;
      }
      expect((err as ConfigError).code, url).toBe("invalid_base_url");
    }
  });

  it("refuses credentials without echoing them", () => {
    for (const url of [
      "http://user:hunter2pass@127.0.0.1/v1",
      "https://hunter2pass@127.0.0.1/v1",
      "HTTP://user:hunter2pass@127.0.0.1:8000/v1?x=1",
      "ftp://user:hunter2pass@127.0.0.1/v1",
      "user:hunter2pass@127.0.0.1:8000/v1",
    ]) {
      let err: unknown;
      try {
        llm(url);
      } catch (e) {
        err = e;
      }
      expect((err as ConfigError).code, url).toBe("base_url_credentials");
      expect(errorText(err)).not.toContain("hunter2pass");
      expect((err as ConfigError).message).toContain("API key");
    }
  });

  it("takes an @ in the path for what it is", () => {
    expect(llm("http://127.0.0.1:8000/v1/@team").config.baseUrl).toMatch(/\/@team$/);
  });
});
