import type { TurnMetrics } from "./metrics.js";

/** Streamed text meant for the listener. */
export interface TextEvent {
  readonly type: "text";
  readonly content: string;
}

/** One tool-call delta as it arrived; `index` is always an integer (assigned when missing). */
export interface ToolCallEvent {
  readonly type: "tool_call";
  readonly index: number;
  readonly id: string | null;
  readonly name: string | null;
  readonly arguments: string;
}

/** Model reasoning, never mixed into the text. */
export interface ReasoningEvent {
  readonly type: "reasoning";
  readonly content: string;
}

/**
 * A named server event that is not a chunk (`event: hermes.tool.progress`): never text. `data` is
 * the event's data parsed as JSON, or the string itself when it is not JSON.
 */
export interface ProgressEvent {
  readonly type: "progress";
  readonly event: string;
  readonly data: unknown;
}

/** Token counts of the turn: the last usage the server sent; input_tokens excludes cached ones. */
export interface UsageEvent {
  readonly type: "usage";
  readonly input_tokens: number;
  readonly output_tokens: number;
  readonly cache_read_tokens: number;
}

export type FinishReason =
  | "stop"
  | "length"
  | "tool_calls"
  | "content_filter"
  | "error"
  | "other"
  | "truncated";

/** The last event of every turn that was neither cancelled nor failed. */
export interface FinishEvent {
  readonly type: "finish";
  readonly reason: FinishReason;
  /** The turn's metrics record (the one onMetrics gets). */
  readonly metrics?: TurnMetrics;
}

/** How the winning attempt of a FallbackLLM turn started. */
export type RouteReason = "primary" | "hedge" | "failover";

/** An attempt of a FallbackLLM turn that failed before the winner's first event. */
export interface RouteFailure {
  readonly endpoint: number;
  readonly code: string;
}

/**
 * The first event of every FallbackLLM turn (plain providers never emit it): the endpoint that
 * answers (its index in the FallbackLLM's list and its provider key), how its attempt started (the
 * first attempt, by the hedge timer, or because the attempts before it failed), and the attempts
 * that failed before it, in the order they started.
 */
export interface RouteEvent {
  readonly type: "route";
  readonly endpoint: number;
  readonly provider: string;
  readonly reason: RouteReason;
  readonly failed: readonly RouteFailure[];
}

/** Everything stream() yields; the keys are the same as in Python. */
export type Event =
  | TextEvent
  | ToolCallEvent
  | ReasoningEvent
  | ProgressEvent
  | UsageEvent
  | FinishEvent
  | RouteEvent;

/** A complete tool call: the deltas of one index joined. */
export interface ToolCall {
  readonly index: number;
  readonly id: string | null;
  readonly name: string | null;
  readonly arguments: string;
}

export interface Usage {
  readonly inputTokens: number;
  readonly outputTokens: number;
  readonly cacheReadTokens: number;
}

/** What complete() returns: the turn assembled from its events. */
export interface Turn {
  readonly text: string;
  readonly reasoning: string;
  readonly toolCalls: ToolCall[];
  readonly usage: Usage | null;
  /** null when the turn was cancelled. */
  readonly finishReason: FinishReason | null;
}

/**
 * Complete tool calls from tool_call events, by index (ascending): the first non-empty id, the
 * first non-empty name (a name repeated in later deltas is not doubled), the arguments joined.
 */
/**
 * A whole turn from its events: what `complete()` returns (a route event is not part of it);
 * finishReason is null when the turn was cancelled.
 */
export async function collectTurn(events: AsyncIterable<Event>): Promise<Turn> {
  let text = "";
  let reasoning = "";
  const calls: ToolCallEvent[] = [];
  let usage: Usage | null = null;
  let finishReason: Turn["finishReason"] = null;
  for await (const event of events) {
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

export function assembleToolCalls(events: Iterable<Event>): ToolCall[] {
  const calls = new Map<
    number,
    { index: number; id: string | null; name: string | null; arguments: string }
  >();
  for (const event of events) {
    if (event.type !== "tool_call") continue;
    const call = calls.get(event.index);
    if (call === undefined) {
      calls.set(event.index, {
        index: event.index,
        id: event.id || null,
        name: event.name || null,
        arguments: event.arguments,
      });
    } else {
      if (!call.id && event.id) call.id = event.id;
      if (!call.name && event.name) call.name = event.name;
      call.arguments += event.arguments;
    }
  }
  return [...calls.values()].sort((a, b) => a.index - b.index);
}
