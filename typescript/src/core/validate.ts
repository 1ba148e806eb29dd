// Option checks the generated constructors call, one per spec rule; python/src/brainline/_core/validate.py
// mirrors them. Every check ignores a missing value (undefined or null): `requireOption` refuses one.

import { formatValue, makeError } from "./errors.js";

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/; // RFC 9110 token
const FORBIDDEN_IN_HEADER = /[\r\n\0]/;
const PATTERNS = new Map<string, RegExp>();

type Check = (value: unknown) => boolean;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

const TYPE_CHECKS: Record<string, Check> = {
  string: (v) => typeof v === "string",
  number: (v) => typeof v === "number",
  integer: (v) => typeof v === "number" && Number.isInteger(v),
  boolean: (v) => typeof v === "boolean",
  string_or_string_list: (v) =>
    typeof v === "string" || (Array.isArray(v) && v.every((s) => typeof s === "string")),
  headers: (v) => isPlainObject(v) && Object.values(v).every((s) => typeof s === "string"),
  string_map: (v) => isPlainObject(v) && Object.values(v).every((s) => typeof s === "string"),
  json_object: (v) => isPlainObject(v),
  tool_choice: (v) => typeof v === "string" || isPlainObject(v),
  session_key_factory: (v) => typeof v === "function",
  metrics_callback: (v) => typeof v === "function",
  fetch_function: (v) => typeof v === "function",
  logger: (v) =>
    isPlainObject(v) &&
    typeof v.debug === "function" &&
    typeof v.info === "function" &&
    typeof v.warn === "function",
};

/**
 * An environment variable, or undefined: where there is no `process` (browsers, Workers) or
 * reading it is refused (Deno without --allow-env throws NotCapable), it is unset.
 */
export function readEnv(name: string): string | undefined {
  try {
    const proc = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
    return proc?.env?.[name];
  } catch {
    return undefined;
  }
}

const env = readEnv;

/** The options argument must be an object. */
export function checkOptions(options: unknown): void {
  if (!isPlainObject(options)) {
    throw makeError("invalid_type", { option: "options", expected: "an object", value: options });
  }
}

/**
 * Every key of `options` must be one of `known`, the option names of `className`: JavaScript has no
 * compiler to catch `apikey` for `apiKey`, and an ignored key would go unnoticed (a keyless client).
 * A key whose value is undefined is refused too. Python refuses an unknown keyword with its own
 * TypeError, so this check has no Python twin (docs/runtime.md).
 */
export function checkKnownOptions(
  options: object,
  known: ReadonlySet<string>,
  className: string,
): void {
  for (const name of Object.keys(options)) {
    if (known.has(name)) continue;
    const meant = closestName(name, known);
    const detail = meant === undefined ? "" : `; did you mean ${formatValue(meant)}?`;
    throw makeError("unknown_option", { class_name: className, value: name, detail });
  }
}

/**
 * The name in `known` that `name` was probably meant to be: the same letters ignoring case, `_` and
 * `-` (`base_url` -> `baseUrl`), else the closest by edit distance when that is at most 2 and at most
 * a third of the name's length (`timout` -> `timeout`); the first in `known`'s order on a tie.
 */
export function closestName(name: string, known: Iterable<string>): string | undefined {
  const wanted = loose(name);
  let best: string | undefined;
  let bestDistance = Math.min(2, Math.floor(wanted.length / 3)) + 1;
  for (const candidate of known) {
    const distance = editDistance(wanted, loose(candidate));
    if (distance === 0) return candidate;
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

function loose(name: string): string {
  return name.toLowerCase().replace(/[_-]/g, "");
}

/** Damerau-Levenshtein distance, optimal string alignment: edits and adjacent swaps count 1. */
function editDistance(a: string, b: string): number {
  let before: number[] = [];
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(
        (previous[j] ?? 0) + 1,
        (row[j - 1] ?? 0) + 1,
        (previous[j - 1] ?? 0) + cost,
      );
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d = Math.min(d, (before[j - 2] ?? 0) + 1);
      }
      row.push(d);
    }
    before = previous;
    previous = row;
  }
  return previous[b.length] ?? 0;
}

/** The argument when given, else the env var when set and non-empty, else the default. */
export function fromEnv<T>(value: T | undefined | null, name: string, fallback: T): T {
  if (value !== undefined && value !== null) return value;
  const fromEnvironment = env(name);
  if (fromEnvironment) return fromEnvironment as T;
  return fallback;
}

/** An explicit non-empty key wins; else the first non-empty env var named by apiKeyEnv; else undefined (keyless). */
export function resolveApiKey(
  apiKey: string | undefined,
  apiKeyEnv: string | readonly string[] | undefined,
): string | undefined {
  if (apiKey) return apiKey;
  const names = typeof apiKeyEnv === "string" ? [apiKeyEnv] : (apiKeyEnv ?? []);
  for (const name of names) {
    const value = env(name);
    if (value) return value;
  }
  return undefined;
}

export function requireOption<T>(option: string, value: T): asserts value is NonNullable<T> {
  if (value === undefined || value === null) throw makeError("missing_option", { option });
}

export function checkType(
  option: string,
  value: unknown,
  typeName: string,
  expected: string,
): void {
  if (value === undefined || value === null) return;
  const check = TYPE_CHECKS[typeName];
  if (check === undefined || !check(value)) {
    throw makeError("invalid_type", { option, expected, value });
  }
}

/** checkType for a secret option: the message never shows the value (a Buffer of a key...). */
export function checkSecretType(
  option: string,
  value: unknown,
  typeName: string,
  expected: string,
): void {
  if (value === undefined || value === null) return;
  const check = TYPE_CHECKS[typeName];
  if (check === undefined || !check(value)) {
    throw makeError("invalid_secret_type", { option, expected });
  }
}

export function checkRange(option: string, value: unknown, minimum: number, maximum: number): void {
  if (typeof value === "number" && !(value >= minimum && value <= maximum)) {
    throw makeError("out_of_range", { option, minimum, maximum, value });
  }
}

export function checkMinimum(option: string, value: unknown, minimum: number): void {
  if (typeof value === "number" && value < minimum) {
    throw makeError("below_minimum", { option, minimum, value });
  }
}

export function checkExclusiveMinimum(option: string, value: unknown, minimum: number): void {
  if (typeof value === "number" && !(value > minimum)) {
    throw makeError("not_above_minimum", { option, minimum, value });
  }
}

export function checkNonEmpty(option: string, value: unknown): void {
  if (value === "") throw makeError("empty_string", { option });
}

/** No CR, LF or NUL in a value that becomes a header (header injection). The value is not echoed. */
export function checkHeaderValue(option: string, value: unknown): void {
  if (value === undefined || value === null) return;
  const values = isPlainObject(value) ? Object.values(value) : [value];
  for (const v of values) {
    if (typeof v === "string" && FORBIDDEN_IN_HEADER.test(v)) {
      throw makeError("invalid_header_value", { option });
    }
  }
  if (isPlainObject(value)) {
    for (const name of Object.keys(value)) checkHeaderName(option, name);
  }
}

export function checkHeaderName(option: string, value: unknown): void {
  if (typeof value === "string" && !HEADER_NAME.test(value)) {
    throw makeError("invalid_header_name", { option, value });
  }
}

/** http or https, with a host, and no credentials (never echoed back when present). */
export function checkUrl(option: string, value: unknown): void {
  if (typeof value !== "string") return;
  const rest = value.includes("://") ? value.slice(value.indexOf("://") + 3) : value;
  if (rest.split(/[/?#]/, 1)[0]?.includes("@")) throw makeError("base_url_credentials", { option });
  const match = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)/.exec(value);
  const scheme = match?.[1]?.toLowerCase();
  if (match === null || (scheme !== "http" && scheme !== "https") || match[2] === "") {
    throw makeError("invalid_base_url", { option, value });
  }
}

export function checkMaxLength(option: string, value: unknown, maximum: number): void {
  if (typeof value === "string" && value.length > maximum) {
    throw makeError("too_long", { option, maximum, length: value.length });
  }
}

export function checkChoice(
  option: string,
  value: unknown,
  choices: readonly string[],
  code: Parameters<typeof makeError>[0],
): void {
  if (typeof value === "string" && !choices.includes(value)) {
    throw makeError(code, { option, choices: [...choices], value });
  }
}

export function checkPattern(
  option: string,
  value: unknown,
  pattern: string,
  code: Parameters<typeof makeError>[0],
): void {
  if (typeof value !== "string") return;
  let compiled = PATTERNS.get(pattern);
  if (compiled === undefined) {
    compiled = new RegExp(pattern);
    PATTERNS.set(pattern, compiled);
  }
  if (!compiled.test(value)) throw makeError(code, { option, pattern, value });
}

/** `prefix + value`, or value itself when it already contains one of unlessContains. */
export function derivePrefixed(
  value: string,
  prefix: string,
  unlessContains: readonly string[],
): string {
  return unlessContains.some((s) => value.includes(s)) ? value : prefix + value;
}

/** util.inspect's hook (console.log, pino-pretty...): an object's method under it says what it shows. */
export const INSPECT: unique symbol = Symbol.for("nodejs.util.inspect.custom");
/** The `inspect` util.inspect hands an INSPECT method, to format what the method shows. */
export type Inspect = (value: unknown, options: object) => string;

/** A plain copy of `config`'s fields, hidden ones too, with "***" for every secret that is set. */
export function masked(config: object, secrets: ReadonlySet<string>): Record<string, unknown> {
  const shown: Record<string, unknown> = {};
  for (const name of Object.getOwnPropertyNames(config)) {
    if (name === "toJSON") continue;
    const value: unknown = (config as Record<string, unknown>)[name];
    shown[name] = secrets.has(name) && value != null ? "***" : value;
  }
  return shown;
}

/**
 * The config frozen, as no serializer shows a secret: the secret fields are not enumerable (so
 * loggers that copy an object's own fields, as pino and winston do with the object they log, and
 * spreading and structuredClone, leave them out), and `toJSON` and the INSPECT method (not
 * enumerable either) show every field with "***" for the secrets, as Python's repr does.
 */
export function freezeConfig<T extends object>(config: T, secrets: ReadonlySet<string>): T {
  for (const name of secrets) {
    if (Object.hasOwn(config, name)) Object.defineProperty(config, name, { enumerable: false });
  }
  Object.defineProperty(config, "toJSON", { value: () => masked(config, secrets) });
  Object.defineProperty(config, INSPECT, {
    value: (_depth: number, options: object, inspect: Inspect) =>
      inspect(masked(config, secrets), options),
  });
  return Object.freeze(config);
}

/** A frozen private copy, so later changes to the caller's object do not reach the wire. */
export function freezeMap(
  value: Readonly<Record<string, string>> | undefined,
): Readonly<Record<string, string>> | undefined {
  return value === undefined || value === null ? undefined : Object.freeze({ ...value });
}

export function freezeList(
  value: string | readonly string[] | undefined,
): string | readonly string[] | undefined {
  if (value === undefined || value === null) return undefined;
  return typeof value === "string" ? value : Object.freeze([...value]);
}
