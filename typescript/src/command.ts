// The `brainline` command's logic (src/cli.ts is the executable): `brainline chat PROMPT [flags]` and
// `brainline mock-server`. The same program as python/src/brainline/cli.py, flag for flag and byte
// for byte on stdout with --json. The option flags come from the spec (generated/cli_options.ts).
// Exit codes: 0 on success, 1 for an API or stream error, 2 for a configuration or usage error,
// 130 when interrupted.

import { parseArgs } from "node:util";
import type { BaseLLM } from "./core/client.js";
import { BrainlineError, ConfigError } from "./core/errors.js";
import { assembleToolCalls, type Event } from "./core/events.js";
import type { TurnMetrics } from "./core/metrics.js";
import { OPTIONS, PROVIDERS } from "./generated/cli_options.js";
import { VERSION } from "./generated/constants.js";
import { ERRORS } from "./generated/errors.js";
import * as api from "./generated/index.js";
import { type MockServerHandle, MockServerUnavailableError, startMockServer } from "./testing.js";
import { main as serveMock } from "./testing/main.js";

const DEFAULT_PROVIDER = "custom";
const EMBEDDED_MODEL = "mock-model";
export const EXIT_API = 1;
export const EXIT_CONFIG = 2;
const EXIT_INTERRUPTED = 130;
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const INTEGER = /^[+-]?\d+$/;
const PLACEHOLDER = /\{[a-z_]+\}/;
const JSON_TYPES = new Set(["headers", "string_map", "json_object"]);

/** Raised for a bad command line: exit code 2, `error: usage: <message>`. */
class UsageError extends Error {}

/**
 * A flag's text as the option's type. Text that does not parse is passed on unchanged, so the
 * provider's constructor rejects it with the same typed error (and code) as in Python.
 */
export function parseFlag(kind: string, text: string): unknown {
  if (kind === "number" && NUMBER.test(text)) return Number(text);
  if (kind === "integer" && INTEGER.test(text)) return Number.parseInt(text, 10);
  if (kind === "boolean" && (text === "true" || text === "false")) return text === "true";
  if (JSON_TYPES.has(kind) || (kind === "tool_choice" && text.trimStart().startsWith("{"))) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

const USAGE = `usage: brainline chat PROMPT [--provider KEY] [--call-id ID] [--caller NUMBER] [--json] [option flags]
       brainline mock-server [--port P] [--script FILE] [--ignore-stdin]
       brainline --version

Without --base-url, chat talks to the embedded mock server (in-process, on 127.0.0.1).
Providers: ${Object.keys(PROVIDERS).sort().join(", ")}
Option flags (from the spec):
${OPTIONS.map((o) => `  ${o.flag}${o.type === "string_or_string_list" ? " (repeatable)" : ""}\n      ${o.doc}`).join("\n")}
`;

interface ChatArgs {
  prompt: string;
  provider: string;
  callId: string | undefined;
  caller: string | undefined;
  json: boolean;
  options: Record<string, unknown>;
}

function parseChat(argv: string[]): ChatArgs {
  const spec: Record<string, { type: "string" | "boolean"; multiple?: boolean }> = {
    provider: { type: "string" },
    "call-id": { type: "string" },
    caller: { type: "string" },
    json: { type: "boolean" },
  };
  for (const o of OPTIONS) {
    spec[o.flag.slice(2)] = { type: "string", multiple: o.type === "string_or_string_list" };
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options: spec, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const values = parsed.values as Record<string, string | string[] | boolean | undefined>;
  if (parsed.positionals.length !== 1) {
    throw new UsageError("chat takes exactly one PROMPT argument");
  }
  const provider = (values.provider as string | undefined) ?? DEFAULT_PROVIDER;
  const preset = PROVIDERS[provider];
  if (preset === undefined) {
    throw new UsageError(`unknown --provider ${JSON.stringify(provider)}`);
  }
  const options: Record<string, unknown> = {};
  const refused: string[] = [];
  for (const o of OPTIONS) {
    const value = values[o.flag.slice(2)];
    if (value === undefined) continue;
    if (preset.refused.includes(o.name)) refused.push(o.flag);
    if (Array.isArray(value)) options[o.name] = value.length === 1 ? value[0] : value;
    else options[o.name] = parseFlag(o.type, value as string);
  }
  if (refused.length > 0) {
    throw new UsageError(`${refused.sort().join(", ")} not accepted by --provider ${provider}`);
  }
  return {
    prompt: parsed.positionals[0] as string,
    provider,
    callId: values["call-id"] as string | undefined,
    caller: values.caller as string | undefined,
    json: values.json === true,
    options,
  };
}

/**
 * The error's message; in a ConfigError's, the leading option name (`max_retries` / `maxRetries` in
 * the library) becomes the flag the user typed and the null word "unset", so both CLIs print the
 * same words.
 */
export function flagMessage(err: BrainlineError): string {
  let message = err.message;
  if (!(err instanceof ConfigError)) return message;
  const template = (ERRORS as Record<string, readonly [string, string]>)[err.code]?.[1] ?? "";
  if (template.includes("{null}")) {
    // the library's null word (None / undefined) is "unset" on a command line
    const [head = "", tail = ""] = template.split("{null}", 2);
    const before = head.split(PLACEHOLDER).at(-1) ?? "";
    const after = tail.split(PLACEHOLDER)[0] ?? "";
    message = message.replace(`${before}undefined${after}`, `${before}unset${after}`);
  }
  for (const o of OPTIONS) {
    if (message.startsWith(`${o.name} `)) return o.flag + message.slice(o.name.length);
  }
  return message;
}

/** `timing: first token 120 ms, 480 ms in all, 14 chunks, request id r1` (stderr). */
function timingLine(m: TurnMetrics): string {
  const ms = (value: number | null): string =>
    value === null ? "none" : `${Math.round(value)} ms`;
  let line = `timing: first token ${ms(m.first_progress_ms)}, ${ms(m.duration_ms)} in all`;
  line += `, ${m.chunks} chunks`;
  return line + (m.request_id ? `, request id ${m.request_id}` : "");
}

/** Writes events as they arrive: text to stdout, the rest to stderr (or all as JSON lines). */
class Printer {
  readonly events: Event[] = [];
  private wroteText = false;

  constructor(private readonly asJson: boolean) {}

  event(ev: Event): void {
    this.events.push(ev);
    if (this.asJson) {
      // The finish event's metrics are times: the JSON lines stay the same bytes in both
      // languages without them.
      const line = ev.type === "finish" ? { type: ev.type, reason: ev.reason } : ev;
      process.stdout.write(`${JSON.stringify(line)}\n`);
    } else if (ev.type === "text") {
      process.stdout.write(ev.content);
      this.wroteText = true;
    } else if (ev.type === "usage") {
      this.endText();
      process.stderr.write(
        `usage: ${ev.input_tokens} in (+${ev.cache_read_tokens} cached), ${ev.output_tokens} out\n`,
      );
    } else if (ev.type === "finish") {
      this.endText();
      for (const call of assembleToolCalls(this.events)) {
        process.stderr.write(`tool call: ${call.name}(${call.arguments}) id=${call.id}\n`);
      }
      if (ev.metrics !== undefined) process.stderr.write(`${timingLine(ev.metrics)}\n`);
      process.stderr.write(`finish: ${ev.reason}\n`);
    }
  }

  error(err: BrainlineError): void {
    this.endText();
    const message = flagMessage(err);
    if (this.asJson) {
      const line = { type: "error", code: err.code, message };
      process.stdout.write(`${JSON.stringify(line)}\n`);
    }
    process.stderr.write(`error: ${err.code}: ${message}\n`);
  }

  private endText(): void {
    if (this.wroteText) {
      process.stdout.write("\n");
      this.wroteText = false;
    }
  }
}

type Constructor = new (options: Record<string, unknown>) => BaseLLM;

/** One streamed turn; with no --base-url, against the embedded mock server. */
async function chat(args: ChatArgs): Promise<number> {
  const printer = new Printer(args.json);
  const options = { ...args.options };
  const preset = PROVIDERS[args.provider];
  if (preset === undefined) throw new UsageError(`unknown --provider ${args.provider}`);
  let server: MockServerHandle | undefined;
  if (options.baseUrl === undefined) {
    try {
      server = await startMockServer();
    } catch (err) {
      if (!(err instanceof MockServerUnavailableError)) throw err;
      process.stderr.write(`error: ${err.code}: ${err.message}; or pass --base-url\n`);
      return EXIT_CONFIG;
    }
    options.baseUrl = server.url;
    process.stderr.write(`embedded mock server: ${server.url}\n`);
    if (
      !preset.refused.includes("model") &&
      !("model" in preset.defaults) &&
      !("model" in options)
    ) {
      options.model = EMBEDDED_MODEL;
    }
  }
  const barge = new AbortController();
  let interrupted = false;
  const onSigint = () => {
    interrupted = true;
    barge.abort();
  };
  process.once("SIGINT", onSigint);
  const cls = (api as unknown as Record<string, Constructor>)[preset.className] as Constructor;
  try {
    const llm = new cls(options);
    try {
      const messages = [{ role: "user", content: args.prompt }];
      const stream = llm.stream(messages, undefined, {
        signal: barge.signal,
        callId: args.callId,
        caller: args.caller,
      });
      for await (const ev of stream) printer.event(ev);
    } finally {
      await llm.close();
    }
  } catch (err) {
    if (!(err instanceof BrainlineError)) throw err;
    printer.error(err);
    return err instanceof ConfigError ? EXIT_CONFIG : EXIT_API;
  } finally {
    process.removeListener("SIGINT", onSigint);
    await server?.close();
  }
  return interrupted ? EXIT_INTERRUPTED : 0;
}

/** `brainline mock-server`: run the mock server in the foreground. */
function mockServer(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        port: { type: "string" },
        script: { type: "string" },
        "ignore-stdin": { type: "boolean" },
      },
      strict: true,
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const v = parsed.values as Record<string, string | boolean | undefined>;
  const port = v.port === undefined ? 0 : Number(v.port);
  if (typeof v.port === "string" && !/^\d+$/.test(v.port)) {
    throw new UsageError(`--port must be an integer, got ${JSON.stringify(v.port)}`);
  }
  return serveMock({
    port,
    script: v.script as string | undefined,
    ignoreStdin: v["ignore-stdin"] === true,
  });
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (rest.includes("--help") || rest.includes("-h")) {
      process.stdout.write(USAGE);
      return 0;
    }
    if (command === "chat") return await chat(parseChat(rest));
    if (command === "mock-server") return await mockServer(rest);
    if (command === "--version") {
      process.stdout.write(`brainline ${VERSION}\n`);
      return 0;
    }
    if (command === "--help" || command === "-h") {
      process.stdout.write(USAGE);
      return 0;
    }
    throw new UsageError(command === undefined ? "missing command" : `unknown command ${command}`);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`error: usage: ${err.message}\n(brainline --help lists the flags)\n`);
    return EXIT_CONFIG;
  }
}
