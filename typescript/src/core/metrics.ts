// The per-turn metrics record and `onMetrics`; python/src/brainline/_core/metrics.py mirrors it.
// Every turn, finished, failed or cancelled, gives one record: a plain object with the same keys
// in both languages (METRICS_KEYS). Times are milliseconds from the start of the turn, null when
// the moment never came. A finished turn's record also rides on its finish event as `metrics`.

import { REQUEST_ID_HEADERS } from "../generated/constants.js";
import type { TurnTrace } from "./telemetry.js";
import { BrainlineError } from "./errors.js";
import { type Log, envLog, outcomeLine } from "./log.js";

/** One turn's metrics record (`onMetrics`, and `metrics` on the finish event). */
export interface TurnMetrics {
  provider: string;
  model: string;
  endpoint: number;
  request_id: string | null;
  attempts: number;
  headers_ms: number | null;
  first_progress_ms: number | null;
  first_text_ms: number | null;
  duration_ms: number;
  chunks: number;
  input_tokens: number | null;
  output_tokens: number | null;
  cache_read_tokens: number | null;
  finish_reason: string | null;
  error_code: string | null;
  cancelled: boolean;
}

export const METRICS_KEYS: readonly (keyof TurnMetrics)[] = [
  "provider",
  "model",
  "endpoint",
  "request_id",
  "attempts",
  "headers_ms",
  "first_progress_ms",
  "first_text_ms",
  "duration_ms",
  "chunks",
  "input_tokens",
  "output_tokens",
  "cache_read_tokens",
  "finish_reason",
  "error_code",
  "cancelled",
];

const REQUEST_ID_NAMES = REQUEST_ID_HEADERS.split(",");

/** An answer's headers (the transport's Reply). */
export interface HeaderSource {
  header(name: string): string | null;
}

/** The request id an answer's headers carry (REQUEST_ID_HEADERS, first found), else null. */
export function requestIdOf(reply: HeaderSource): string | null {
  for (const name of REQUEST_ID_NAMES) {
    const value = reply.header(name);
    if (value) return value;
  }
  return null;
}

const ms = (at: number | null, start: number): number | null =>
  at === null ? null : Math.round((at - start) * 1000) / 1000;

/** How a turn ended, for its record. */
export interface TurnEnd {
  readonly usage?: readonly [number, number, number] | null | undefined;
  readonly finishReason?: string | null | undefined;
  readonly errorCode?: string | null | undefined;
  readonly cancelled?: boolean | undefined;
}

/**
 * The moments and counts of one turn, turned into its record once, when the turn ends. The
 * runtime notes what happens (`answered`, `progressed`, `chunks`, `attempts`); `finish` builds and
 * delivers the record. Costs a clock read per moment, never per event.
 */
export class TurnMeter {
  readonly start = performance.now();
  attempts = 0;
  chunks = 0;
  headersAt: number | null = null;
  progressAt: number | null = null;
  textAt: number | null = null;
  requestId: string | null = null;
  record: TurnMetrics | undefined = undefined;
  /** OpenTelemetry (telemetry.ts), when on. */
  trace: TurnTrace | undefined = undefined;

  constructor(
    readonly provider: string,
    readonly model: string,
    readonly callback: ((metrics: TurnMetrics) => void) | undefined,
    readonly endpoint = 0,
    private readonly log: Log = envLog(),
  ) {}

  /** An attempt's response headers arrived (any status). */
  answered(reply: HeaderSource): void {
    this.headersAt = performance.now();
    this.requestId = requestIdOf(reply);
  }

  /** A chunk made progress; called until the first text has come. */
  progressed(events: readonly { readonly type: string }[]): void {
    const now = performance.now();
    if (this.progressAt === null) this.progressAt = now;
    if (events.some((event) => event.type === "text")) this.textAt = now;
  }

  /** The record (built once: later calls return the first), delivered to onMetrics. */
  finish(end: TurnEnd = {}): TurnMetrics {
    if (this.record !== undefined) return this.record;
    const start = this.start;
    const usage = end.usage ?? null;
    const record: TurnMetrics = {
      provider: this.provider,
      model: this.model,
      endpoint: this.endpoint,
      request_id: this.requestId,
      attempts: this.attempts,
      headers_ms: ms(this.headersAt, start),
      first_progress_ms: ms(this.progressAt, start),
      first_text_ms: ms(this.textAt, start),
      duration_ms: Math.round((performance.now() - start) * 1000) / 1000,
      chunks: this.chunks,
      input_tokens: usage === null ? null : usage[0],
      output_tokens: usage === null ? null : usage[1],
      cache_read_tokens: usage === null ? null : usage[2],
      finish_reason: end.finishReason ?? null,
      error_code: end.errorCode ?? null,
      cancelled: end.cancelled ?? false,
    };
    this.record = record;
    if (this.trace !== undefined) this.trace.end(record);
    if (this.log.infoOn) this.log.info(outcomeLine(record));
    deliver(this.callback, record, this.log);
    return record;
  }
}

/** Hand a record to onMetrics: a callback that throws is logged, never breaks the turn. */
export function deliver(
  callback: ((metrics: TurnMetrics) => void) | undefined,
  record: TurnMetrics,
  log: Log = envLog(),
): void {
  if (callback === undefined) return;
  try {
    callback(record);
  } catch (err) {
    log.warn(`onMetrics threw ${(err as Error)?.name ?? typeof err}; the turn goes on`);
  }
}

/** What a record says a turn failed with: the brainline code, else the error's class. */
export function errorCodeOf(err: unknown): string {
  if (err instanceof BrainlineError) return err.code;
  return err instanceof Error ? err.name : typeof err;
}
