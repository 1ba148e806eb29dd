import { ERRORS, type ErrorCode } from "../generated/errors.js";

/** Base class of every error brainline raises. Carries a stable `code`. */
export class BrainlineError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.name = "BrainlineError";
  }

  /**
   * What JSON.stringify shows (winston's json format, pino for an error that is not under `err`):
   * name, code, message and the class's own fields (status, body, retryAfter, partialText...),
   * all scrubbed of keys; not the stack or the cause.
   */
  toJSON(): Record<string, unknown> {
    const { name, code, message } = this;
    const view: Record<string, unknown> = { name, code, message };
    for (const [key, value] of Object.entries(this)) view[key] = value;
    return view;
  }
}

/** A bad option or call argument, raised before anything is sent. */
export class ConfigError extends BrainlineError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = "ConfigError";
  }
}

/** The connection was refused, reset or failed before a response arrived. */
export class APIConnectionError extends BrainlineError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = "APIConnectionError";
  }
}

/** A timeout expired; the code says which one. */
export class APITimeoutError extends BrainlineError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = "APITimeoutError";
  }
}

/** The server answered with a non-2xx status. */
export class APIStatusError extends BrainlineError {
  /** The HTTP status code. */
  readonly status: number;
  /** At most ERROR_BODY_MAX_BYTES of the response body, decoded as UTF-8 with replacement. */
  body: string;
  /** Seconds from the Retry-After header (seconds or an HTTP date); undefined when absent. */
  readonly retryAfter: number | undefined;
  /** The answer's request id (REQUEST_ID_HEADERS); null when it carried none. */
  requestId: string | null;

  constructor(
    code: string,
    message: string,
    options: {
      status: number;
      body?: string;
      retryAfter?: number | undefined;
      requestId?: string | null | undefined;
      cause?: unknown;
    },
  ) {
    super(code, message, options);
    this.name = "APIStatusError";
    this.status = options.status;
    this.body = options.body ?? "";
    this.retryAfter = options.retryAfter;
    this.requestId = options.requestId ?? null;
  }
}

/** The stream failed after a 2xx response. Carries the text already streamed. */
export class StreamError extends BrainlineError {
  /** The text already streamed when the error happened. */
  partialText: string;
  /** The answer's request id (REQUEST_ID_HEADERS); null when it carried none. */
  requestId: string | null;

  constructor(
    code: string,
    message: string,
    options?: { partialText?: string; requestId?: string | null | undefined; cause?: unknown },
  ) {
    super(code, message, options);
    this.name = "StreamError";
    this.partialText = options?.partialText ?? "";
    this.requestId = options?.requestId ?? null;
  }
}

/**
 * Every endpoint of a FallbackLLM failed before the turn's first event. Carries `errors`: each
 * attempt's own typed error, in the order the attempts started.
 */
export class AllEndpointsFailedError extends BrainlineError {
  /** Each attempt's own error, in the order the attempts started. */
  readonly errors: BrainlineError[];

  constructor(
    code: string,
    message: string,
    options?: { errors?: readonly BrainlineError[]; cause?: unknown },
  ) {
    super(code, message, options);
    this.name = "AllEndpointsFailedError";
    this.errors = [...(options?.errors ?? [])];
  }
}

/** Params inserted into a message as-is; every other param goes through formatValue. */
const VERBATIM_PARAMS: ReadonlySet<string> = new Set([
  "option",
  "url",
  "proxy",
  "detail",
  "what",
  "expected",
  "null",
  "pattern",
]);

const PLACEHOLDER = /\{([A-Za-z_][A-Za-z0-9_]*)\}/g;
/** The language's own word for "no value" in messages ({null}); Python says "None". */
const NULL_WORD = "undefined";

/**
 * The error for `code`, its class and message template taken from ERRORS.
 *
 * Every param is formatted with formatValue, except those named `option`, `url`, `proxy`,
 * `detail`, `what`, `expected`, `null`, `pattern` or ending in `_name`, which are inserted as
 * they are. A placeholder without a param stays as written, except `{null}`, which defaults to
 * "undefined". Params that are not placeholders are ignored by the message; `status`, `body` and `retryAfter` (APIStatusError),
 * `partialText` (StreamError), `errors` (AllEndpointsFailedError) and `cause` (any class) become
 * properties.
 */
export function makeError(
  code: ErrorCode,
  params: Readonly<Record<string, unknown>> = {},
): BrainlineError {
  const [className, template] = ERRORS[code];
  const message = template.replace(PLACEHOLDER, (whole, name: string) => {
    if (!Object.hasOwn(params, name)) return name === "null" ? NULL_WORD : whole;
    const value = params[name];
    return VERBATIM_PARAMS.has(name) || name.endsWith("_name") ? String(value) : formatValue(value);
  });
  const cause = params.cause === undefined ? undefined : { cause: params.cause };
  switch (className) {
    case "ConfigError":
      return new ConfigError(code, message, cause);
    case "APIConnectionError":
      return new APIConnectionError(code, message, cause);
    case "APITimeoutError":
      return new APITimeoutError(code, message, cause);
    case "APIStatusError": {
      const { status, body, retryAfter, requestId } = params;
      return new APIStatusError(code, message, {
        status: typeof status === "number" && Number.isInteger(status) ? status : 0,
        body: typeof body === "string" ? body : "",
        retryAfter: typeof retryAfter === "number" ? retryAfter : undefined,
        requestId: typeof requestId === "string" ? requestId : null,
        cause: params.cause,
      });
    }
    case "StreamError": {
      const { partialText, requestId } = params;
      return new StreamError(code, message, {
        partialText: typeof partialText === "string" ? partialText : "",
        requestId: typeof requestId === "string" ? requestId : null,
        cause: params.cause,
      });
    }
    case "AllEndpointsFailedError": {
      const errors = Array.isArray(params.errors) ? (params.errors as BrainlineError[]) : [];
      return new AllEndpointsFailedError(code, message, { errors, cause: params.cause });
    }
    default:
      return new BrainlineError(code, message, cause);
  }
}

/**
 * A value as it appears in an error message, identical to Python's format_value: strings as JSON
 * strings, integral numbers without a fraction, other numbers in Python's shortest round-trip form,
 * lists and objects as compact JSON, undefined -> `undefined`, null -> `null`.
 */
export function formatValue(value: unknown): string {
  if (value === undefined) return "undefined";
  return toJson(value) ?? String(value);
}

function toJson(value: unknown): string | undefined {
  switch (typeof value) {
    case "string":
      return JSON.stringify(value);
    case "number":
      return formatNumber(value);
    case "bigint":
      return value.toString();
    case "boolean":
      return value ? "true" : "false";
    case "object": {
      if (value === null) return "null";
      if (Array.isArray(value)) {
        return `[${value.map((item) => toJson(item) ?? "null").join(",")}]`;
      }
      const parts: string[] = [];
      for (const [key, item] of Object.entries(value)) {
        const encoded = toJson(item);
        if (encoded !== undefined) parts.push(`${JSON.stringify(key)}:${encoded}`);
      }
      return `{${parts.join(",")}}`;
    }
    default:
      return undefined;
  }
}

/** Python's repr of a float, except that integral values lose their `.0` (as Python's int()). */
function formatNumber(x: number): string {
  if (Number.isNaN(x)) return "NaN";
  if (x === Number.POSITIVE_INFINITY) return "Infinity";
  if (x === Number.NEGATIVE_INFINITY) return "-Infinity";
  if (Number.isInteger(x)) return BigInt(x).toString();
  // Python switches to exponent form below 1e-4 and from 1e16; JS only below 1e-6 and from 1e21.
  const shortest = x.toExponential();
  const at = shortest.indexOf("e");
  const exponent = Number(shortest.slice(at + 1));
  if (exponent >= -4 && exponent < 16) return String(x);
  const digits = Math.abs(exponent);
  return `${shortest.slice(0, at)}e${exponent < 0 ? "-" : "+"}${digits < 10 ? "0" : ""}${digits}`;
}
