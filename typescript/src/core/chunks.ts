import { type StreamError, makeError } from "./errors.js";
import type { FinishReason, Event, ToolCallEvent } from "./events.js";

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function count(value: unknown): number {
  return typeof value === "number" && Number.isFinite(value) ? value : 0;
}

const FINISH_REASONS: Readonly<Record<string, FinishReason>> = {
  stop: "stop",
  end_turn: "stop",
  eos: "stop",
  stop_sequence: "stop",
  length: "length",
  max_tokens: "length",
  tool_calls: "tool_calls",
  function_call: "tool_calls",
  content_filter: "content_filter",
  error: "error",
};

/** The state of one turn: parsed chunks in, events out; the usage and finish events at the end. */
export class TurnState {
  /** The text streamed so far (what a StreamError carries). */
  text = "";
  private finishReason: string | undefined = undefined;
  private usage: JsonObject | undefined = undefined;
  private sawToolCalls = false;
  /** Slots of tool calls: index -> the first id and name seen for it. */
  private readonly slots = new Map<number, { id: string | null; name: string | null }>();
  private lastIndex: number | undefined = undefined;
  private nextIndex = 0;

  /** The events of one parsed chunk: reasoning, text, tool calls; remembers finish and usage. */
  feed(chunk: unknown): Event[] {
    if (!isObject(chunk)) return [];
    if (chunk.error !== undefined && chunk.error !== null) throw this.serverError(chunk.error);
    const events: Event[] = [];
    const choices = chunk.choices;
    const choice = Array.isArray(choices) ? choices[0] : undefined;
    if (isObject(choice)) {
      const delta = choice.delta;
      if (isObject(delta)) {
        const reasoning = nonEmpty(delta.reasoning_content) ?? nonEmpty(delta.reasoning);
        if (reasoning !== undefined) events.push({ type: "reasoning", content: reasoning });
        const content = nonEmpty(delta.content);
        if (content !== undefined) {
          this.text += content;
          events.push({ type: "text", content });
        }
        if (Array.isArray(delta.tool_calls)) {
          for (const call of delta.tool_calls) {
            if (isObject(call)) events.push(this.toolCall(call));
          }
        }
      }
      if (typeof choice.finish_reason === "string") this.finishReason = choice.finish_reason;
    }
    if (isObject(chunk.usage)) this.usage = chunk.usage;
    return events;
  }

  /** The closing events: one usage event if any usage was seen, then the finish event. */
  finish(done: boolean): Event[] {
    const events: Event[] = [];
    if (this.usage !== undefined) {
      const details = this.usage.prompt_tokens_details;
      const cached = isObject(details) ? count(details.cached_tokens) : 0;
      events.push({
        type: "usage",
        input_tokens: Math.max(0, count(this.usage.prompt_tokens) - cached),
        output_tokens: count(this.usage.completion_tokens),
        cache_read_tokens: cached,
      });
    }
    let reason: FinishReason;
    if (this.finishReason !== undefined) {
      reason = FINISH_REASONS[this.finishReason] ?? "other";
      if (this.sawToolCalls && (reason === "stop" || reason === "other")) reason = "tool_calls";
    } else if (done) {
      reason = this.sawToolCalls ? "tool_calls" : "stop";
    } else {
      reason = "truncated";
    }
    events.push({ type: "finish", reason });
    return events;
  }

  /** StreamError server_error with the server's message and the text so far. */
  serverError(error: unknown): StreamError {
    const detail =
      isObject(error) && typeof error.message === "string" ? error.message : JSON.stringify(error);
    return makeError("server_error", { detail, partialText: this.text }) as StreamError;
  }

  private toolCall(call: JsonObject): ToolCallEvent {
    const fn = isObject(call.function) ? call.function : {};
    const id = typeof call.id === "string" ? call.id : null;
    const name = typeof fn.name === "string" ? fn.name : null;
    const args = fn.arguments;
    let index: number;
    if (typeof call.index === "number" && Number.isInteger(call.index)) {
      index = call.index;
    } else {
      // No index (Ollama, Gemini, SGLang...): a new slot when the id or name changes.
      const last = this.lastIndex === undefined ? undefined : this.slots.get(this.lastIndex);
      const isNew =
        last === undefined ||
        (id && last.id && id !== last.id) ||
        (name && last.name && name !== last.name);
      index = isNew || this.lastIndex === undefined ? this.nextIndex : this.lastIndex;
    }
    const slot = this.slots.get(index);
    if (slot === undefined) {
      this.slots.set(index, { id: id || null, name: name || null });
    } else {
      if (!slot.id && id) slot.id = id;
      if (!slot.name && name) slot.name = name;
    }
    this.lastIndex = index;
    if (index >= this.nextIndex) this.nextIndex = index + 1;
    this.sawToolCalls = true;
    return {
      type: "tool_call",
      index,
      id,
      name,
      arguments:
        typeof args === "string"
          ? args
          : args === undefined || args === null
            ? ""
            : JSON.stringify(args),
    };
  }
}

function nonEmpty(value: unknown): string | undefined {
  return typeof value === "string" && value !== "" ? value : undefined;
}

/**
 * A whole `chat.completion` object (a 2xx JSON answer) as the one chunk a stream would have sent:
 * its message becomes the delta, each tool call keeping its position as index.
 */
export function completionToChunk(body: unknown): unknown {
  if (!isObject(body)) return body;
  const choices = body.choices;
  const choice = Array.isArray(choices) ? choices[0] : undefined;
  if (!isObject(choice)) return { ...body, choices: [] };
  const message = isObject(choice.message) ? choice.message : {};
  const delta: JsonObject = { ...message };
  if (Array.isArray(message.tool_calls)) {
    delta.tool_calls = message.tool_calls.map((call: unknown, index) =>
      isObject(call) ? { ...call, index } : call,
    );
  }
  return { ...body, choices: [{ delta, finish_reason: choice.finish_reason }] };
}
