// The mock server's script: validation and compilation into byte pieces. The mirror of the script
// half of python/src/brainline/testing/server.py, error message for error message (Python's repr()
// included, via pyRepr) and byte for byte (tests/mockserver/test_drift.py compares the two servers).

export const DEFAULT_MODEL = "mock-model";
export const DEFAULT_TEXT: readonly string[] = [
  "Hello",
  " from the",
  " brainline",
  " mock server.",
];

const RESPONSE_KEYS = new Set([
  "status",
  "headers",
  "sse",
  "text",
  "reasoning",
  "reasoning_field",
  "tool_calls",
  "usage",
  "finish_reason",
  "done",
  "model",
  "id",
  "stream",
  "json",
  "body",
  "transfer",
  "delay_before_headers_ms",
  "delay_ms",
  "stall",
  "drop_after",
  "drop_before_headers",
  "drop_reset",
  "keep_alive",
]);
const CONVENIENCE_KEYS = new Set([
  "text",
  "reasoning",
  "reasoning_field",
  "tool_calls",
  "usage",
  "finish_reason",
  "done",
  "stream",
]);
const SCRIPT_KEYS = new Set(["responses", "routes", "models"]);
const TOOL_CALL_KEYS = new Set(["id", "name", "arguments", "index"]);

/** The script handed to MockServer is not valid. */
export class ScriptError extends Error {
  readonly code = "invalid_script";
  constructor(message: string) {
    super(message);
    this.name = "ScriptError";
  }
}

export type Transfer = "chunked" | "content-length" | "close";

/** One compiled response. Times in seconds, as in Python. */
export interface CompiledResponse {
  readonly status: number;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly pieces: readonly Uint8Array[];
  readonly transfer: Transfer;
  readonly delayBeforeHeaders: number;
  readonly delay: number;
  readonly stall: number | null;
  readonly dropAfter: number | null;
  readonly dropBeforeHeaders: boolean;
  readonly dropReset: boolean;
  readonly keepAlive: boolean;
}

export interface CompiledScript {
  readonly responses: readonly CompiledResponse[];
  /** Longest prefix first. */
  readonly routes: ReadonlyArray<readonly [string, readonly CompiledResponse[]]>;
  readonly models: readonly string[];
  readonly source: unknown;
}

type JSONObject = Record<string, unknown>;

const encoder = new TextEncoder();

function isObject(value: unknown): value is JSONObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function has(obj: JSONObject, key: string): boolean {
  return Object.hasOwn(obj, key);
}

/** Python's `mapping.get(key, fallback)`: a key present with null gives null. */
function get(obj: JSONObject, key: string, fallback: unknown = null): unknown {
  return has(obj, key) ? obj[key] : fallback;
}

/** Python's truth value of a JSON value. */
function truthy(value: unknown): boolean {
  if (Array.isArray(value)) return value.length > 0;
  if (isObject(value)) return Object.keys(value).length > 0;
  return Boolean(value);
}

function isInt(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value);
}

function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let size = 0;
  for (const p of parts) size += p.length;
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Python's `str.isprintable()` is false for these (space aside). */
const NOT_PRINTABLE = /[\p{C}\p{Zl}\p{Zp}\p{Zs}]/u;

function reprString(text: string): string {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of text) {
    const code = ch.codePointAt(0) as number;
    if (ch === quote || ch === "\\") out += `\\${ch}`;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (ch !== " " && NOT_PRINTABLE.test(ch)) {
      if (code < 0x100) out += `\\x${code.toString(16).padStart(2, "0")}`;
      else if (code < 0x10000) out += `\\u${code.toString(16).padStart(4, "0")}`;
      else out += `\\U${code.toString(16).padStart(8, "0")}`;
    } else out += ch;
  }
  return out + quote;
}

function reprNumber(value: number): string {
  if (Number.isInteger(value) && Math.abs(value) < 1e16) return String(value);
  if (!Number.isFinite(value)) return Number.isNaN(value) ? "nan" : value > 0 ? "inf" : "-inf";
  const text = String(value);
  const exp = /e([+-])(\d+)$/.exec(text);
  return exp ? text.replace(/e[+-]\d+$/, `e${exp[1]}${(exp[2] as string).padStart(2, "0")}`) : text;
}

/** Python's `repr()` of a JSON value, for error messages that match the Python server's. */
export function pyRepr(value: unknown): string {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return reprNumber(value);
  if (typeof value === "string") return reprString(value);
  if (Array.isArray(value)) return `[${value.map(pyRepr).join(", ")}]`;
  if (isObject(value)) {
    const items = Object.entries(value).map(([k, v]) => `${reprString(k)}: ${pyRepr(v)}`);
    return `{${items.join(", ")}}`;
  }
  return String(value);
}

/** Python's `str()` of a JSON value. */
function pyStr(value: unknown): string {
  return typeof value === "string" ? value : pyRepr(value);
}

/** `json.dumps(value, ensure_ascii=False, separators=(",", ":"))` */
export function compact(value: unknown): string {
  return JSON.stringify(value) ?? "null";
}

/** `bytes.fromhex`: pairs of hex digits, whitespace allowed between pairs. */
function fromHex(text: string): Uint8Array {
  const out: number[] = [];
  let i = 0;
  const hexDigit = (c: string | undefined) => c !== undefined && /^[0-9a-fA-F]$/.test(c);
  while (i < text.length) {
    if (/^[ \t\n\r\v\f]$/.test(text[i] as string)) {
      i++;
      continue;
    }
    if (!hexDigit(text[i])) {
      throw new Error(`non-hexadecimal number found in fromhex() arg at position ${i}`);
    }
    if (!hexDigit(text[i + 1])) {
      throw new Error(`non-hexadecimal number found in fromhex() arg at position ${i + 1}`);
    }
    out.push(Number.parseInt(text.slice(i, i + 2), 16));
    i += 2;
  }
  return Uint8Array.from(out);
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** `base64.b64decode(text, validate=True)`: binascii's strict mode, message for message. */
function fromBase64(text: string): Uint8Array {
  if ([...text].some((c) => (c.codePointAt(0) as number) > 0x7f)) {
    throw new Error("string argument should contain only ASCII characters");
  }
  if (text.startsWith("=")) throw new Error("Leading padding not allowed");
  let data = "";
  let quadPos = 0;
  let pads = 0;
  let paddingStarted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string;
    if (ch === "=") {
      paddingStarted = true;
      if (quadPos >= 2 && quadPos + ++pads >= 4) {
        if (i + 1 < text.length) throw new Error("Excess data after padding");
        quadPos = 0;
        break;
      }
      continue;
    }
    if (!B64.includes(ch)) throw new Error("Only base64 data is allowed");
    if (paddingStarted) throw new Error("Discontinuous padding not allowed");
    pads = 0;
    data += ch;
    quadPos = (quadPos + 1) % 4;
  }
  if (quadPos === 1) {
    throw new Error(
      `Invalid base64-encoded string: number of data characters (${data.length}) cannot be 1 more than a multiple of 4`,
    );
  }
  if (quadPos !== 0) throw new Error("Incorrect padding");
  return Uint8Array.from(Buffer.from(data, "base64"));
}

/** One piece of a body: a string (UTF-8), bytes, or an object form. */
function pieceBytes(piece: unknown, where: string): Uint8Array {
  if (piece instanceof Uint8Array) return piece;
  if (typeof piece === "string") return encoder.encode(piece);
  if (isObject(piece)) {
    const keys = Object.keys(piece);
    const only = (...names: string[]) =>
      keys.length === names.length && names.every((n) => keys.includes(n));
    if (only("hex")) {
      try {
        return fromHex(pyStr(piece.hex));
      } catch (err) {
        throw new ScriptError(`${where}: bad hex: ${(err as Error).message}`);
      }
    }
    if (only("b64")) {
      try {
        return fromBase64(pyStr(piece.b64));
      } catch (err) {
        throw new ScriptError(`${where}: bad base64: ${(err as Error).message}`);
      }
    }
    if (only("repeat", "count")) {
      // as in Python, a boolean is an integer here (True = 1)
      const count = typeof piece.count === "boolean" ? Number(piece.count) : piece.count;
      if (!isInt(count) || count < 0) {
        throw new ScriptError(`${where}: count must be a non-negative integer`);
      }
      const one = pieceBytes(piece.repeat, where);
      return concatBytes(Array.from({ length: count }, () => one));
    }
    if (keys.includes("data") && keys.every((k) => k === "data" || k === "event" || k === "id")) {
      return sseEvent(piece.data, get(piece, "event"), get(piece, "id"));
    }
    if (only("concat") && Array.isArray(piece.concat)) {
      return concatBytes(piece.concat.map((p) => pieceBytes(p, where)));
    }
  }
  throw new ScriptError(
    `${where}: a piece is a string or one of {hex}, {b64}, {repeat, count}, {data[, event, id]}, {concat}; got ${pyRepr(piece)}`,
  );
}

function sseEvent(data: unknown, event: unknown = null, eventId: unknown = null): Uint8Array {
  const text = typeof data === "string" ? data : compact(data);
  const lines: string[] = [];
  if (event !== null) lines.push(`event: ${pyStr(event)}`);
  if (eventId !== null) lines.push(`id: ${pyStr(eventId)}`);
  for (const line of text.split("\n")) lines.push(`data: ${line}`);
  return encoder.encode(`${lines.join("\n")}\n\n`);
}

type Delta = JSONObject;

/** The tool_calls deltas of each chunk: one chunk per argument piece of each call. */
function toolCallDeltas(calls: unknown, where: string): Delta[][] {
  if (!Array.isArray(calls)) throw new ScriptError(`${where}: tool_calls must be a list`);
  const chunks: Delta[][] = [];
  calls.forEach((call: unknown, position: number) => {
    if (!isObject(call)) throw new ScriptError(`${where}: each tool call is an object`);
    const unknown = Object.keys(call)
      .filter((k) => !TOOL_CALL_KEYS.has(k))
      .sort();
    if (unknown.length > 0) {
      throw new ScriptError(`${where}: unknown tool call keys ${pyRepr(unknown)}`);
    }
    const index = get(call, "index", position);
    const callId = get(call, "id", `call_${position}`);
    const name = get(call, "name");
    const args = get(call, "arguments", "");
    // An explicit null index or name is left out of the deltas (servers that omit them).
    const first: Delta = index === null ? {} : { index };
    first.id = callId;
    first.type = "function";
    const fn: JSONObject = name === null ? {} : { name };
    first.function = fn;
    const more = (): Delta => (index === null ? {} : { index });
    if (typeof args === "string") {
      fn.arguments = args;
      chunks.push([first]);
    } else if (Array.isArray(args) && args.every((a) => typeof a === "string")) {
      fn.arguments = "";
      chunks.push([first]);
      for (const a of args as string[]) chunks.push([{ ...more(), function: { arguments: a } }]);
    } else {
      throw new ScriptError(`${where}: tool call arguments are a string or a list of strings`);
    }
  });
  return chunks;
}

function strings(value: unknown, key: string, where: string): string[] {
  if (value === null || value === undefined) return [];
  if (typeof value === "string") return [value];
  if (Array.isArray(value) && value.every((v) => typeof v === "string")) return [...value];
  throw new ScriptError(`${where}: ${key} must be a string or a list of strings`);
}

/** Turn text / reasoning / tool_calls / usage / finish_reason into SSE pieces or one JSON. */
function convenience(spec: JSONObject, where: string): [Uint8Array[], string] {
  const model = get(spec, "model", DEFAULT_MODEL);
  const chunkId = get(spec, "id", "chatcmpl-mock");
  const text = strings(get(spec, "text"), "text", where);
  const reasoning = strings(get(spec, "reasoning"), "reasoning", where);
  const reasoningField = pyStr(get(spec, "reasoning_field", "reasoning_content"));
  const calls = truthy(spec.tool_calls) ? spec.tool_calls : [];
  const usage = get(spec, "usage");
  const defaultFinish = truthy(calls) ? "tool_calls" : "stop";
  const finish = get(spec, "finish_reason", defaultFinish);
  if (get(spec, "stream", true) === false) {
    const message: JSONObject = {
      role: "assistant",
      content: text.length > 0 ? text.join("") : null,
    };
    if (reasoning.length > 0) message[reasoningField] = reasoning.join("");
    if (truthy(calls)) {
      const merged: JSONObject[] = [];
      for (const deltas of toolCallDeltas(calls, where)) {
        for (const delta of deltas) {
          if ("id" in delta) merged.push(JSON.parse(compact(delta)) as JSONObject);
          else {
            const fn = (merged.at(-1) as JSONObject).function as JSONObject;
            fn.arguments = `${fn.arguments as string}${(delta.function as JSONObject).arguments as string}`;
          }
        }
      }
      message.tool_calls = merged;
    }
    const body: JSONObject = {
      id: chunkId,
      object: "chat.completion",
      created: 0,
      model,
      choices: [{ index: 0, message, finish_reason: finish }],
    };
    if (usage !== null) body.usage = usage;
    return [[encoder.encode(compact(body))], "application/json"];
  }
  const chunk = (delta: Delta, finishReason: unknown = null): Uint8Array =>
    sseEvent({
      id: chunkId,
      object: "chat.completion.chunk",
      created: 0,
      model,
      choices: [{ index: 0, delta, finish_reason: finishReason }],
    });
  const pieces = reasoning.map((r) => chunk({ [reasoningField]: r }));
  for (const t of text) pieces.push(chunk({ content: t }));
  for (const deltas of toolCallDeltas(calls, where)) pieces.push(chunk({ tool_calls: deltas }));
  if (finish !== null) pieces.push(chunk({}, finish));
  if (usage !== null) {
    pieces.push(
      sseEvent({
        id: chunkId,
        object: "chat.completion.chunk",
        created: 0,
        model,
        choices: [],
        usage,
      }),
    );
  }
  if (truthy(get(spec, "done", true))) pieces.push(encoder.encode("data: [DONE]\n\n"));
  return [pieces, "text/event-stream"];
}

function headerList(value: unknown, where: string): [string, string][] {
  if (value === null || value === undefined) return [];
  let items: [unknown, unknown][];
  if (isObject(value)) items = Object.entries(value);
  else if (Array.isArray(value) && value.every((p) => Array.isArray(p) && p.length === 2)) {
    items = value.map((p) => [p[0], p[1]]);
  } else {
    throw new ScriptError(`${where}: headers are an object or a list of [name, value] pairs`);
  }
  const out: [string, string][] = [];
  for (const [name, val] of items) {
    if (typeof name !== "string" || !["string", "number", "boolean"].includes(typeof val)) {
      throw new ScriptError(`${where}: header ${pyRepr(name)} must map a string to a string`);
    }
    const text = pyStr(val);
    if (/[\r\n\0]/.test(name + text)) {
      throw new ScriptError(`${where}: header ${pyRepr(name)} contains CR, LF or NUL`);
    }
    out.push([name, text]);
  }
  return out;
}

function seconds(spec: JSONObject, key: string, where: string): number {
  const value = get(spec, key, 0);
  if (typeof value !== "number" || value < 0) {
    throw new ScriptError(`${where}: ${key} must be a non-negative number of milliseconds`);
  }
  return value / 1000;
}

export function compileResponse(spec: unknown, where: string): CompiledResponse {
  if (!isObject(spec)) throw new ScriptError(`${where}: a response is an object`);
  const unknown = Object.keys(spec)
    .filter((k) => !RESPONSE_KEYS.has(k))
    .sort();
  if (unknown.length > 0) {
    throw new ScriptError(`${where}: unknown response keys ${pyRepr(unknown)}`);
  }
  const forms = ["sse", "json", "body"].filter((k) => has(spec, k));
  if (
    forms.length > 1 ||
    (forms.length > 0 && Object.keys(spec).some((k) => CONVENIENCE_KEYS.has(k)))
  ) {
    throw new ScriptError(`${where}: use one of sse, json, body or the convenience keys`);
  }
  const status = get(spec, "status", 200);
  if (!isInt(status) || status < 100 || status > 999) {
    throw new ScriptError(`${where}: status must be an integer HTTP status`);
  }
  let pieces: Uint8Array[];
  let contentType: string;
  let transfer: unknown;
  if (has(spec, "sse")) {
    const raw = spec.sse;
    if (!Array.isArray(raw)) throw new ScriptError(`${where}: sse is a list of pieces`);
    pieces = raw.map((p, i) => pieceBytes(p, `${where}.sse[${i}]`));
    contentType = "text/event-stream";
    transfer = "chunked";
  } else if (has(spec, "json")) {
    pieces = [encoder.encode(compact(spec.json))];
    contentType = "application/json";
    transfer = "content-length";
  } else if (has(spec, "body")) {
    const raw = spec.body;
    const items = Array.isArray(raw) ? raw : [raw];
    pieces = items.map((p) => pieceBytes(p, `${where}.body`));
    contentType = "text/plain; charset=utf-8";
    transfer = "content-length";
  } else {
    [pieces, contentType] = convenience(spec, where);
    transfer = contentType === "text/event-stream" ? "chunked" : "content-length";
  }
  pieces = pieces.filter((p) => p.length > 0);
  transfer = get(spec, "transfer", transfer);
  if (transfer !== "chunked" && transfer !== "content-length" && transfer !== "close") {
    throw new ScriptError(`${where}: transfer is chunked, content-length or close`);
  }
  const headers = headerList(get(spec, "headers"), where);
  if (!headers.some(([name]) => name.toLowerCase() === "content-type")) {
    headers.unshift(["content-type", contentType]);
    if (contentType === "text/event-stream") headers.splice(1, 0, ["cache-control", "no-cache"]);
  }
  let stall = get(spec, "stall");
  if (stall === true || stall === "headers") stall = 0;
  else if (stall === false) stall = null;
  const dropAfter = get(spec, "drop_after");
  for (const [key, value] of [
    ["stall", stall],
    ["drop_after", dropAfter],
  ] as const) {
    if (value !== null && (!isInt(value) || value < 0 || value > pieces.length)) {
      throw new ScriptError(
        `${where}: ${key} is a piece count between 0 and ${pieces.length} (0 = after headers)`,
      );
    }
  }
  const dropBeforeHeaders = get(spec, "drop_before_headers", false);
  if (typeof dropBeforeHeaders !== "boolean") {
    throw new ScriptError(`${where}: drop_before_headers is true or false`);
  }
  return {
    status,
    headers,
    pieces,
    transfer,
    delayBeforeHeaders: seconds(spec, "delay_before_headers_ms", where),
    delay: seconds(spec, "delay_ms", where),
    stall: stall as number | null,
    dropAfter: dropAfter as number | null,
    dropBeforeHeaders,
    dropReset: truthy(get(spec, "drop_reset", false)),
    keepAlive: truthy(get(spec, "keep_alive", true)),
  };
}

function compileList(value: unknown, where: string): CompiledResponse[] {
  const items = Array.isArray(value) ? value : [value];
  if (items.length === 0) throw new ScriptError(`${where}: at least one response is needed`);
  return items.map((item, i) => compileResponse(item, `${where}[${i}]`));
}

/** Python's len() of a string: code points. */
function pyLen(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

export function sortRoutes<T>(routes: [string, T][]): [string, T][] {
  return routes.sort((a, b) => pyLen(b[0]) - pyLen(a[0]));
}

export function demoUsage(): JSONObject {
  return { prompt_tokens: 12, completion_tokens: 6, total_tokens: 18 };
}

/**
 * Validate a script (docs/testing.md) and turn it into the server's internal form.
 *
 * Accepted shapes: null / undefined (a demo turn), a list of responses, one response object, or
 * an object with `responses` (served in order, the last one repeats), `routes` (path prefix ->
 * responses, the longest matching prefix wins) and `models` (ids listed by `GET .../models`).
 */
export function compileScript(script: unknown): CompiledScript {
  let source = script ?? { responses: [{ text: DEFAULT_TEXT, usage: demoUsage() }] };
  if (Array.isArray(source)) source = { responses: source };
  if (!isObject(source)) throw new ScriptError("a script is an object or a list of responses");
  if (!Object.keys(source).every((k) => SCRIPT_KEYS.has(k))) source = { responses: [source] };
  const obj = source as JSONObject;
  const responses = has(obj, "responses") ? compileList(obj.responses, "responses") : [];
  const routesRaw = truthy(obj.routes) ? obj.routes : {};
  if (!isObject(routesRaw)) throw new ScriptError("routes is an object: path prefix -> responses");
  const routes: [string, CompiledResponse[]][] = [];
  for (const [prefix, value] of Object.entries(routesRaw)) {
    if (!prefix.startsWith("/")) {
      throw new ScriptError(`route ${pyRepr(prefix)} must be a path starting with '/'`);
    }
    routes.push([prefix, compileList(value, `routes[${pyRepr(prefix)}]`)]);
  }
  sortRoutes(routes);
  const models = get(obj, "models", [DEFAULT_MODEL]);
  if (!Array.isArray(models) || !models.every((m) => typeof m === "string")) {
    throw new ScriptError("models is a list of strings");
  }
  return { responses, routes, models: [...models], source };
}

export function notFound(method: string, path: string): CompiledResponse {
  return compileResponse(
    {
      status: 404,
      json: {
        error: {
          message: `brainline mock server: no scripted response for ${method} ${path}`,
          type: "not_found",
        },
      },
    },
    "not_found",
  );
}

export function modelsResponse(models: readonly string[]): CompiledResponse {
  return compileResponse(
    {
      json: {
        object: "list",
        data: models.map((m) => ({ id: m, object: "model", created: 0, owned_by: "brainline" })),
      },
    },
    "models",
  );
}
