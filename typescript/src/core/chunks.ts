import { type StreamError, makeError } from "./errors.js";
import type { FinishReason, Event, ProgressEvent, ToolCallEvent } from "./events.js";

type JsonObject = Record<string, unknown>;

/** A JSON object: not null, not an array. */
export function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** JSON's whitespace, the same in both languages. */
const LEADING_BLANK = /^[ \t\r\n]+/;
const OPEN = "<think>";
const CLOSE = "</think>";

/** How many characters at the end of buf could be the start of tag (0 when none). */
function heldBack(buf: string, tag: string): number {
  const at = buf.lastIndexOf("<");
  return at >= 0 && at > buf.length - tag.length && tag.startsWith(buf.slice(at))
    ? buf.length - at
    : 0;
}

/** The text of `reasoning_details` (DeepSeek V3.2, OpenRouter): a list of objects with `text`. */
function detailsText(details: unknown): string | undefined {
  if (!Array.isArray(details)) return undefined;
  let text = "";
  for (const item of details) {
    if (isObject(item) && typeof item.text === "string") text += item.text;
  }
  return text || undefined;
}

/** Blank data, or data starting with `:` (`data: : keepalive` from proxies): not a chunk. */
function keepAlive(data: string): boolean {
  const stripped = data.replace(LEADING_BLANK, "");
  return stripped === "" || stripped[0] === ":";
}

/** Text pieces joined into one string at a time (TurnState.text). */
const TEXT_SEGMENT = 64;

/** At most max code points of text (Python slices strings the same way). */
export function cut(text: string, max: number): string {
  if (text.length <= max) return text;
  let out = "";
  let n = 0;
  for (const char of text) {
    if (n++ === max) break;
    out += char;
  }
  return out;
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
  /**
   * The text streamed so far, in pieces (`text` joins them). Every TEXT_SEGMENT pieces become one
   * string: a long turn then keeps a few long strings alive instead of thousands of small ones,
   * which the collector would copy from the young generation to the old one.
   */
  private parts: string[] = [];
  private segments: string[] = [];
  private finishReason: string | undefined = undefined;
  private usage: JsonObject | undefined = undefined;
  private sawToolCalls = false;
  /** Slots of tool calls: index -> the first id and name seen for it. */
  private readonly slots = new Map<number, { id: string | null; name: string | null }>();
  private lastIndex: number | undefined = undefined;
  private nextIndex = 0;
  private readonly emitReasoning: boolean;
  /** Reasoning dropped since the last takeDropped(): still progress. */
  private dropped = false;
  // <think> blocks in content: inside one, the content held back because it may be the start of
  // a tag, and whether no content came yet (a leading stray </think> then ends reasoning).
  private think = false;
  private held = "";
  private fresh = true;
  /** Outside a block with nothing held: content without "<" is plain text. */
  private plain = true;

  /** The text streamed so far (what a StreamError carries). */
  get text(): string {
    if (this.parts.length > 0) {
      this.segments.push(this.parts.join(""));
      this.parts = [];
    }
    if (this.segments.length > 1) this.segments = [this.segments.join("")];
    return this.segments[0] ?? "";
  }

  private addText(piece: string): void {
    this.parts.push(piece);
    if (this.parts.length === TEXT_SEGMENT) {
      this.segments.push(this.parts.join(""));
      this.parts = [];
    }
  }

  /** `reasoning`: "emit" (reasoning events) or "drop" (none); never text either way. */
  constructor(reasoning = "emit") {
    this.emitReasoning = reasoning !== "drop";
  }

  /**
   * Whether reasoning was dropped (reasoning "drop") since the last call: it is progress for the
   * first-token and idle clocks even though no event carries it.
   */
  takeDropped(): boolean {
    const dropped = this.dropped;
    this.dropped = false;
    return dropped;
  }

  /** The events of one parsed chunk: reasoning, text, tool calls; remembers finish and usage. */
  feed(chunk: unknown): Event[] {
    if (!isObject(chunk)) return [];
    // The chunk of almost every event, first: one choice whose delta holds only plain text or
    // only the next arguments of the open tool call, and nothing else to remember. Anything
    // else, or anything unexpected, takes the general path below, which gives the same events.
    const choices = chunk.choices;
    if (
      Array.isArray(choices) &&
      choices.length === 1 &&
      chunk.usage == null &&
      chunk.error == null &&
      chunk.x_groq === undefined
    ) {
      const choice = choices[0];
      const delta = isObject(choice) ? choice.delta : undefined;
      if (isObject(delta) && choice.finish_reason == null && !hasReasoning(delta)) {
        const content = delta.content;
        if (delta.tool_calls === undefined) {
          if (
            typeof content === "string" &&
            content !== "" &&
            this.plain &&
            !content.includes("<")
          ) {
            this.fresh = false;
            this.addText(content);
            return [{ type: "text", content }];
          }
        } else if (content === undefined && Array.isArray(delta.tool_calls)) {
          const event =
            delta.tool_calls.length === 1 ? this.nextArguments(delta.tool_calls[0]) : undefined;
          if (event !== undefined) return [event];
        }
      }
    }
    if (chunk.error !== undefined && chunk.error !== null) throw this.serverError(chunk.error);
    const events: Event[] = [];
    const choice = Array.isArray(choices) ? choices[0] : undefined;
    if (isObject(choice)) {
      const delta = choice.delta;
      if (isObject(delta)) {
        // One reasoning field per chunk: OpenRouter sends the same text in two.
        const reasoning =
          nonEmpty(delta.reasoning_content) ??
          nonEmpty(delta.reasoning) ??
          detailsText(delta.reasoning_details);
        if (reasoning !== undefined) {
          if (this.emitReasoning) events.push({ type: "reasoning", content: reasoning });
          else this.dropped = true;
        }
        const content = nonEmpty(delta.content);
        if (content !== undefined) {
          if (this.plain && !content.includes("<")) {
            this.fresh = false;
            this.addText(content);
            events.push({ type: "text", content });
          } else {
            this.content(content, events);
          }
        }
        if (Array.isArray(delta.tool_calls)) {
          for (const call of delta.tool_calls) {
            if (isObject(call)) events.push(this.toolCall(call));
          }
        }
      }
      if (typeof choice.finish_reason === "string") this.finishReason = choice.finish_reason;
    }
    if (isObject(chunk.usage)) {
      this.usage = chunk.usage;
    } else if (isObject(chunk.x_groq) && isObject(chunk.x_groq.usage)) {
      this.usage = chunk.x_groq.usage; // Groq puts usage under x_groq
    }
    return events;
  }

  /**
   * The events of one dispatched SSE event other than `[DONE]`. Blank data and data starting with
   * `:` (a keep-alive a proxy wrapped in `data:`) give nothing. An event named `error` throws
   * StreamError `server_error`; another named event is a progress event (its data parsed as JSON,
   * else kept as a string); an unnamed (or `message`) event is a chunk, and data that is not JSON
   * throws StreamError `malformed`.
   */
  feedEvent(name: string | undefined, data: string): Event[] {
    if (name === undefined || name === "message") {
      let chunk: unknown;
      try {
        chunk = JSON.parse(data);
      } catch {
        if (keepAlive(data)) return [];
        // No parser error as the cause: its message quotes the data, which may echo a key; the
        // message carries the start of the data, scrubbed.
        throw this.malformed(`data is not JSON: ${cut(data, 200)}`);
      }
      return this.feed(chunk);
    }
    if (keepAlive(data)) return [];
    let parsed: unknown;
    try {
      parsed = JSON.parse(data);
    } catch {
      parsed = data;
    }
    if (name === "error") {
      const error = isObject(parsed) ? parsed.error : undefined;
      throw this.serverError(error === undefined || error === null ? parsed : error);
    }
    const event: ProgressEvent = { type: "progress", event: name, data: parsed };
    return [event];
  }

  /**
   * All the events of a whole 2xx JSON answer (a server that ignored `stream`). An error object
   * throws StreamError `server_error`; a `chat.completion` gives the events a stream would have
   * given, finish included; an empty body or anything else throws StreamError `malformed`, never a
   * silent empty turn.
   */
  feedBody(text: string): Event[] {
    if (text.replace(LEADING_BLANK, "") === "") throw this.malformed("empty response body");
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw this.malformed(`data is not JSON: ${cut(text, 200)}`);
    }
    if (
      !isObject(body) ||
      (!("choices" in body) && (body.error === undefined || body.error === null))
    ) {
      throw this.malformed(`not a chat completion: ${cut(text, 200)}`);
    }
    return [...this.feed(completionToChunk(body)), ...this.finish(true)];
  }

  /** StreamError malformed with the text so far. */
  malformed(detail: string): StreamError {
    return makeError("malformed", { detail, partialText: this.text }) as StreamError;
  }

  /** Content that may hold `<think>` tags, split anywhere across chunks. */
  private content(content: string, events: Event[]): void {
    let buf = this.held + content;
    this.held = "";
    if (this.fresh) {
      if (buf.length < CLOSE.length && CLOSE.startsWith(buf)) {
        this.held = buf;
        this.plain = false;
        return;
      }
      this.fresh = false;
      // Some servers leave out the opening tag: a leading </think> ends the reasoning.
      if (buf.startsWith(CLOSE)) buf = buf.slice(CLOSE.length);
    }
    while (buf !== "") {
      const tag = this.think ? CLOSE : OPEN;
      const at = buf.indexOf(tag);
      if (at < 0) {
        const keep = heldBack(buf, tag);
        if (keep > 0) {
          this.held = buf.slice(buf.length - keep);
          buf = buf.slice(0, buf.length - keep);
        }
        this.emit(buf, events);
        break;
      }
      this.emit(buf.slice(0, at), events);
      this.think = !this.think;
      buf = buf.slice(at + tag.length);
    }
    this.plain = !this.think && this.held === "";
  }

  private emit(piece: string, events: Event[]): void {
    if (piece === "") return;
    if (this.think) {
      if (this.emitReasoning) events.push({ type: "reasoning", content: piece });
      else this.dropped = true;
    } else {
      this.addText(piece);
      events.push({ type: "text", content: piece });
    }
  }

  /** The usage seen so far as [input (uncached), output, cache read] tokens; null without any. */
  usageCounts(): [number, number, number] | null {
    if (this.usage === undefined) return null;
    const details = this.usage.prompt_tokens_details;
    const cached = isObject(details) ? count(details.cached_tokens) : 0;
    return [
      Math.max(0, count(this.usage.prompt_tokens) - cached),
      count(this.usage.completion_tokens),
      cached,
    ];
  }

  /** The closing events: one usage event if any usage was seen, then the finish event. */
  finish(done: boolean): Event[] {
    const events: Event[] = [];
    if (this.held !== "") {
      // Content held back as a possible tag, as what it turned out to be.
      const held = this.held;
      this.held = "";
      this.plain = !this.think;
      this.emit(held, events);
    }
    const usage = this.usageCounts();
    if (usage !== null) {
      events.push({
        type: "usage",
        input_tokens: usage[0],
        output_tokens: usage[1],
        cache_read_tokens: usage[2],
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
    const message = isObject(error) ? error.message : error;
    const detail = typeof message === "string" ? message : JSON.stringify(error);
    return makeError("server_error", { detail, partialText: this.text }) as StreamError;
  }

  /**
   * `{"index": i, "function": {"arguments": "..."}}` for the slot the last call used (the usual
   * continuation of a tool call) as its event; undefined for any other call.
   */
  private nextArguments(call: unknown): ToolCallEvent | undefined {
    const index = this.lastIndex;
    if (index === undefined || !isObject(call) || call.index !== index || call.id !== undefined) {
      return undefined;
    }
    const fn = call.function;
    if (!isObject(fn) || typeof fn.arguments !== "string" || fn.name !== undefined)
      return undefined;
    return { type: "tool_call", index, id: null, name: null, arguments: fn.arguments };
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

/** Whether a delta has a reasoning field the general path would read. */
function hasReasoning(delta: JsonObject): boolean {
  return (
    delta.reasoning_content !== undefined ||
    delta.reasoning !== undefined ||
    delta.reasoning_details !== undefined
  );
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
  // A lone chunk sent as JSON has a delta instead of a message.
  const message = isObject(choice.message)
    ? choice.message
    : isObject(choice.delta)
      ? choice.delta
      : {};
  const delta: JsonObject = { ...message };
  if (Array.isArray(message.tool_calls)) {
    delta.tool_calls = message.tool_calls.map((call: unknown, index) =>
      isObject(call) ? { ...call, index } : call,
    );
  }
  return { ...body, choices: [{ delta, finish_reason: choice.finish_reason }] };
}
