// Optional OpenTelemetry GenAI spans and metrics; python/src/brainline/_core/telemetry.py mirrors
// it. Off unless the `telemetry` option (unset: the env var TELEMETRY_ENV) turns it on; off, a turn
// costs one check of `BaseLLM.telemetry`. The main entry never loads @opentelemetry/api: a provider
// with telemetry on imports it dynamically, and without the package telemetry stays off.
//
// Each turn becomes one CLIENT span `chat {model}` on the global tracer provider and points of three
// histograms on the global meter provider, named as the GenAI semantic conventions v1.41.0 name them
// (the last release that holds them: later ones move and rename them, so the names are written down
// here, not imported from a semantic-conventions package). The span is made when the turn ends, from
// its metrics record, with the turn's start and end as explicit times and the context that was
// active when the turn started as its parent: nothing runs per chunk but noting the response id and
// model until both are seen (and, with content capture on, the reasoning and tool calls).

import type * as OTel from "@opentelemetry/api";
import { CAPTURE_CONTENT_ENV, TELEMETRY_ENV, VERSION } from "../generated/constants.js";
import type { LLMConfig } from "../generated/options.js";
import { TurnState } from "./chunks.js";
import { type Event, type ToolCallEvent, assembleToolCalls } from "./events.js";
import type { TurnMeter, TurnMetrics } from "./metrics.js";
import { readEnv } from "./validate.js";

// The GenAI semantic conventions, v1.41.0.
const SCOPE = "brainline";
const OPERATION = "chat";
export const OPERATION_NAME = "gen_ai.operation.name";
export const PROVIDER_NAME = "gen_ai.provider.name";
export const REQUEST_MODEL = "gen_ai.request.model";
export const REQUEST_STREAM = "gen_ai.request.stream";
export const REQUEST_TEMPERATURE = "gen_ai.request.temperature";
export const REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens";
export const REQUEST_TOP_P = "gen_ai.request.top_p";
export const REQUEST_FREQUENCY_PENALTY = "gen_ai.request.frequency_penalty";
export const REQUEST_PRESENCE_PENALTY = "gen_ai.request.presence_penalty";
export const REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences";
export const REQUEST_SEED = "gen_ai.request.seed";
export const RESPONSE_ID = "gen_ai.response.id";
export const RESPONSE_MODEL = "gen_ai.response.model";
export const RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons";
export const RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk";
export const USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens";
export const USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens";
export const USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens";
export const INPUT_MESSAGES = "gen_ai.input.messages";
export const OUTPUT_MESSAGES = "gen_ai.output.messages";
export const TOKEN_TYPE = "gen_ai.token.type";
export const SERVER_ADDRESS = "server.address";
export const SERVER_PORT = "server.port";
export const ERROR_TYPE = "error.type";
export const OPERATION_DURATION = "gen_ai.client.operation.duration";
export const TOKEN_USAGE = "gen_ai.client.token.usage";
export const TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk";
// brainline's own attributes.
export const TURN_CANCELLED = "brainline.turn.cancelled";
export const TURN_ATTEMPTS = "brainline.turn.attempts";
export const REQUEST_ID = "brainline.request_id";
/** The advised bucket boundaries (ExplicitBucketBoundaries advisory). */
export const DURATION_BUCKETS: readonly number[] = [
  0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
export const TOKEN_BUCKETS: readonly number[] = [
  1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
];

/** The request parameters recorded when set: LLMConfig field -> attribute. */
const REQUEST_PARAMETERS: readonly (readonly [keyof LLMConfig, string])[] = [
  ["temperature", REQUEST_TEMPERATURE],
  ["maxTokens", REQUEST_MAX_TOKENS],
  ["topP", REQUEST_TOP_P],
  ["frequencyPenalty", REQUEST_FREQUENCY_PENALTY],
  ["presencePenalty", REQUEST_PRESENCE_PENALTY],
  ["stop", REQUEST_STOP_SEQUENCES],
  ["seed", REQUEST_SEED],
];
const ON = new Set(["1", "true"]);
const CAPTURE_ON = new Set(["1", "true", "span_only", "span_and_event"]);
const DEFAULT_PORTS: Readonly<Record<string, number>> = { "http:": 80, "https:": 443 };

type Attributes = Record<string, OTel.AttributeValue>;
type Json = Record<string, unknown>;

function env(name: string): string {
  return (readEnv(name) ?? "").trim().toLowerCase();
}

/** The `telemetry` option; unset: TELEMETRY_ENV is "1" or "true" (any case). */
export function telemetryOn(option: boolean | undefined | null): boolean {
  return option ?? ON.has(env(TELEMETRY_ENV));
}

/**
 * The `captureMessageContent` option; unset: CAPTURE_CONTENT_ENV as the OpenTelemetry GenAI
 * instrumentations read it ("true", "span_only", "span_and_event"; "1" too).
 */
export function captureOn(option: boolean | undefined | null): boolean {
  return option ?? CAPTURE_ON.has(env(CAPTURE_CONTENT_ENV));
}

/**
 * The OpenTelemetry API, imported once, and the tracer and instruments of the global providers
 * (made again when a provider is set after them).
 */
class Api {
  private tracerOf: unknown = undefined;
  private cachedTracer: OTel.Tracer | undefined = undefined;
  private meterOf: unknown = undefined;
  private cachedInstruments: [OTel.Histogram, OTel.Histogram, OTel.Histogram] | undefined =
    undefined;

  constructor(readonly otel: typeof OTel) {}

  tracer(): OTel.Tracer {
    const provider = this.otel.trace.getTracerProvider();
    if (provider !== this.tracerOf || this.cachedTracer === undefined) {
      this.cachedTracer = provider.getTracer(SCOPE, VERSION);
      this.tracerOf = provider;
    }
    return this.cachedTracer;
  }

  /** (operation duration, token usage, time to first chunk) histograms. */
  instruments(): [OTel.Histogram, OTel.Histogram, OTel.Histogram] {
    const provider = this.otel.metrics.getMeterProvider();
    if (provider !== this.meterOf || this.cachedInstruments === undefined) {
      const meter = provider.getMeter(SCOPE, VERSION);
      const seconds = { explicitBucketBoundaries: [...DURATION_BUCKETS] };
      this.cachedInstruments = [
        meter.createHistogram(OPERATION_DURATION, {
          unit: "s",
          description: "GenAI operation duration.",
          advice: seconds,
        }),
        meter.createHistogram(TOKEN_USAGE, {
          unit: "{token}",
          description: "Number of input and output tokens used.",
          advice: { explicitBucketBoundaries: [...TOKEN_BUCKETS] },
        }),
        meter.createHistogram(TIME_TO_FIRST_CHUNK, {
          unit: "s",
          description: "Time to receive the first chunk in a streaming operation.",
          advice: seconds,
        }),
      ];
      this.meterOf = provider;
    }
    return this.cachedInstruments;
  }
}

let apiLoad: Promise<Api | undefined> | undefined;

/** The OpenTelemetry API, or undefined when it is not installed (said once, with console.warn). */
function load(): Promise<Api | undefined> {
  apiLoad ??= import("@opentelemetry/api").then(
    (otel) => new Api(otel),
    () => {
      console.warn(
        "brainline: telemetry is on but @opentelemetry/api is not installed: no spans or metrics",
      );
      return undefined;
    },
  );
  return apiLoad;
}

/** One provider's Telemetry when telemetry is on, else undefined (the import starts now). */
export function telemetryFor(providerName: string, config: LLMConfig): Telemetry | undefined {
  return telemetryOn(config.telemetry) ? new Telemetry(load(), providerName, config) : undefined;
}

/**
 * What every turn of one provider shares: the API, the request attributes (computed once) and
 * whether content is captured.
 */
export class Telemetry {
  readonly capture: boolean;
  readonly name: string;
  readonly reasoning: string;
  readonly metricAttributes: Attributes;
  readonly spanAttributes: Attributes;
  private api: Api | undefined = undefined;

  constructor(
    private readonly loading: Promise<Api | undefined>,
    providerName: string,
    config: LLMConfig,
  ) {
    this.capture = captureOn(config.captureMessageContent);
    this.reasoning = config.reasoning;
    this.name = `${OPERATION} ${config.model}`;
    let address = "";
    let port = 0;
    try {
      const url = new URL(config.baseUrl);
      address = url.hostname.replace(/^\[(.*)\]$/, "$1");
      port = url.port === "" ? (DEFAULT_PORTS[url.protocol] ?? 0) : Number(url.port);
    } catch {
      // A URL node cannot parse fails the turn itself; the span names no server.
    }
    const base: Attributes = {
      [OPERATION_NAME]: OPERATION,
      [PROVIDER_NAME]: providerName,
      [REQUEST_MODEL]: config.model,
      [SERVER_ADDRESS]: address,
      [SERVER_PORT]: port,
    };
    this.metricAttributes = base;
    const span: Attributes = { ...base };
    for (const [field, attribute] of REQUEST_PARAMETERS) {
      const value = config[field] as number | string | readonly string[] | null | undefined;
      if (value === null || value === undefined) continue;
      // One stop sequence or a list of them: always a list.
      if (typeof value === "number") span[attribute] = value;
      else span[attribute] = typeof value === "string" ? [value] : [...value];
    }
    span[REQUEST_STREAM] = true;
    this.spanAttributes = span;
  }

  /**
   * A turn starts: its TurnState (which notes the response id and model), and its trace on the
   * meter, ended by the meter's finish(). Awaits the import on the first turn only.
   */
  async start(meter: TurnMeter, messages: readonly object[]): Promise<TurnState> {
    if (this.api === undefined) this.api = await this.loading;
    const api = this.api;
    const state = new TracedTurnState(this.reasoning, this.capture);
    if (api !== undefined) {
      meter.trace = new TurnTrace(
        this,
        api,
        state,
        api.otel.context.active(),
        performance.timeOrigin + meter.start,
        this.capture ? messages : undefined,
      );
    }
    return state;
  }
}

/**
 * TurnState that also remembers the first response id and model the chunks carry and, when
 * content is captured, the reasoning and tool calls.
 */
class TracedTurnState extends TurnState {
  responseId: string | undefined = undefined;
  responseModel: string | undefined = undefined;
  idsPending = true;
  readonly calls: ToolCallEvent[] | undefined;
  readonly reasoningParts: string[] = [];

  constructor(reasoning: string, capture: boolean) {
    super(reasoning);
    this.calls = capture ? [] : undefined;
  }

  override feed(chunk: unknown): Event[] {
    if (this.idsPending && typeof chunk === "object" && chunk !== null && !Array.isArray(chunk)) {
      const { id, model } = chunk as { id?: unknown; model?: unknown };
      if (this.responseId === undefined && typeof id === "string" && id !== "") {
        this.responseId = id;
      }
      if (this.responseModel === undefined && typeof model === "string") {
        this.responseModel = model || undefined;
      }
      this.idsPending = this.responseId === undefined || this.responseModel === undefined;
    }
    const events = super.feed(chunk);
    if (this.calls !== undefined) this.collect(events);
    return events;
  }

  override finish(done: boolean): Event[] {
    const events = super.finish(done);
    if (this.calls !== undefined) this.collect(events);
    return events;
  }

  private collect(events: readonly Event[]): void {
    for (const event of events) {
      if (event.type === "reasoning") this.reasoningParts.push(event.content);
      else if (event.type === "tool_call") this.calls?.push(event);
    }
  }
}

/** One turn's span and metric points, made from its metrics record when the turn ends. */
export class TurnTrace {
  constructor(
    private readonly telemetry: Telemetry,
    private readonly api: Api,
    private readonly state: TracedTurnState,
    private readonly parent: OTel.Context,
    /** Epoch milliseconds (fractional). */
    private readonly startMs: number,
    private readonly messages: readonly object[] | undefined,
  ) {}

  /** Record the span and the metrics; never throws (telemetry never breaks a turn). */
  end(record: TurnMetrics): void {
    try {
      this.record(record);
    } catch (err) {
      console.warn(
        `brainline: telemetry failed: ${(err as Error)?.name ?? typeof err}; the turn goes on`,
      );
    }
  }

  private record(record: TurnMetrics): void {
    const { telemetry, api, state } = this;
    const attributes: Attributes = { ...telemetry.spanAttributes };
    const metricAttributes: Attributes = { ...telemetry.metricAttributes };
    if (state.responseId !== undefined) attributes[RESPONSE_ID] = state.responseId;
    if (state.responseModel !== undefined) {
      attributes[RESPONSE_MODEL] = state.responseModel;
      metricAttributes[RESPONSE_MODEL] = state.responseModel;
    }
    const finishReason = record.finish_reason;
    if (finishReason !== null) attributes[RESPONSE_FINISH_REASONS] = [finishReason];
    let inputTokens: number | undefined;
    let outputTokens: number | undefined;
    if (record.input_tokens !== null) {
      const cached = record.cache_read_tokens ?? 0;
      inputTokens = record.input_tokens + cached; // the convention counts cached tokens too
      outputTokens = record.output_tokens ?? 0;
      attributes[USAGE_INPUT_TOKENS] = inputTokens;
      attributes[USAGE_OUTPUT_TOKENS] = outputTokens;
      attributes[USAGE_CACHE_READ_INPUT_TOKENS] = cached;
    }
    const firstChunk = record.first_progress_ms;
    if (firstChunk !== null) attributes[RESPONSE_TIME_TO_FIRST_CHUNK] = firstChunk / 1000;
    attributes[TURN_ATTEMPTS] = record.attempts;
    if (record.request_id !== null) attributes[REQUEST_ID] = record.request_id;
    const tokenAttributes: Attributes = { ...metricAttributes };
    const errorCode = record.error_code;
    if (errorCode !== null) {
      attributes[ERROR_TYPE] = errorCode;
      metricAttributes[ERROR_TYPE] = errorCode;
    } else if (record.cancelled) {
      attributes[TURN_CANCELLED] = true;
      metricAttributes[TURN_CANCELLED] = true;
    }
    if (this.messages !== undefined) {
      attributes[INPUT_MESSAGES] = JSON.stringify(inputMessages(this.messages));
      if (finishReason !== null) {
        attributes[OUTPUT_MESSAGES] = JSON.stringify(outputMessages(state, finishReason));
      }
    }

    const otel = api.otel;
    const span = api
      .tracer()
      .startSpan(
        telemetry.name,
        { kind: otel.SpanKind.CLIENT, attributes, startTime: this.startMs },
        this.parent,
      );
    if (errorCode !== null) span.setStatus({ code: otel.SpanStatusCode.ERROR, message: errorCode });
    span.end(this.startMs + record.duration_ms);

    const [duration, tokens, first] = api.instruments();
    duration.record(record.duration_ms / 1000, metricAttributes);
    if (firstChunk !== null) first.record(firstChunk / 1000, metricAttributes);
    if (inputTokens !== undefined && outputTokens !== undefined) {
      tokens.record(inputTokens, { ...tokenAttributes, [TOKEN_TYPE]: "input" });
      tokens.record(outputTokens, { ...tokenAttributes, [TOKEN_TYPE]: "output" });
    }
  }
}

/** A message's content as GenAI parts: text as text, any other part by its type only. */
function textParts(content: unknown): Json[] {
  if (typeof content === "string") return content ? [{ type: "text", content }] : [];
  const parts: Json[] = [];
  if (Array.isArray(content)) {
    for (const part of content) {
      if (typeof part !== "object" || part === null || Array.isArray(part)) continue;
      const { type, text } = part as { type?: unknown; text?: unknown };
      if (type === "text" && typeof text === "string") parts.push({ type: "text", content: text });
      else parts.push({ type: typeof type === "string" ? type : "unknown" });
    }
  }
  return parts;
}

/** The chat messages in the GenAI input-messages shape (gen-ai-input-messages.json). */
function inputMessages(messages: readonly object[]): Json[] {
  return messages.map((message) => {
    const m = message as Json;
    if (m.role === "tool") {
      return {
        role: m.role,
        parts: [
          { type: "tool_call_response", id: m.tool_call_id ?? null, response: m.content ?? null },
        ],
      };
    }
    const parts = textParts(m.content);
    if (Array.isArray(m.tool_calls)) {
      for (const call of m.tool_calls) {
        if (typeof call !== "object" || call === null || Array.isArray(call)) continue;
        const c = call as Json;
        const fn = (
          typeof c.function === "object" && c.function !== null && !Array.isArray(c.function)
            ? c.function
            : {}
        ) as Json;
        parts.push({
          type: "tool_call",
          id: c.id ?? null,
          name: fn.name ?? null,
          arguments: fn.arguments ?? null,
        });
      }
    }
    return { role: m.role ?? null, parts };
  });
}

/** The answer in the GenAI output-messages shape (gen-ai-output-messages.json). */
function outputMessages(state: TracedTurnState, finishReason: string): Json[] {
  const parts: Json[] = [];
  const reasoning = state.reasoningParts.join("");
  if (reasoning) parts.push({ type: "reasoning", content: reasoning });
  const text = state.text;
  if (text) parts.push({ type: "text", content: text });
  for (const call of assembleToolCalls(state.calls ?? [])) {
    parts.push({ type: "tool_call", id: call.id, name: call.name, arguments: call.arguments });
  }
  return [{ role: "assistant", parts, finish_reason: finishReason }];
}
