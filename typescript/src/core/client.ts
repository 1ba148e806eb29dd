import {
  CONNECT_TIMEOUT_CAP,
  ERROR_BODY_MAX_BYTES,
  SSE_MAX_EVENT_BYTES,
  WARMUP_TIMEOUT,
} from "../generated/constants.js";
import { BODY_FIELDS, type LLMConfig } from "../generated/options.js";
import { TurnState, completionToChunk } from "./chunks.js";
import { APIStatusError, BrainlineError, StreamError, makeError } from "./errors.js";
import {
  type Event,
  type ToolCallEvent,
  type Turn,
  type Usage,
  assembleToolCalls,
} from "./events.js";
import { type SessionContext, hashCaller, resolveSessionKey } from "./session.js";
import { type ServerSentEvent, SSEDecoder } from "./sse.js";

/** Per-call options of stream() and complete(). */
export interface StreamOptions {
  /** Barge-in: aborting it ends the turn at once, without an error and without a finish event. */
  readonly signal?: AbortSignal | undefined;
  readonly callId?: string | undefined;
  readonly caller?: string | undefined;
  readonly callee?: string | undefined;
}

/** The longest delay setTimeout accepts; longer ones would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const HEADER_UNSAFE = /[\r\n\0]/;

/**
 * One request's abort controller, linked to the caller's signal, and the timer that bounds each
 * wait (for the headers, then for every read) to `timeout`. Node 18 has no AbortSignal.any.
 */
class Exchange {
  readonly controller = new AbortController();
  cancelled = false;
  timedOut = false;
  /** The body was read to its end: nothing to abort, the connection went back to the pool. */
  finished = false;
  private timer: ReturnType<typeof setTimeout> | undefined = undefined;
  private deadline = 0;
  private waiting = false;

  constructor(
    private readonly signal: AbortSignal | undefined,
    private readonly ms: number,
  ) {
    signal?.addEventListener("abort", this.cancel);
  }

  readonly cancel = (): void => {
    this.cancelled = true;
    this.controller.abort();
  };

  /** Bound the wait that starts now. One timer serves every wait: it re-arms itself if needed. */
  startWait(): void {
    this.waiting = true;
    this.deadline = Date.now() + this.ms;
    if (this.timer === undefined)
      this.timer = setTimeout(this.expire, Math.min(this.ms, MAX_TIMER_MS));
  }

  endWait(): void {
    this.waiting = false;
  }

  private readonly expire = (): void => {
    this.timer = undefined;
    if (!this.waiting) return;
    const left = this.deadline - Date.now();
    if (left > 0) {
      this.timer = setTimeout(this.expire, Math.min(left, MAX_TIMER_MS));
      return;
    }
    this.timedOut = true;
    this.controller.abort();
  };

  async read(
    reader: ReadableStreamDefaultReader<Uint8Array>,
  ): Promise<ReadableStreamReadResult<Uint8Array>> {
    this.startWait();
    try {
      return await reader.read();
    } finally {
      this.waiting = false;
    }
  }

  /** Clear the timer and the listener; abort the request unless its body was read to the end. */
  dispose(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.signal?.removeEventListener("abort", this.cancel);
    if (!this.finished) this.controller.abort();
  }
}

/**
 * The OpenAI-compatible streaming client every generated provider extends. Constructed with one
 * resolved LLMConfig; the platform fetch keeps connections alive between turns.
 */
export class BaseLLM {
  /** The provider's key in the catalog; each generated class sets its own. */
  static readonly providerKey: string = "";

  private readonly llmConfig: LLMConfig;
  private readonly active = new Set<Exchange>();

  constructor(config: LLMConfig) {
    this.llmConfig = Object.isFrozen(config) ? config : Object.freeze({ ...config });
  }

  /** The resolved configuration (read-only). */
  get config(): LLMConfig {
    return this.llmConfig;
  }

  get providerKey(): string {
    return (this.constructor as typeof BaseLLM).providerKey;
  }

  /**
   * Stream one turn: text, reasoning and tool-call events as they arrive, then one usage event (when
   * the server sent usage) and a finish event. Aborting `signal` ends the iteration quietly with no
   * finish event. Call arguments are checked before anything is sent.
   */
  async *stream(
    messages: readonly object[],
    tools?: readonly object[] | null,
    options: StreamOptions = {},
  ): AsyncGenerator<Event, void, undefined> {
    const { signal, callId, caller, callee } = options ?? {};
    checkCallArguments(messages, tools, callId, caller, callee);
    const [headers, sessionKey] = this.requestHeaders(callId, caller, callee);
    const body = this.requestBody(messages, tools, callId);
    if (signal?.aborted) return;

    const config = this.llmConfig;
    const url = `${config.baseUrl.replace(/\/+$/, "")}/chat/completions`;
    const exchange = new Exchange(signal, config.timeout * 1000);
    this.active.add(exchange);
    const state = new TurnState();
    try {
      let response: Response;
      exchange.startWait();
      try {
        response = await fetch(url, {
          method: "POST",
          headers,
          body,
          signal: exchange.controller.signal,
        });
      } catch (err) {
        if (exchange.cancelled) return;
        throw this.transportError(err, exchange, url);
      } finally {
        exchange.endWait();
      }
      if (exchange.cancelled) return;

      const reader = response.body?.getReader();
      if (response.status < 200 || response.status > 299) {
        const error = await this.statusError(response, reader, exchange, url);
        if (exchange.cancelled) return;
        throw error;
      }
      if (reader === undefined) {
        exchange.finished = true;
        yield* state.finish(false);
        return;
      }

      if (isJsonContentType(response.headers.get("content-type"))) {
        const text = await this.readWhole(reader, exchange, url, state);
        if (text === undefined) return;
        const events = [
          ...state.feed(completionToChunk(parseJson(text, state))),
          ...state.finish(true),
        ];
        for (const event of events) {
          if (exchange.cancelled) return;
          yield event;
        }
        return;
      }

      const decoder = new SSEDecoder();
      let done = false;
      let end = false;
      stream: while (!end) {
        let result: ReadableStreamReadResult<Uint8Array>;
        try {
          result = await exchange.read(reader);
        } catch (err) {
          if (exchange.cancelled) return;
          throw this.bodyError(err, exchange, url, state);
        }
        if (exchange.cancelled) return;
        let batch: ServerSentEvent[];
        if (result.done) {
          exchange.finished = true;
          end = true;
          batch = decoder.flush();
        } else {
          batch = decoder.decode(result.value);
        }
        for (const sse of batch) {
          if (sse.data === "[DONE]") {
            done = true;
            break stream;
          }
          for (const event of handleEvent(sse.event, sse.data, state)) {
            if (exchange.cancelled) return;
            yield event;
          }
        }
        // A limit error found after the events above, in the same read.
        if (decoder.error !== undefined) throw decoder.error;
      }

      if (done && !exchange.finished) {
        // Read the rest so the connection goes back to the pool; the turn is complete already.
        try {
          while (!(await exchange.read(reader)).done) {}
          exchange.finished = true;
        } catch {
          // The request is aborted in dispose(); a failure after [DONE] does not fail the turn.
        }
      }
      for (const event of state.finish(done)) {
        if (exchange.cancelled) return;
        yield event;
      }
    } catch (err) {
      if (err instanceof BrainlineError) {
        if (err instanceof StreamError) err.partialText = state.text;
        this.scrub(err, sessionKey);
      }
      throw err;
    } finally {
      exchange.dispose();
      this.active.delete(exchange);
      if (exchange.finished) await poolRelease();
    }
  }

  /** Run one turn to its end and return it assembled; finishReason is null when cancelled. */
  async complete(
    messages: readonly object[],
    tools?: readonly object[] | null,
    options: StreamOptions = {},
  ): Promise<Turn> {
    let text = "";
    let reasoning = "";
    const calls: ToolCallEvent[] = [];
    let usage: Usage | null = null;
    let finishReason: Turn["finishReason"] = null;
    for await (const event of this.stream(messages, tools, options)) {
      switch (event.type) {
        case "text":
          text += event.content;
          break;
        case "reasoning":
          reasoning += event.content;
          break;
        case "tool_call":
          calls.push(event);
          break;
        case "usage":
          usage = {
            inputTokens: event.input_tokens,
            outputTokens: event.output_tokens,
            cacheReadTokens: event.cache_read_tokens,
          };
          break;
        case "finish":
          finishReason = event.reason;
          break;
      }
    }
    return { text, reasoning, toolCalls: assembleToolCalls(calls), usage, finishReason };
  }

  /** Open a connection ahead of the first turn: GET {baseUrl}/models. Never throws. */
  async warmup(): Promise<void> {
    const config = this.llmConfig;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), WARMUP_TIMEOUT * 1000);
    try {
      const headers: [string, string][] = [["User-Agent", utf8ByteString(config.userAgent)]];
      if (config.apiKey) headers.push(["Authorization", utf8ByteString(`Bearer ${config.apiKey}`)]);
      const response = await fetch(`${config.baseUrl.replace(/\/+$/, "")}/models`, {
        method: "GET",
        headers,
        signal: controller.signal,
      });
      // Read the answer to its end so the connection stays in the pool.
      const reader = response.body?.getReader();
      if (reader !== undefined) while (!(await reader.read()).done) {}
      await poolRelease();
    } catch {
      // Best effort: a failed warmup only means the first turn opens its own connection.
      controller.abort();
    } finally {
      clearTimeout(timer);
    }
  }

  /** End the turns still running (as if cancelled). The instance stays usable. */
  async close(): Promise<void> {
    for (const exchange of this.active) exchange.cancel();
    this.active.clear();
  }

  /** The headers of one turn, and the memory-scope key among them (a secret). */
  private requestHeaders(
    callId: string | undefined,
    caller: string | undefined,
    callee: string | undefined,
  ): [[string, string][], string | undefined] {
    const config = this.llmConfig;
    const headers: [string, string][] = [
      ["Content-Type", "application/json"],
      ["Accept", "text/event-stream"],
      ["User-Agent", config.userAgent],
    ];
    if (config.apiKey) headers.push(["Authorization", `Bearer ${config.apiKey}`]);
    if (config.extraHeaders) {
      for (const [name, value] of Object.entries(config.extraHeaders))
        setHeader(headers, name, value);
    }
    if (config.sessionIdHeader && callId) {
      setHeader(headers, config.sessionIdHeader, config.sessionIdPrefix + callId);
    }
    let sessionKey: string | undefined;
    if (config.sessionKeyHeader) {
      const ctx: SessionContext = { callId, caller, callee, callerHash: hashCaller(caller) };
      const key: unknown = resolveSessionKey(config, ctx);
      if (key) {
        const option = config.sessionKeyFactory !== undefined ? "sessionKeyFactory" : "sessionKey";
        if (typeof key !== "string") {
          throw makeError("invalid_type", { option, expected: "a string", value: key });
        }
        if (HEADER_UNSAFE.test(key)) throw makeError("invalid_header_value", { option });
        setHeader(headers, config.sessionKeyHeader, key);
        sessionKey = key;
      }
    }
    // As UTF-8 bytes, as Python sends them: fetch takes header values as Latin-1 byte strings.
    for (const header of headers) header[1] = utf8ByteString(header[1]);
    return [headers, sessionKey];
  }

  /** Keep keys out of an error, even when a server echoes them back. */
  private scrub(err: BrainlineError, sessionKey: string | undefined): void {
    for (const secret of [this.llmConfig.apiKey, this.llmConfig.sessionKey, sessionKey]) {
      if (!secret) continue;
      if (err.message.includes(secret)) err.message = err.message.replaceAll(secret, "***");
      if (err instanceof APIStatusError && err.body.includes(secret)) {
        err.body = err.body.replaceAll(secret, "***");
      }
    }
  }

  private requestBody(
    messages: readonly object[],
    tools: readonly object[] | null | undefined,
    callId: string | undefined,
  ): string {
    const config = this.llmConfig;
    const body: Record<string, unknown> = {
      model: config.model,
      messages,
      stream: true,
      stream_options: { include_usage: true },
    };
    if (tools && tools.length > 0) body.tools = tools;
    for (const [field, key] of BODY_FIELDS) {
      const value = config[field];
      if (value !== undefined && value !== null) body[key] = value;
    }
    if (config.sessionUserPrefix && callId) body.user = config.sessionUserPrefix + callId;
    return JSON.stringify(body);
  }

  /** A fetch that failed before any response: a timeout, or a connection error. */
  private transportError(err: unknown, exchange: Exchange, url: string): BrainlineError {
    const timeout = this.llmConfig.timeout;
    const code = causeCode(err);
    if (exchange.timedOut || code === "UND_ERR_HEADERS_TIMEOUT") {
      return makeError("read_timeout", { url, timeout, cause: err });
    }
    if (code === "UND_ERR_CONNECT_TIMEOUT") {
      return makeError("connect_timeout", {
        url,
        timeout: Math.min(timeout, CONNECT_TIMEOUT_CAP),
        cause: err,
      });
    }
    return makeError("connection_error", { url, cause: err });
  }

  /** A body read that failed after the headers: a timeout, or the connection lost. */
  private bodyError(
    err: unknown,
    exchange: Exchange,
    url: string,
    state: TurnState,
  ): BrainlineError {
    if (exchange.timedOut || causeCode(err) === "UND_ERR_BODY_TIMEOUT") {
      return makeError("read_timeout", { url, timeout: this.llmConfig.timeout, cause: err });
    }
    return makeError("interrupted", { partialText: state.text, cause: err });
  }

  /** The error of a non-2xx answer, with at most ERROR_BODY_MAX_BYTES of its body. */
  private async statusError(
    response: Response,
    reader: ReadableStreamDefaultReader<Uint8Array> | undefined,
    exchange: Exchange,
    url: string,
  ): Promise<BrainlineError> {
    const parts: Uint8Array[] = [];
    let size = 0;
    if (reader === undefined) {
      exchange.finished = true;
    } else {
      try {
        while (size < ERROR_BODY_MAX_BYTES) {
          const result = await exchange.read(reader);
          if (result.done) {
            exchange.finished = true;
            break;
          }
          parts.push(result.value);
          size += result.value.byteLength;
        }
      } catch {
        // Keep what arrived: the status is what matters.
      }
    }
    const bytes = concat(parts, Math.min(size, ERROR_BODY_MAX_BYTES));
    const body = new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes);
    let detail = body;
    try {
      const parsed: unknown = JSON.parse(body);
      const error = isObject(parsed) ? parsed.error : undefined;
      if (isObject(error) && typeof error.message === "string") detail = error.message;
    } catch {
      // Not JSON: the body text is the detail.
    }
    return makeError("http_status", {
      url,
      status: response.status,
      detail: cut(detail, 200),
      body,
      retryAfter: parseRetryAfter(response.headers.get("retry-after")),
    });
  }

  /** A whole 2xx JSON answer as text; undefined when cancelled meanwhile. */
  private async readWhole(
    reader: ReadableStreamDefaultReader<Uint8Array>,
    exchange: Exchange,
    url: string,
    state: TurnState,
  ): Promise<string | undefined> {
    const parts: Uint8Array[] = [];
    let size = 0;
    for (;;) {
      let result: ReadableStreamReadResult<Uint8Array>;
      try {
        result = await exchange.read(reader);
      } catch (err) {
        if (exchange.cancelled) return undefined;
        throw this.bodyError(err, exchange, url, state);
      }
      if (exchange.cancelled) return undefined;
      if (result.done) break;
      parts.push(result.value);
      size += result.value.byteLength;
      if (size > SSE_MAX_EVENT_BYTES) {
        throw makeError("too_large", { what: "event", limit: SSE_MAX_EVENT_BYTES });
      }
    }
    exchange.finished = true;
    return new TextDecoder().decode(concat(parts, size));
  }
}

/**
 * undici puts a socket back in its pool one event-loop turn after the body ended: waiting for it
 * lets a request sent right after this one reuse the connection instead of opening another.
 */
function poolRelease(): Promise<void> {
  return new Promise((resolve) => {
    if (typeof setImmediate === "function") setImmediate(resolve);
    else setTimeout(resolve, 0);
  });
}

/** The checks stream() runs on its arguments before anything is sent. */
function checkCallArguments(
  messages: unknown,
  tools: unknown,
  callId: unknown,
  caller: unknown,
  callee: unknown,
): void {
  if (
    !Array.isArray(messages) ||
    messages.length === 0 ||
    !messages.every((message) => isObject(message) && typeof message.role === "string")
  ) {
    throw makeError("invalid_messages");
  }
  if (tools !== undefined && tools !== null && (!Array.isArray(tools) || !tools.every(isObject))) {
    throw makeError("invalid_tools");
  }
  for (const [option, value] of [
    ["callId", callId],
    ["caller", caller],
    ["callee", callee],
  ] as const) {
    if (value !== undefined && value !== null && typeof value !== "string") {
      throw makeError("invalid_type", { option, expected: "a string", value });
    }
  }
  if (typeof callId === "string" && HEADER_UNSAFE.test(callId)) {
    throw makeError("invalid_header_value", { option: "callId" });
  }
}

/** The events of one dispatched SSE event (not [DONE]). */
function handleEvent(name: string | undefined, data: string, state: TurnState): Event[] {
  const chunk = parseJson(data, state);
  if (name === "error") {
    throw state.serverError(isObject(chunk) && chunk.error != null ? chunk.error : chunk);
  }
  return state.feed(chunk);
}

function parseJson(data: string, state: TurnState): unknown {
  try {
    return JSON.parse(data);
  } catch (err) {
    throw makeError("malformed", {
      detail: `data is not JSON: ${cut(data, 200)}`,
      partialText: state.text,
      cause: err,
    });
  }
}

/** A string whose char codes are the UTF-8 bytes of value (unchanged when it is ASCII). */
function utf8ByteString(value: string): string {
  if (!/[\u0080-\uffff]/.test(value)) return value;
  let out = "";
  for (const byte of new TextEncoder().encode(value)) out += String.fromCharCode(byte);
  return out;
}

/** Add a header, or replace the value of one already there (case-insensitive) in its place. */
function setHeader(headers: [string, string][], name: string, value: string): void {
  const lower = name.toLowerCase();
  const at = headers.findIndex(([existing]) => existing.toLowerCase() === lower);
  if (at === -1) headers.push([name, value]);
  else headers[at] = [name, value];
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isJsonContentType(contentType: string | null): boolean {
  const type = (contentType ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
  return type === "application/json" || type.endsWith("+json");
}

/** The first `max` characters (code points, as in Python). */
function cut(text: string, max: number): string {
  if (text.length <= max) return text;
  let out = "";
  let n = 0;
  for (const char of text) {
    if (n++ === max) break;
    out += char;
  }
  return out;
}

function concat(parts: readonly Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    if (at >= size) break;
    const piece = part.subarray(0, size - at);
    out.set(piece, at);
    at += piece.byteLength;
  }
  return out;
}

/** The `code` of an error or of one of its causes (undici puts its codes on the cause). */
function causeCode(err: unknown): string | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 5 && typeof current === "object" && current !== null; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string") return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Retry-After as seconds: a number of seconds or an HTTP date (0 when already past). */
function parseRetryAfter(value: string | null): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  const date = Date.parse(text);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, (date - Date.now()) / 1000);
}
