// FallbackLLM: failover and hedged requests across endpoints; python/src/brainline/_core/fallback.py
// mirrors it. Each attempt is one endpoint's own public stream() with its own AbortController (an
// abort closes that attempt's connection at once). An attempt runs until its first progress event
// (text, a tool call or reasoning), a clean end, or an error; the first to get there decides the
// turn, and the caller then reads the winner's generator directly. docs/runtime.md ("FallbackLLM")
// is the contract.

import {
  type FallbackConfig,
  type FallbackOptions,
  buildFallbackConfig,
} from "../generated/fallback.js";
import {
  BaseLLM,
  FAILOVER,
  type InternalStreamOptions,
  METRICS_SINK,
  type StreamOptions,
  checkCallArguments,
} from "./client.js";
import {
  APIConnectionError,
  APIStatusError,
  APITimeoutError,
  BrainlineError,
  makeError,
} from "./errors.js";
import {
  type Event,
  type RouteEvent,
  type RouteFailure,
  type RouteReason,
  type Turn,
  collectTurn,
} from "./events.js";
import { type TurnMetrics, deliver, errorCodeOf } from "./metrics.js";

/** FallbackLLM's private hook for a failed attempt (core only). */
const FAILED: unique symbol = Symbol("brainline.fallback.failed");

const PROGRESS = new Set<string>(["text", "tool_call", "reasoning"]);
const INSPECT = Symbol.for("nodejs.util.inspect.custom");

/** A failure that says the endpoint is down or overloaded: a connection error, a timeout, 429, 5xx. */
function coolsDown(error: BrainlineError): boolean {
  if (error instanceof APIConnectionError || error instanceof APITimeoutError) return true;
  return error instanceof APIStatusError && (error.status === 429 || error.status >= 500);
}

/** One endpoint's try at the turn: its stream, its AbortController, what it yielded so far. */
class Attempt {
  readonly controller = new AbortController();
  readonly started = performance.now();
  /** The endpoint's own record, once its stream ended. */
  record: TurnMetrics | undefined = undefined;
  /** Events up to and including the first progress event. */
  readonly held: Event[] = [];
  /** The stream ended (a clean end, or quietly when aborted). */
  done = false;
  /** Lost the race, or the turn ended: its report does not count. */
  cancelled = false;
  /** The race has read its report. */
  reported = false;
  events: AsyncGenerator<Event, void, undefined> | undefined = undefined;
  run: Promise<void> | undefined = undefined;

  constructor(
    readonly endpoint: number,
    readonly reason: RouteReason,
  ) {}
}

/** What an attempt (or the hedge timer, or the barge-in) tells the race. */
type Message =
  | { readonly kind: "cancel" }
  | { readonly kind: "hedge" }
  | { readonly kind: "settled"; readonly attempt: Attempt; readonly error: unknown };

/** The attempts of one turn, until one wins, and their clean-up. */
class Race {
  readonly started = performance.now();
  private next = 0;
  readonly attempts: Attempt[] = [];
  private readonly failures: [Attempt, BrainlineError][] = [];
  private hedged = false;
  private readonly inbox: Message[] = [];
  private wake: (() => void) | undefined = undefined;
  private hedgeTimer: ReturnType<typeof setTimeout> | undefined = undefined;

  constructor(
    private readonly owner: FallbackLLM,
    private readonly llms: readonly BaseLLM[],
    private readonly order: readonly number[],
    private readonly messages: readonly object[],
    private readonly tools: readonly object[] | null | undefined,
    private readonly options: StreamOptions,
  ) {
    options.signal?.addEventListener("abort", this.cancel);
  }

  private readonly cancel = (): void => {
    for (const attempt of this.attempts) attempt.controller.abort();
    this.post({ kind: "cancel" });
  };

  private post(message: Message): void {
    this.inbox.push(message);
    this.wake?.();
  }

  private async take(): Promise<Message> {
    while (this.inbox.length === 0) {
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = undefined;
    }
    return this.inbox.shift() as Message;
  }

  /** Start the next endpoint's attempt; the last one left keeps its own retries. */
  start(reason: RouteReason): void {
    const position = this.next;
    this.next += 1;
    const attempt = new Attempt(this.order[position] as number, reason);
    if (this.options.signal?.aborted) attempt.controller.abort();
    const { callId, caller, callee } = this.options;
    const options: InternalStreamOptions = {
      signal: attempt.controller.signal,
      callId,
      caller,
      callee,
      [FAILOVER]: position < this.order.length - 1,
      [METRICS_SINK]: (record) => {
        attempt.record = record;
      },
    };
    attempt.events = (this.llms[attempt.endpoint] as BaseLLM).stream(
      this.messages,
      this.tools,
      options,
    );
    attempt.run = this.read(attempt);
    this.attempts.push(attempt);
    const hedgeAfter = this.owner.config.hedgeAfter;
    if (hedgeAfter !== undefined && !this.hedged && this.next < this.order.length) {
      if (this.hedgeTimer !== undefined) clearTimeout(this.hedgeTimer);
      this.hedgeTimer = setTimeout(() => {
        this.hedgeTimer = undefined;
        this.post({ kind: "hedge" });
      }, hedgeAfter * 1000);
    }
  }

  /** Read the attempt up to its first progress event, its end or its error; then report. */
  private async read(attempt: Attempt): Promise<void> {
    const events = attempt.events as AsyncGenerator<Event, void, undefined>;
    try {
      for (;;) {
        const result = await events.next();
        if (result.done) {
          attempt.done = true;
          break;
        }
        attempt.held.push(result.value);
        if (PROGRESS.has(result.value.type)) break;
      }
    } catch (error) {
      this.post({ kind: "settled", attempt, error });
      return;
    }
    this.post({ kind: "settled", attempt, error: undefined });
  }

  private running(): boolean {
    return this.attempts.some((a) => !a.cancelled && !a.reported);
  }

  /** The attempt that made progress (or ended cleanly) first; undefined when cancelled. */
  async winner(): Promise<Attempt | undefined> {
    this.start("primary");
    for (;;) {
      const message = await this.take();
      if (message.kind === "cancel") return undefined;
      if (message.kind === "hedge") {
        if (!this.hedged && this.next < this.order.length) {
          this.hedged = true;
          this.start("hedge");
        }
        continue;
      }
      const { attempt, error } = message;
      if (attempt.cancelled) continue;
      attempt.reported = true;
      if (error === undefined) {
        if (attempt.done && this.options.signal?.aborted) return undefined;
        this.stopHedgeTimer();
        for (const other of this.attempts) {
          if (other !== attempt) {
            other.cancelled = true;
            other.controller.abort();
          }
        }
        return attempt;
      }
      if (!(error instanceof BrainlineError)) throw error;
      this.failures.push([attempt, error]);
      this.owner[FAILED](attempt.endpoint, error);
      if (this.next < this.order.length) this.start("failover");
      else if (!this.running()) this.allFailed();
    }
  }

  private inStartOrder(): [Attempt, BrainlineError][] {
    return [...this.failures].sort(
      ([a], [b]) => this.attempts.indexOf(a) - this.attempts.indexOf(b),
    );
  }

  private allFailed(): never {
    const errors = this.inStartOrder().map(([, error]) => error);
    throw makeError("all_endpoints_failed", {
      detail: errors.map((error) => error.code).join(", "),
      errors,
    });
  }

  route(winner: Attempt): RouteEvent {
    const failed: RouteFailure[] = this.inStartOrder().map(([attempt, error]) => ({
      endpoint: attempt.endpoint,
      code: error.code,
    }));
    return {
      type: "route",
      endpoint: winner.endpoint,
      provider: (this.llms[winner.endpoint] as BaseLLM).providerKey,
      reason: winner.reason,
      failed,
    };
  }

  /**
   * The turn's record: the deciding attempt's own, its times from the start of the race,
   * `endpoint` its index and `attempts` the requests of every attempt (one for an attempt whose
   * record has not come: it was cancelled as it started).
   */
  metrics(
    decider: Attempt | undefined,
    end: { finished?: boolean; errorCode?: string | null } = {},
  ): TurnMetrics {
    const own = decider?.record;
    const offset = decider === undefined ? 0 : decider.started - this.started;
    const shifted = (value: number | null | undefined): number | null =>
      value === null || value === undefined ? null : Math.round((value + offset) * 1000) / 1000;
    const endpoint = decider?.endpoint ?? 0;
    const llm = this.llms[endpoint] as BaseLLM;
    const finished = end.finished === true;
    const errorCode = end.errorCode ?? null;
    return {
      provider: llm.providerKey,
      model: llm.config.model,
      endpoint,
      request_id: own?.request_id ?? null,
      attempts: this.attempts.reduce((sum, a) => sum + (a.record?.attempts ?? 1), 0),
      headers_ms: shifted(own?.headers_ms),
      first_progress_ms: shifted(own?.first_progress_ms),
      first_text_ms: shifted(own?.first_text_ms),
      duration_ms: Math.round((performance.now() - this.started) * 1000) / 1000,
      chunks: own?.chunks ?? 0,
      input_tokens: own?.input_tokens ?? null,
      output_tokens: own?.output_tokens ?? null,
      cache_read_tokens: own?.cache_read_tokens ?? null,
      finish_reason: finished ? (own?.finish_reason ?? null) : null,
      error_code: errorCode,
      cancelled: !finished && errorCode === null,
    };
  }

  private stopHedgeTimer(): void {
    if (this.hedgeTimer !== undefined) clearTimeout(this.hedgeTimer);
    this.hedgeTimer = undefined;
  }

  /** Abort every attempt still open, wait for their reads, close their streams. */
  async close(): Promise<void> {
    this.stopHedgeTimer();
    this.options.signal?.removeEventListener("abort", this.cancel);
    for (const attempt of this.attempts) attempt.controller.abort();
    await Promise.allSettled(this.attempts.map((attempt) => attempt.run));
    for (const attempt of this.attempts) await attempt.events?.return(undefined);
  }
}

/**
 * Several endpoints as one: failover, optional hedged requests, and a cooldown per endpoint.
 *
 * Endpoints are tried in the given order, skipping those cooling down. An error before the turn's
 * first event starts the next endpoint at once (a ConfigError from the call's own arguments is
 * thrown). With `hedgeAfter`, an attempt without progress after that many seconds gets the next
 * endpoint started beside it; the first to make progress wins and the other is closed. Every turn
 * starts with a `route` event; when every attempt failed, AllEndpointsFailedError carries their
 * errors. docs/runtime.md ("FallbackLLM") is the contract.
 *
 * @throws {ConfigError} `llms` is not a non-empty list of providers, or an option is out of range.
 */
export class FallbackLLM {
  readonly #llms: readonly BaseLLM[];
  readonly #config: FallbackConfig;
  /** performance.now() deadlines, in ms. */
  readonly #coolingUntil: number[];

  constructor(llms: readonly BaseLLM[], options: FallbackOptions = {}) {
    if (
      !Array.isArray(llms) ||
      llms.length === 0 ||
      !llms.every((llm: unknown) => llm instanceof BaseLLM)
    ) {
      throw makeError("invalid_llms");
    }
    this.#config = buildFallbackConfig(options);
    this.#llms = Object.freeze([...llms]);
    this.#coolingUntil = llms.map(() => 0);
  }

  /** The endpoints, in order of preference. */
  get llms(): readonly BaseLLM[] {
    return this.#llms;
  }

  /** The resolved options (read-only). */
  get config(): FallbackConfig {
    return this.#config;
  }

  /** Endpoints' providers and models only: never their keys. */
  toJSON(): { llms: { provider: string; model: string | undefined }[] } & FallbackConfig {
    return {
      llms: this.#llms.map((llm) => ({ provider: llm.providerKey, model: llm.config.model })),
      ...this.#config,
    };
  }

  [INSPECT](): string {
    const endpoints = this.#llms.map((llm) => `${llm.providerKey}:${llm.config.model}`).join(", ");
    const { hedgeAfter, cooldown } = this.#config;
    return `FallbackLLM([${endpoints}], hedgeAfter=${hedgeAfter}, cooldown=${cooldown})`;
  }

  private order(): number[] {
    const now = performance.now();
    const ready: number[] = [];
    this.#coolingUntil.forEach((until, i) => {
      if (until <= now) ready.push(i);
    });
    return ready.length > 0 ? ready : this.#llms.map((_, i) => i);
  }

  /** @internal */
  [FAILED](endpoint: number, error: BrainlineError): void {
    if (coolsDown(error) && this.#config.cooldown > 0) {
      this.#coolingUntil[endpoint] = performance.now() + this.#config.cooldown * 1000;
    }
  }

  /**
   * Stream one turn from the first endpoint that answers: a `route` event, then the winner's events
   * as its own stream() yields them. Aborting `signal` aborts every attempt (each connection closed)
   * and ends the iteration quietly. Throws ConfigError for bad call arguments (before anything is
   * sent), AllEndpointsFailedError when every attempt failed before the first event, and the
   * winner's own error when it fails later.
   */
  async *stream(
    messages: readonly object[],
    tools?: readonly object[] | null,
    options: StreamOptions = {},
  ): AsyncGenerator<Event, void, undefined> {
    const opts = options ?? {};
    const { signal, callId, caller, callee } = opts;
    checkCallArguments(messages, tools, callId, caller, callee);
    if (signal?.aborted) {
      // No attempt, no listener: a record of a turn cancelled before it started.
      this.deliver(new Race(this, this.#llms, [], messages, tools, {}).metrics(undefined));
      return;
    }
    const race = new Race(this, this.#llms, this.order(), messages, tools, opts);
    let winner: Attempt | undefined;
    let record: TurnMetrics | undefined;
    let errorCode: string | null = null;
    try {
      winner = await race.winner();
      if (winner === undefined) return;
      this.#coolingUntil[winner.endpoint] = 0;
      for (const event of [race.route(winner), ...winner.held]) {
        if (signal?.aborted) return; // a barge-in as the race ended: nothing more, not the route
        if (event.type === "finish") {
          record = this.finished(race, winner);
          yield { ...event, metrics: record };
        } else {
          yield event;
        }
      }
      if (!winner.done && winner.events !== undefined) {
        for await (const event of winner.events) {
          if (event.type === "finish") {
            record = this.finished(race, winner);
            yield { ...event, metrics: record };
          } else {
            yield event;
          }
        }
      }
    } catch (err) {
      errorCode = errorCodeOf(err);
      throw err;
    } finally {
      await race.close();
      if (record === undefined) {
        // Failed or cancelled: a finished turn delivered its record.
        const decider =
          winner ?? (errorCode !== null ? race.attempts.at(-1) : undefined) ?? race.attempts[0];
        this.deliver(race.metrics(decider, { errorCode }));
      }
    }
  }

  /** The turn's record for the winner's finish event (delivered now). */
  private finished(race: Race, winner: Attempt): TurnMetrics {
    const record = race.metrics(winner, { finished: true });
    this.deliver(record);
    return record;
  }

  private deliver(record: TurnMetrics): void {
    deliver(this.#config.onMetrics, record);
  }

  /**
   * Run one turn to its end and return it assembled (the route event is not part of it);
   * finishReason is null when cancelled.
   */
  async complete(
    messages: readonly object[],
    tools?: readonly object[] | null,
    options: StreamOptions = {},
  ): Promise<Turn> {
    return collectTurn(this.stream(messages, tools, options));
  }

  /** Warm every endpoint at once (each GET {baseUrl}/models). Never throws. */
  async warmup(): Promise<void> {
    await Promise.all(this.#llms.map((llm) => llm.warmup()));
  }

  /** Close every endpoint (their running turns end as if cancelled). */
  async close(): Promise<void> {
    await Promise.all(this.#llms.map((llm) => llm.close()));
  }
}
