import {
  CONNECT_TIMEOUT_CAP,
  ERROR_BODY_MAX_BYTES,
  PROGRESS_CLOCK_GRACE,
  SESSION_KEY_MAX_LENGTH,
  SSE_MAX_EVENT_BYTES,
  WARMUP_TIMEOUT,
} from "../generated/constants.js";
import { BODY_FIELDS, type LLMConfig, SECRET_FIELDS } from "../generated/options.js";
import { TurnState, cut, isObject } from "./chunks.js";
import { APIStatusError, BrainlineError, StreamError, makeError } from "./errors.js";
import { type Event, type FinishEvent, type Turn, collectTurn } from "./events.js";
import { resolveSessionKey, sessionContext } from "./session.js";
import { type Log, logFor } from "./log.js";
import { type TurnMetrics, TurnMeter, errorCodeOf, requestIdOf } from "./metrics.js";
import { type ServerSentEvent, SSEDecoder } from "./sse.js";
import { type Telemetry, telemetryFor } from "./telemetry.js";
import { type AnyCall, type AnyTarget, targetOf } from "./fetch.js";
import {
  AbortedError,
  type Body,
  CorruptBodyError,
  ProxyError,
  type Reply,
  Target,
  joined,
  proxyAnswered,
} from "./transport.js";
import { INSPECT, type Inspect, freezeConfig, masked } from "./validate.js";

/** Per-call options of stream() and complete(). */
export interface StreamOptions {
  /** Barge-in: aborting it ends the turn at once, without an error and without a finish event. */
  readonly signal?: AbortSignal | undefined;
  readonly callId?: string | undefined;
  readonly caller?: string | undefined;
  readonly callee?: string | undefined;
}

/**
 * FallbackLLM's private per-turn switch (core only, not exported by the package): in stream()'s
 * options, `true` makes an error the engine would retry after a wait (a backoff, Retry-After) throw
 * at once, so that the FallbackLLM starts its next endpoint instead.
 */
export const FAILOVER: unique symbol = Symbol("brainline.failover");
/** FallbackLLM's private per-turn hook: also handed the turn's metrics record. */
export const METRICS_SINK: unique symbol = Symbol("brainline.metricsSink");

/** StreamOptions with FallbackLLM's private switch. */
export interface InternalStreamOptions extends StreamOptions {
  readonly [FAILOVER]?: boolean | undefined;
  readonly [METRICS_SINK]?: ((metrics: TurnMetrics) => void) | undefined;
}

/** The longest delay setTimeout accepts; longer ones would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const HEADER_UNSAFE = /[\r\n\0]/;
/** The wire key of maxTokens in BODY_FIELDS. */
const MAX_TOKENS_WIRE = "max_completion_tokens";
const RETRY_STATUSES = new Set([429, 502, 503, 504]);
/** Seconds before the first retry without Retry-After; doubled each time. */
const RETRY_BACKOFF = 0.2;
const DIALECT_STATUSES = new Set([400, 422]);
const PROGRESS = new Set<string>(["text", "tool_call", "reasoning"]);
/** The connect phase's cap, in ms: a shorter `timeout` ends it sooner. */
const CONNECT_CAP_MS = CONNECT_TIMEOUT_CAP * 1000;
const CORRUPT_BODY = "the compressed body does not decompress";
/** Request bodies as UTF-8 (TextEncoder, not Buffer: the fetch transport runs where Buffer is not). */
const UTF8 = new TextEncoder();

type ClockCode = "first_token_timeout" | "idle_timeout" | "total_timeout";

/**
 * One turn: its current attempt's request (a new Call per attempt), the caller's signal that
 * cancels it, and the one timer that bounds each wait (for the headers, then for every read) to
 * `timeout` and the turn to its first-token, idle and total clocks. The progress clocks
 * (first-token, then idle) always run: unset, each is `timeout` plus PROGRESS_CLOCK_GRACE. A
 * progress chunk restarts the idle clock when the next wait starts, so the time the caller spends
 * over its events does not count; noting it costs no clock read per chunk.
 */
class Exchange {
  /** This attempt's request, once sent. */
  call: AnyCall | undefined = undefined;
  /** This attempt was aborted (cancelled, timed out, or a clock ran out). */
  aborted = false;
  cancelled = false;
  timedOut = false;
  /** The turn clock that ran out, if one did. */
  clock: ClockCode | undefined = undefined;
  /** The body was read to its end: nothing to abort, the connection went back to the pool. */
  finished = false;
  /** Inside a FallbackLLM: an error retried after a wait is thrown at once instead. */
  failover = false;
  private timer: ReturnType<typeof setTimeout> | undefined = undefined;
  private armedAt = Infinity;
  private deadline = 0;
  private waiting = false;
  private totalAt: number;
  private phaseAt: number;
  private phase: ClockCode = "first_token_timeout";
  /** How long the idle clock runs, in ms. */
  private readonly idleSpan: number;
  /** A chunk made progress since the last wait started. */
  private progressed = false;
  /** Ends a retry's wait early. */
  private wake: (() => void) | undefined = undefined;

  constructor(
    private readonly signal: AbortSignal | undefined,
    private readonly ms: number,
    private readonly config: LLMConfig,
  ) {
    signal?.addEventListener("abort", this.cancel);
    const now = Date.now();
    this.totalAt = config.totalTimeout == null ? Infinity : now + config.totalTimeout * 1000;
    const unset = (config.timeout + PROGRESS_CLOCK_GRACE) * 1000;
    this.phaseAt =
      now + (config.firstTokenTimeout == null ? unset : config.firstTokenTimeout * 1000);
    this.idleSpan = config.idleTimeout == null ? unset : config.idleTimeout * 1000;
  }

  /** A chunk carried text, a tool call or reasoning: the idle clock starts over at the next wait. */
  progress(): void {
    this.progressed = true;
  }

  /** The answer is complete: no turn clock runs any more. */
  stopClocks(): void {
    this.phaseAt = Infinity;
    this.totalAt = Infinity;
  }

  /** The APITimeoutError of the clock that ran out. */
  clockError(url: string): BrainlineError {
    const code = this.clock ?? "total_timeout";
    const config = this.config;
    const timeout =
      code === "total_timeout"
        ? config.totalTimeout
        : ((code === "first_token_timeout" ? config.firstTokenTimeout : config.idleTimeout) ??
          config.timeout);
    return makeError(code, { url, timeout });
  }

  /** Start the next attempt; the last one is aborted unless its body ended. */
  renew(): void {
    if (!this.finished) this.abort();
    this.call = undefined;
    this.aborted = false;
    this.finished = false;
  }

  /** End this attempt: its request, or the wait before the next one. */
  abort(): void {
    this.aborted = true;
    this.call?.abort();
    this.wake?.();
  }

  /** Wait before a retry: `ms`, or less when the turn is cancelled or a clock runs out. */
  async sleep(ms: number): Promise<void> {
    this.startWait(false);
    try {
      await new Promise<void>((resolve) => {
        if (this.aborted) return resolve();
        const done = (): void => {
          clearTimeout(timer);
          this.wake = undefined;
          resolve();
        };
        const timer = setTimeout(done, Math.min(ms, MAX_TIMER_MS));
        this.wake = done;
      });
    } finally {
      this.endWait();
    }
  }

  private turnClock(now: number): ClockCode | undefined {
    if (now >= this.totalAt) return "total_timeout";
    if (now >= this.phaseAt) return this.phase;
    return undefined;
  }

  readonly cancel = (): void => {
    this.cancelled = true;
    this.abort();
  };

  /**
   * Bound the wait that starts now (by `timeout` unless `bounded` is false, and by the turn
   * clocks). One timer serves every wait: it re-arms itself if needed. A clock that ran out while
   * the caller held an event ends the turn here, at once.
   */
  startWait(bounded = true): void {
    this.waiting = true;
    const now = Date.now();
    if (this.progressed) {
      this.progressed = false;
      this.phase = "idle_timeout";
      this.phaseAt = now + this.idleSpan;
      // A timer armed for an earlier deadline re-arms itself for this one when it fires; one
      // armed for a later one (a read, the total, a longer first-token clock) is dropped: this
      // wait arms one for this deadline.
      if (this.timer !== undefined && this.phaseAt < this.armedAt) {
        clearTimeout(this.timer);
        this.timer = undefined;
      }
    }
    this.deadline = bounded ? now + this.ms : Infinity;
    const clock = this.turnClock(now);
    if (clock !== undefined) {
      this.clock = clock;
      this.abort();
      return;
    }
    if (this.timer === undefined) {
      const at = Math.min(this.deadline, this.totalAt, this.phaseAt);
      if (at !== Infinity) {
        this.armedAt = at;
        this.timer = setTimeout(this.expire, Math.min(at - now, MAX_TIMER_MS));
      }
    }
  }

  endWait(): void {
    this.waiting = false;
  }

  private readonly expire = (): void => {
    this.timer = undefined;
    if (!this.waiting) return;
    const now = Date.now();
    const clock = this.turnClock(now);
    if (clock !== undefined) {
      this.clock = clock;
      this.abort();
      return;
    }
    const at = Math.min(this.deadline, this.totalAt, this.phaseAt);
    if (at > now) {
      if (at !== Infinity) {
        this.armedAt = at;
        this.timer = setTimeout(this.expire, Math.min(at - now, MAX_TIMER_MS));
      }
      return;
    }
    this.timedOut = true;
    this.abort();
  };

  /** The next read of the body (undefined at its end), bounded by `timeout` and the clocks. */
  async read(body: Body): Promise<Uint8Array | undefined> {
    this.startWait();
    try {
      return await body.read();
    } finally {
      this.waiting = false;
    }
  }

  /** Clear the timer and the listener; abort the request unless its body was read to the end. */
  dispose(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.signal?.removeEventListener("abort", this.cancel);
    if (!this.finished) this.abort();
  }
}

/**
 * The OpenAI-compatible streaming client every generated provider extends. Constructed with one
 * resolved LLMConfig; the transport's keep-alive agents keep connections open between turns.
 */
export class BaseLLM {
  /** The provider's key in the catalog; each generated class sets its own. */
  static readonly providerKey: string = "";
  /** OpenTelemetry's gen_ai.provider.name for it (spec: `genai_provider_name`, else the key). */
  static readonly genaiProviderName: string = "";

  private readonly llmConfig: LLMConfig;
  /** Debug logs (the logLevel and logger options, BRAINLINE_LOG). */
  private readonly log: Log;
  private readonly active = new Set<Exchange>();
  /** In messages: without extraQuery. */
  private readonly url: string;
  private readonly requestUrl: string;
  private readonly modelsUrl: string;
  /** requestUrl taken apart, on the first turn (a URL node cannot parse fails that turn). */
  private target: AnyTarget | undefined = undefined;
  // The dialect this endpoint speaks; in "auto" mode a 400/422 naming a field changes it.
  private sendStreamOptions: boolean;
  private maxTokensKey: string;
  /** OpenTelemetry spans and metrics (telemetry.ts): undefined when off, the usual case. */
  private readonly telemetry: Telemetry | undefined;

  constructor(config: LLMConfig) {
    this.llmConfig = Object.isFrozen(config) ? config : freezeConfig({ ...config }, SECRET_FIELDS);
    this.log = logFor(this.llmConfig.logLevel, this.llmConfig.logger);
    const base = this.llmConfig.baseUrl.replace(/\/+$/, "");
    const query = queryString(this.llmConfig.extraQuery);
    this.url = `${base}/chat/completions`;
    this.requestUrl = this.url + query;
    this.modelsUrl = `${base}/models${query}`;
    this.sendStreamOptions = this.llmConfig.streamOptions !== "off";
    this.maxTokensKey =
      this.llmConfig.maxTokensField === "max_tokens" ? "max_tokens" : MAX_TOKENS_WIRE;
    const genaiName = (this.constructor as typeof BaseLLM).genaiProviderName;
    this.telemetry = telemetryFor(genaiName || this.llmConfig.providerKey, this.llmConfig);
  }

  /** The resolved configuration (read-only). */
  get config(): LLMConfig {
    return this.llmConfig;
  }

  get providerKey(): string {
    return (this.constructor as typeof BaseLLM).providerKey;
  }

  /**
   * What JSON.stringify shows (and so pino and winston): the provider, model, base URL and the
   * config with "***" for its secrets, never a key (Python's repr shows the same three).
   */
  toJSON(): { provider: string; model: string; baseUrl: string; config: Record<string, unknown> } {
    const config = this.llmConfig;
    return {
      provider: this.providerKey,
      model: config.model,
      baseUrl: config.baseUrl,
      config: masked(config, SECRET_FIELDS),
    };
  }

  /** util.inspect (console.log): the toJSON view under the class name. */
  [INSPECT](_depth: number, options: object, inspect: Inspect): string {
    return `${this.constructor.name} ${inspect(this.toJSON(), options)}`;
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
    const config = this.llmConfig;
    const sink = (options as InternalStreamOptions | null)?.[METRICS_SINK];
    const meter = new TurnMeter(
      this.providerKey,
      config.model,
      sink === undefined ? config.onMetrics : both(sink, config.onMetrics),
      0,
      this.log,
    );
    if (signal?.aborted) {
      meter.finish({ cancelled: true });
      return;
    }
    const telemetry = this.telemetry;
    const state =
      telemetry === undefined
        ? new TurnState(config.reasoning)
        : await telemetry.start(meter, messages);

    const url = this.url;
    const exchange = new Exchange(signal, config.timeout * 1000, config);
    exchange.failover = (options as InternalStreamOptions | null)?.[FAILOVER] === true;
    this.active.add(exchange);
    let failure: unknown;
    let failed = false;
    try {
      const reply = await this.send(exchange, headers, body, messages, tools, callId, meter);
      if (reply === undefined) return;

      const reader = reply.body;
      if (reader === undefined) {
        exchange.finished = true;
        for (const event of state.finish(false)) {
          if (event.type === "finish") finished(meter, state, event);
          yield event;
        }
        return;
      }

      if (isJsonContentType(reply.header("content-type"))) {
        const text = await this.readWhole(reader, exchange, url, state);
        if (text === undefined) return;
        meter.chunks = 1;
        for (const event of state.feedBody(text)) {
          if (exchange.cancelled) return;
          if (event.type === "finish") finished(meter, state, event);
          else if (meter.textAt === null && PROGRESS.has(event.type)) meter.progressed([event]);
          yield event;
        }
        return;
      }

      const decoder = new SSEDecoder();
      let done = false;
      let end = false;
      stream: while (!end) {
        let chunk: Uint8Array | undefined;
        try {
          chunk = await exchange.read(reader);
        } catch (err) {
          if (exchange.cancelled) return;
          throw this.bodyError(err, exchange, url, state);
        }
        if (exchange.cancelled) return;
        let batch: ServerSentEvent[];
        if (chunk === undefined) {
          exchange.finished = true;
          end = true;
          batch = decoder.flush();
        } else {
          batch = decoder.decode(chunk);
        }
        // Index loops, not for...of: an array iterator held across a yield cannot be optimised
        // away and would be one more allocation per event.
        for (let i = 0; i < batch.length; i++) {
          const sse = batch[i] as ServerSentEvent;
          if (sse.data === "[DONE]") {
            done = true;
            break stream;
          }
          meter.chunks++;
          const events = state.feedEvent(sse.event, sse.data);
          if (hasProgress(events) || state.takeDropped()) {
            exchange.progress();
            if (meter.textAt === null) meter.progressed(events);
          }
          for (let j = 0; j < events.length; j++) {
            if (exchange.cancelled) return;
            yield events[j] as Event;
          }
        }
        // A limit error found after the events above, in the same read.
        if (decoder.error !== undefined) throw decoder.error;
      }

      exchange.stopClocks(); // the answer is complete: no clock runs while the caller reads it
      if (done && !exchange.finished) {
        // Read the rest so the connection goes back to the pool; the turn is complete already.
        try {
          while ((await exchange.read(reader)) !== undefined) {}
          exchange.finished = true;
        } catch {
          // The request is aborted in dispose(); a failure after [DONE] does not fail the turn.
        }
      }
      for (const event of state.finish(done)) {
        if (exchange.cancelled) return;
        if (event.type === "finish") finished(meter, state, event);
        yield event;
      }
    } catch (err) {
      if (err instanceof BrainlineError) {
        if (err instanceof StreamError) {
          err.partialText = state.text;
          err.requestId = meter.requestId;
        }
        this.scrub(err, sessionKey);
      }
      failure = err;
      failed = true;
      throw err;
    } finally {
      // Failed or cancelled: a finished turn has its record already.
      if (meter.record === undefined) {
        meter.finish({
          usage: state.usageCounts(),
          errorCode: failed ? errorCodeOf(failure) : null,
          cancelled: !failed,
        });
      }
      exchange.dispose();
      this.active.delete(exchange);
    }
  }

  /** Run one turn to its end and return it assembled; finishReason is null when cancelled. */
  async complete(
    messages: readonly object[],
    tools?: readonly object[] | null,
    options: StreamOptions = {},
  ): Promise<Turn> {
    return collectTurn(this.stream(messages, tools, options));
  }

  /** Open a connection ahead of the first turn: GET {baseUrl}/models. Never throws. */
  async warmup(): Promise<void> {
    const config = this.llmConfig;
    let call: AnyCall | undefined;
    let expired = false;
    const timer = setTimeout(() => {
      expired = true;
      call?.abort();
    }, WARMUP_TIMEOUT * 1000);
    try {
      const headers: [string, string][] = [["User-Agent", utf8ByteString(config.userAgent)]];
      if (config.apiKey) headers.push(["Authorization", utf8ByteString(`Bearer ${config.apiKey}`)]);
      const target = await targetOf(this.modelsUrl, config.fetch);
      if (expired) return;
      call = target.call("GET", headers, undefined, WARMUP_TIMEOUT * 1000);
      // Read the answer to its end so the connection stays in the pool.
      const reader = (await call.reply).body;
      if (reader !== undefined) while ((await reader.read()) !== undefined) {}
    } catch {
      // Best effort: a failed warmup only means the first turn opens its own connection.
      call?.abort();
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * End the turns still running (as if cancelled) and close the idle keep-alive connections to
   * this endpoint, as Python's aclose() closes its pool. The instance stays usable.
   */
  async close(): Promise<void> {
    for (const exchange of this.active) exchange.cancel();
    this.active.clear();
    this.target?.closeIdle();
  }

  /**
   * POST the turn and return the 2xx reply (its body not read yet); undefined when cancelled.
   *
   * Retries happen only here, so only before any byte of a body reached the caller: a connection
   * error or HTTP 429/502/503/504, at most maxRetries times, waiting Retry-After or a backoff within
   * what is left of retryBudget; and, in "auto" dialect mode, once per field for a 400/422 that
   * names `stream_options` / `include_usage` or `max_completion_tokens`.
   */
  private async send(
    exchange: Exchange,
    headers: [string, string][],
    body: string,
    messages: readonly object[],
    tools: readonly object[] | null | undefined,
    callId: string | undefined,
    meter: TurnMeter,
  ): Promise<Reply | undefined> {
    const config = this.llmConfig;
    let retries = 0;
    let budget = config.retryBudget;
    let payload = UTF8.encode(body);
    for (;;) {
      let response: Reply | undefined;
      let error: BrainlineError | undefined;
      exchange.startWait();
      try {
        this.target ??= await targetOf(this.requestUrl, this.llmConfig.fetch);
        // Cancelled, or a clock ran out, before the request.
        if (exchange.aborted) throw new AbortedError();
        exchange.call = this.target.call("POST", headers, payload, CONNECT_CAP_MS);
        meter.attempts++;
        if (this.log.debugOn) this.log.debug(`request POST ${this.url} attempt ${meter.attempts}`);
        response = await exchange.call.reply;
        meter.answered(response);
        if (this.log.debugOn) {
          this.log.debug(
            `answer HTTP ${response.status} from ${this.url} attempt ${meter.attempts} ` +
              `request_id=${meter.requestId ?? "-"}`,
          );
        }
      } catch (err) {
        if (exchange.cancelled) return undefined;
        error = this.transportError(err, exchange, this.url);
      } finally {
        exchange.endWait();
      }
      if (exchange.cancelled) return undefined;
      let wait: number;
      let code: string;
      if (response === undefined) {
        const failure = error as BrainlineError;
        code = failure.code;
        if (failure.code !== "connection_error" || retries >= config.maxRetries) throw failure;
        const call = exchange.call;
        if (call === undefined || call.connecting) {
          wait = Math.min(RETRY_BACKOFF * 2 ** retries, budget); // no connection: the server is down
        } else if (call.reused && !call.answered) {
          wait = 0; // a pooled connection the server had closed
        } else {
          throw failure; // a fresh connection took the request: it may have run
        }
        if (exchange.failover && wait > 0) throw failure; // FallbackLLM: the next endpoint, now
      } else {
        if (response.status >= 200 && response.status <= 299) return response;
        // A 407 can only be the proxy's (an http request in absolute form): never retried.
        const proxy = this.target instanceof Target ? this.target.proxy : undefined;
        if (response.status === 407 && proxy !== undefined) {
          throw makeError("proxy_error", {
            url: this.url,
            proxy: proxy.url,
            detail: proxyAnswered(407),
          });
        }
        const failure = (await this.statusError(response, exchange, this.url)) as APIStatusError;
        if (exchange.cancelled) return undefined;
        if (exchange.clock !== undefined) throw exchange.clockError(this.url);
        code = failure.code;
        if (this.adaptDialect(failure)) {
          this.log.debug(`HTTP ${failure.status} names a field the endpoint rejects: retrying`);
          payload = UTF8.encode(this.requestBody(messages, tools, callId));
          exchange.renew();
          continue;
        }
        const retryWait = retryWaitFor(failure, retries, config.maxRetries, budget);
        if (retryWait === undefined || (exchange.failover && retryWait > 0)) throw failure;
        wait = retryWait;
      }
      retries += 1;
      budget -= wait;
      if (this.log.debugOn) this.log.debug(`retry ${retries} in ${wait.toFixed(3)} s (${code})`);
      if (wait > 0) await exchange.sleep(wait * 1000);
      if (exchange.cancelled) return undefined;
      if (exchange.clock !== undefined) throw exchange.clockError(this.url);
      exchange.renew();
    }
  }

  /**
   * In "auto" mode, drop or rename a field a 400/422 names; true when the body changed. The choice
   * is kept on the instance (one base URL), so later turns send the working form.
   */
  private adaptDialect(error: APIStatusError): boolean {
    if (!DIALECT_STATUSES.has(error.status)) return false;
    const config = this.llmConfig;
    const text = error.body;
    let changed = false;
    if (
      config.streamOptions === "auto" &&
      this.sendStreamOptions &&
      (text.includes("stream_options") || text.includes("include_usage"))
    ) {
      this.sendStreamOptions = false;
      changed = true;
    }
    if (
      config.maxTokensField === "auto" &&
      config.maxTokens != null &&
      this.maxTokensKey === MAX_TOKENS_WIRE &&
      text.includes(MAX_TOKENS_WIRE)
    ) {
      this.maxTokensKey = "max_tokens";
      changed = true;
    }
    return changed;
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
      const ctx = sessionContext(callId, caller, callee);
      const key: unknown = resolveSessionKey(config, ctx);
      if (key) {
        const option = config.sessionKeyFactory !== undefined ? "sessionKeyFactory" : "sessionKey";
        if (typeof key !== "string") {
          // The value is not echoed: it may be the key.
          throw makeError("invalid_secret_type", { option, expected: "a string" });
        }
        if (HEADER_UNSAFE.test(key)) throw makeError("invalid_header_value", { option });
        if (key.length > SESSION_KEY_MAX_LENGTH) {
          throw makeError("too_long", {
            option,
            maximum: SESSION_KEY_MAX_LENGTH,
            length: key.length,
          });
        }
        setHeader(headers, config.sessionKeyHeader, key);
        sessionKey = key;
      }
    }
    // As UTF-8 bytes, as Python sends them: the transport writes header values as Latin-1 byte strings.
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
    };
    if (this.sendStreamOptions) body.stream_options = { include_usage: true };
    if (tools && tools.length > 0) body.tools = tools;
    for (const [field, key] of BODY_FIELDS) {
      const value = config[field];
      if (value !== undefined && value !== null) {
        body[key === MAX_TOKENS_WIRE ? this.maxTokensKey : key] = value;
      }
    }
    if (config.sessionUserPrefix && callId) body.user = config.sessionUserPrefix + callId;
    // Last: its keys override ours in place, new keys follow.
    if (config.extraBody) Object.assign(body, config.extraBody);
    return JSON.stringify(body);
  }

  /** A request that failed before any response: a timeout, or a connection error. */
  private transportError(err: unknown, exchange: Exchange, url: string): BrainlineError {
    const timeout = this.llmConfig.timeout;
    const call = exchange.call;
    if (exchange.clock !== undefined) return exchange.clockError(url);
    if (call !== undefined && (call.connectTimedOut || (exchange.timedOut && call.connecting))) {
      return makeError("connect_timeout", {
        url,
        timeout: Math.min(timeout, CONNECT_TIMEOUT_CAP),
        cause: err,
      });
    }
    if (exchange.timedOut) return makeError("read_timeout", { url, timeout, cause: err });
    if (err instanceof ProxyError) {
      return makeError("proxy_error", { url, proxy: err.proxy, detail: err.detail, cause: err });
    }
    return makeError("connection_error", { url, cause: err });
  }

  /**
   * A body read that failed after the headers: a timeout, the connection lost, or a compressed
   * body that does not decompress.
   */
  private bodyError(
    err: unknown,
    exchange: Exchange,
    url: string,
    state: TurnState,
  ): BrainlineError {
    if (exchange.clock !== undefined) return exchange.clockError(url);
    if (err instanceof CorruptBodyError) {
      return makeError("malformed", { detail: CORRUPT_BODY, partialText: state.text, cause: err });
    }
    if (exchange.timedOut) {
      return makeError("read_timeout", { url, timeout: this.llmConfig.timeout, cause: err });
    }
    return makeError("interrupted", { partialText: state.text, cause: err });
  }

  /** The error of a non-2xx answer, with at most ERROR_BODY_MAX_BYTES of its body. */
  private async statusError(
    response: Reply,
    exchange: Exchange,
    url: string,
  ): Promise<BrainlineError> {
    const parts: Uint8Array[] = [];
    let size = 0;
    const reader = response.body;
    if (reader === undefined) {
      exchange.finished = true;
    } else {
      try {
        while (size < ERROR_BODY_MAX_BYTES) {
          const chunk = await exchange.read(reader);
          if (chunk === undefined) {
            exchange.finished = true;
            break;
          }
          parts.push(chunk);
          size += chunk.byteLength;
        }
      } catch {
        // Keep what arrived: the status is what matters.
      }
    }
    const bytes = joined(parts, Math.min(size, ERROR_BODY_MAX_BYTES));
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
      retryAfter: parseRetryAfter(
        response.header("retry-after"),
        response.header("retry-after-ms"),
      ),
      requestId: requestIdOf(response),
    });
  }

  /** A whole 2xx JSON answer as text; undefined when cancelled meanwhile. */
  private async readWhole(
    reader: Body,
    exchange: Exchange,
    url: string,
    state: TurnState,
  ): Promise<string | undefined> {
    const parts: Uint8Array[] = [];
    let size = 0;
    for (;;) {
      let chunk: Uint8Array | undefined;
      try {
        chunk = await exchange.read(reader);
      } catch (err) {
        if (exchange.cancelled) return undefined;
        throw this.bodyError(err, exchange, url, state);
      }
      if (exchange.cancelled) return undefined;
      if (chunk === undefined) break;
      parts.push(chunk);
      size += chunk.byteLength;
      if (size > SSE_MAX_EVENT_BYTES) {
        throw makeError("too_large", { what: "event", limit: SSE_MAX_EVENT_BYTES });
      }
    }
    exchange.finished = true;
    return new TextDecoder().decode(joined(parts, size));
  }
}

/** The checks stream() runs on its arguments before anything is sent (FallbackLLM's too). */
export function checkCallArguments(
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
      // The caller's value is not echoed: it is a phone number.
      const code = option === "caller" ? "invalid_secret_type" : "invalid_type";
      throw makeError(code, { option, expected: "a string", value });
    }
  }
  if (typeof callId === "string" && HEADER_UNSAFE.test(callId)) {
    throw makeError("invalid_header_value", { option: "callId" });
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

function isJsonContentType(contentType: string | null): boolean {
  const type = (contentType ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
  return type === "application/json" || type.endsWith("+json");
}

/** A FallbackLLM's sink, then the endpoint's own onMetrics (a throw of the latter is logged). */
function both(
  sink: (metrics: TurnMetrics) => void,
  own: ((metrics: TurnMetrics) => void) | undefined,
): (metrics: TurnMetrics) => void {
  return own === undefined
    ? sink
    : (metrics) => {
        sink(metrics);
        own(metrics);
      };
}

/** The finish event gets the turn's metrics record (delivered to onMetrics now). */
function finished(meter: TurnMeter, state: TurnState, event: FinishEvent): void {
  (event as { metrics?: TurnMetrics }).metrics = meter.finish({
    usage: state.usageCounts(),
    finishReason: event.reason,
  });
}

function hasProgress(events: readonly Event[]): boolean {
  return events.some((event) => PROGRESS.has(event.type));
}

/**
 * Seconds to wait before retrying a status error; undefined: throw it now. A Retry-After beyond
 * what is left of the budget fails at once; without one the backoff is cut to what is left.
 */
function retryWaitFor(
  error: APIStatusError,
  retries: number,
  maxRetries: number,
  budget: number,
): number | undefined {
  if (!RETRY_STATUSES.has(error.status) || retries >= maxRetries) return undefined;
  if (error.retryAfter === undefined || error.retryAfter === null) {
    return Math.min(RETRY_BACKOFF * 2 ** retries, budget);
  }
  return error.retryAfter <= budget ? error.retryAfter : undefined;
}

/** `?k=v&...`, percent-encoded except RFC 3986 unreserved characters (space as %20). */
function queryString(params: Readonly<Record<string, string>> | undefined): string {
  const pairs = Object.entries(params ?? {});
  if (pairs.length === 0) return "";
  const encode = (text: string): string =>
    encodeURIComponent(text).replace(
      /[!'()*]/g,
      (char) => `%${char.charCodeAt(0).toString(16).toUpperCase()}`,
    );
  return `?${pairs.map(([key, value]) => `${encode(key)}=${encode(value)}`).join("&")}`;
}

/**
 * Retry-After as seconds: `retry-after-ms`, else a number of seconds or an HTTP date (0 when
 * already past).
 */
function parseRetryAfter(
  value: string | null,
  milliseconds: string | null = null,
): number | undefined {
  const ms = milliseconds?.trim();
  if (ms !== undefined && /^\d+(\.\d+)?$/.test(ms)) return Number(ms) / 1000;
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  const date = Date.parse(text);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, (date - Date.now()) / 1000);
}
