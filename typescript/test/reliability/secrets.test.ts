// Secrets and privacy, in TypeScript (tests/reliability/test_secrets.py mirrors it): API keys and
// memory-scope keys never appear in console output, util.inspect output, error messages or anywhere
// in an error's cause chain; no public object (every provider class, its config, a turn, its events,
// a session context, every error and its causes) shows one under JSON.stringify, String, template
// literals, util.inspect, util.format, pino or winston; the raw caller is reachable from no client
// and no error and never reaches the wire; header injection (CR, LF, NUL) is refused with a
// ConfigError before a byte is sent; session keys are limited to SESSION_KEY_MAX_LENGTH; base_url
// is http(s) without credentials and never echoes a password.
import { Writable } from "node:stream";
import { format, inspect } from "node:util";
import pino from "pino";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import winston from "winston";
import type { BaseLLM } from "../../src/core/client.js";
import { BrainlineError, ConfigError } from "../../src/core/errors.js";
import type { SessionContext } from "../../src/core/session.js";
import { PROVIDERS } from "../../src/generated/cli_options.js";
import { SESSION_KEY_MAX_LENGTH } from "../../src/generated/constants.js";
import { CustomLLM } from "../../src/generated/custom.js";
import * as generated from "../../src/generated/index.js";
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

/** What pino writes for `value` logged as the merge object, under a key, as `err` and with %o. */
function pinoText(value: unknown): string {
  const lines: string[] = [];
  const logger = pino({ level: "trace" }, { write: (line: string) => lines.push(line) });
  if (value instanceof Error) logger.error(value);
  else if (typeof value === "object" && value !== null) logger.info(value);
  logger.info({ value }, "value");
  logger.info({ err: value }, "err");
  logger.info("%o %s %j", value as object, value, value as object);
  return lines.join("");
}

/** What winston's json format (with format.errors) writes for `value`, as the message and as meta. */
async function winstonText(value: unknown): Promise<string> {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      lines.push(String(chunk));
      done();
    },
  });
  const { combine, errors, json } = winston.format;
  const logger = winston.createLogger({
    level: "silly",
    format: combine(errors({ stack: true }), json()),
    transports: [new winston.transports.Stream({ stream })],
  });
  if (value instanceof Error) logger.error(value);
  else if (typeof value === "object" && value !== null) logger.info(value as object);
  logger.info("value", { value });
  logger.log("info", "%s", value);
  await new Promise((resolve) => setImmediate(resolve));
  logger.close();
  return lines.join("");
}

/** `value` under every serializer a log line may go through. */
async function serialized(value: unknown): Promise<Record<string, string>> {
  return {
    "JSON.stringify": JSON.stringify(value) ?? "",
    String: String(value),
    "a template literal": `${value}`,
    "util.inspect": inspect(value, { depth: 10 }),
    "util.inspect (showHidden)": inspect(value, { depth: 10, showHidden: true }),
    "util.format": format("%s %o %O %j", value, value, value, value),
    pino: pinoText(value),
    winston: await winstonText(value),
  };
}

async function expectSerializersClean(
  value: unknown,
  where: string,
  secrets: string[] = SECRETS,
): Promise<void> {
  for (const [serializer, text] of Object.entries(await serialized(value))) {
    expectClean(text, `${serializer} of ${where}`, secrets);
  }
}

/**
 * Every string (and byte array, as Latin-1) reachable from `root` through own properties, hidden
 * ones and symbols included, and Map / Set entries; not through getters, functions or modules.
 */
function reachableStrings(root: unknown): string[] {
  const found: string[] = [];
  const seen = new Set<unknown>();
  const todo: unknown[] = [root];
  while (todo.length > 0) {
    const value = todo.pop();
    if (typeof value === "string") {
      found.push(value);
      continue;
    }
    if (typeof value !== "object" || value === null || seen.has(value)) continue;
    seen.add(value);
    if ((value as { [Symbol.toStringTag]?: unknown })[Symbol.toStringTag] === "Module") continue;
    if (ArrayBuffer.isView(value)) {
      found.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("latin1"));
      continue;
    }
    if (value instanceof Map) for (const [k, v] of value) todo.push(k, v);
    if (value instanceof Set) for (const v of value) todo.push(v);
    for (const key of Reflect.ownKeys(value)) {
      const descriptor = Object.getOwnPropertyDescriptor(value, key);
      if (descriptor !== undefined && "value" in descriptor) todo.push(descriptor.value);
    }
  }
  return found;
}

function expectCallerUnreachable(root: unknown, where: string): void {
  for (const text of reachableStrings(root)) {
    expect(text.includes(CALLER.slice(1)), `the raw caller is reachable from ${where}`).toBe(false);
  }
}

/** The error and every cause under it. */
function causes(err: unknown): unknown[] {
  const chain: unknown[] = [];
  let current: unknown = err;
  while (current !== undefined && current !== null && !chain.includes(current)) {
    chain.push(current);
    current = current instanceof Error ? current.cause : undefined;
  }
  return chain;
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
  // Errors with a cause from the transport.
  read_timeout: { text: ["a"], stall: "headers" },
  connection_reset: { drop_before_headers: true, drop_reset: true },
};
const KIND_OPTIONS: Record<string, Record<string, unknown>> = { read_timeout: { timeout: 0.3 } };

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
        const client = llm(server.url, {
          ...(factory ? { sessionKeyFactory: () => FACTORY_KEY } : {}),
          ...KIND_OPTIONS[kind],
        });
        const err = await drain(client, { callId: "c1", caller: CALLER });
        await client.close();
        expect(err).toBeInstanceOf(BrainlineError);
        expectClean(errorText(err), `the ${kind} error chain`, secrets);
        expectClean(consoleText.join("\n"), "the console", secrets);
        for (const link of causes(err)) {
          const name = link instanceof Error ? link.name : typeof link;
          await expectSerializersClean(link, `${name} in the ${kind} chain`, secrets);
        }
        expectCallerUnreachable(err, `the ${kind} error`);
        expectCallerUnreachable(client, "the client");
        // JSON shows what a log needs: the class, code, message and fields, scrubbed.
        const shown = JSON.parse(JSON.stringify(err));
        const error = err as BrainlineError;
        expect(shown).toMatchObject({ name: error.name, code: error.code, message: error.message });
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

/** Every generated provider class with a key and a memory-scope key (static or a factory's). */
function providers(url: string, factory?: (ctx: SessionContext) => string): BaseLLM[] {
  const classes = generated as unknown as Record<string, new (options: object) => BaseLLM>;
  return Object.entries(PROVIDERS)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([key, provider]) => {
      const options: Record<string, unknown> = {
        baseUrl: url,
        model: "m",
        agent: "main",
        apiKey: API_KEY,
        sessionKeyHeader: "X-Session-Key",
        timeout: 2,
        maxRetries: 0,
        ...(factory === undefined ? { sessionKey: SESSION_KEY } : { sessionKeyFactory: factory }),
      };
      for (const name of provider.refused) delete options[name];
      const Provider = classes[provider.className] as new (options: object) => BaseLLM;
      const client = new Provider(options);
      expect(client.providerKey).toBe(key);
      return client;
    });
}

describe("no public object shows a secret under any serializer", () => {
  for (const factory of [false, true]) {
    it(`every provider, its config, a turn and its events${factory ? ", the context" : ""}`, async () => {
      const contexts: SessionContext[] = [];
      const keep = (ctx: SessionContext): string => {
        contexts.push(ctx);
        return FACTORY_KEY;
      };
      await server.setScript({ text: ["x"] });
      const clients = providers(server.url, factory ? keep : undefined);
      for (const client of clients) {
        const name = client.constructor.name;
        const events = [];
        for await (const event of client.stream(MESSAGES, undefined, {
          callId: "c1",
          caller: CALLER,
        })) {
          events.push(event);
        }
        const turn = await client.complete(MESSAGES, undefined, { callId: "c2", caller: CALLER });
        await client.warmup();
        expect(turn.text).toBe("x");
        await expectSerializersClean(client, name);
        await expectSerializersClean(client.config, `${name}.config`);
        await expectSerializersClean(turn, "a Turn");
        await expectSerializersClean(events, "the events");
        expectCallerUnreachable(client, name);
        await client.close();
      }
      expect(contexts.length).toBe(factory ? 2 * clients.length : 0);
      for (const ctx of contexts) {
        expect(ctx.caller).toBe(CALLER); // the factory gets the number; no serializer shows it
        await expectSerializersClean(ctx, "a SessionContext");
        expectClean(JSON.stringify({ ...ctx }), "a spread SessionContext");
        expectClean(JSON.stringify(structuredClone(ctx)), "a cloned SessionContext");
      }
    });
  }

  it("an instance shows its provider, model, base URL and a masked config", () => {
    const client = llm("http://127.0.0.1:9/v1");
    const shown = JSON.parse(JSON.stringify(client));
    expect(shown).toMatchObject({
      provider: "custom",
      model: "m",
      baseUrl: "http://127.0.0.1:9/v1",
      config: { apiKey: "***", sessionKey: "***", model: "m" },
    });
    expect(JSON.parse(JSON.stringify(client.config))).toEqual(shown.config);
    // util.inspect: the same view under the class name; the config with its secrets masked.
    expect(inspect(client)).toMatch(/^CustomLLM \{\n? *provider: 'custom',/);
    expect(inspect(client.config)).toContain("apiKey: '***'");
    // The config itself still holds the keys: what is masked is what serializers show.
    expect(client.config.apiKey).toBe(API_KEY);
  });
});

describe("a secret of another type", () => {
  for (const option of ["apiKey", "sessionKey"]) {
    it(`refuses ${option} of another type without echoing it`, () => {
      const secret = option === "apiKey" ? API_KEY : SESSION_KEY;
      // A key read as a Buffer (readFileSync without an encoding) is refused, never quoted.
      for (const value of [Buffer.from(secret), [secret], { key: secret }, 4242424242]) {
        let err: unknown;
        try {
          llm("http://127.0.0.1:9/v1", { [option]: value });
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(ConfigError);
        expect((err as ConfigError).code).toBe("invalid_secret_type");
        expect((err as ConfigError).message).toMatch(
          new RegExp(`^${option} must be a string \\(the value is not shown`),
        );
        expectClean(errorText(err), "the error", [secret, "4242424242"]);
      }
    });
  }

  it("refuses a factory's key or a caller of another type without echoing it", async () => {
    const cases: [Record<string, unknown>, Record<string, unknown>, string][] = [
      [{ sessionKeyFactory: () => Buffer.from(FACTORY_KEY) }, {}, "sessionKeyFactory"],
      [
        { sessionKeyFactory: (ctx: SessionContext) => [ctx.caller] },
        { caller: CALLER },
        "sessionKeyFactory",
      ],
      [{}, { caller: Number(CALLER.slice(1)) }, "caller"],
    ];
    for (const [options, call, option] of cases) {
      const client = llm(server.url, options);
      const err = await drain(client, { callId: "c1", ...call });
      await client.close();
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).code).toBe("invalid_secret_type");
      expect((err as ConfigError).message).toMatch(
        new RegExp(`^${option} must be a string \\(the value is not shown`),
      );
      expectClean(errorText(err), `the ${option} error`);
    }
    expect((await server.records()).requests).toEqual([]);
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
