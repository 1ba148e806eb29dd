import { SSE_MAX_EVENT_BYTES, SSE_MAX_LINE_BYTES } from "../generated/constants.js";
import { type StreamError, makeError } from "./errors.js";

/** One dispatched event: its name (undefined when the stream set none) and its data. */
export interface ServerSentEvent {
  readonly event: string | undefined;
  readonly data: string;
}

export interface SSEDecoderOptions {
  /** Longest line accepted, in UTF-8 bytes (default SSE_MAX_LINE_BYTES). */
  readonly maxLineBytes?: number;
  /** Largest event data accepted, in UTF-8 bytes (default SSE_MAX_EVENT_BYTES). */
  readonly maxEventBytes?: number;
}

const LF = 10;
const COLON = 58;
const SPACE = 32;

/**
 * Bytes in, events out, by the WHATWG event-stream rules
 * (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
 * lines end in LF, CRLF or CR, `:` starts a comment, one optional space follows the colon, data
 * lines join with LF, and a blank line dispatches only when there is data. Unlike the spec, the
 * event still pending at the end of input is dispatched (flush), as the runtime contract asks,
 * and a line `error: <value>` (llama.cpp's server) counts as `event: error` plus `data: <value>`.
 *
 * A line longer than `maxLineBytes` or event data longer than `maxEventBytes` (in UTF-8 bytes,
 * without line ends) raises StreamError `too_large`. When events completed earlier in the same
 * read, they are returned first and the error is raised by the next call (it is also available as
 * `error` at once).
 */
export class SSEDecoder {
  private readonly maxLineBytes: number;
  private readonly maxEventBytes: number;
  // One streaming decoder, so a character split across reads is kept whole.
  private readonly text = new TextDecoder("utf-8");
  /** The unterminated end of the input so far. */
  private tail = "";
  /** The last input ended in CR: an LF starting the next one belongs to the same line end. */
  private skipLF = false;
  private eventName: string | undefined = undefined;
  private data = "";
  private hasData = false;
  /** Size of `data`: UTF-16 units (a lower bound of its UTF-8 bytes) until `exact` is set. */
  private dataSize = 0;
  private exact = false;
  /** Next ":" in the buffer being scanned: -2 not searched yet, -1 none left. */
  private colonAt = -2;
  /** The limit error found after events that were returned first; raised by the next call. */
  error: StreamError | undefined = undefined;

  constructor(options: SSEDecoderOptions = {}) {
    this.maxLineBytes = options.maxLineBytes ?? SSE_MAX_LINE_BYTES;
    this.maxEventBytes = options.maxEventBytes ?? SSE_MAX_EVENT_BYTES;
  }

  /** The events completed by this piece of input. */
  decode(chunk: Uint8Array): ServerSentEvent[] {
    if (this.error !== undefined) throw this.error;
    return this.scan(this.text.decode(chunk, { stream: true }), false);
  }

  /** At the end of input: the pending line and event, dispatched as if terminated. */
  flush(): ServerSentEvent[] {
    if (this.error !== undefined) throw this.error;
    return this.scan(this.text.decode(), true);
  }

  private scan(text: string, final: boolean): ServerSentEvent[] {
    const events: ServerSentEvent[] = [];
    try {
      this.lines(text, final, events);
    } catch (err) {
      // Only the limits throw here: raise now unless events came before the error in this read.
      this.error = err as StreamError;
      if (events.length === 0) throw err;
    }
    return events;
  }

  private lines(text: string, final: boolean, events: ServerSentEvent[]): void {
    const buf = this.tail === "" ? text : this.tail + text;
    this.colonAt = -2;
    this.tail = "";
    const length = buf.length;
    let pos = 0;
    if (this.skipLF && length > 0) {
      if (buf.charCodeAt(0) === LF) pos = 1;
      this.skipLF = false;
    }
    // Next LF / CR at or after pos; -1 once there is none left (so each is searched in O(n)).
    let lf = buf.indexOf("\n", pos);
    let cr = buf.indexOf("\r", pos);
    while (lf !== -1 || cr !== -1) {
      const start = pos;
      let end: number;
      if (cr === -1 || (lf !== -1 && lf < cr)) {
        end = lf;
        pos = lf + 1;
      } else {
        end = cr;
        if (cr + 1 < length) {
          pos = buf.charCodeAt(cr + 1) === LF ? cr + 2 : cr + 1;
        } else {
          pos = cr + 1;
          this.skipLF = true;
        }
      }
      const event = this.line(buf, start, end);
      if (event !== undefined) events.push(event);
      if (lf !== -1 && lf < pos) lf = buf.indexOf("\n", pos);
      if (cr !== -1 && cr < pos) cr = buf.indexOf("\r", pos);
    }
    this.tail = pos === 0 ? buf : buf.slice(pos);
    if (final) {
      this.skipLF = false;
      if (this.tail !== "") {
        this.colonAt = -2;
        const event = this.line(this.tail, 0, this.tail.length);
        this.tail = "";
        if (event !== undefined) events.push(event);
      }
      const event = this.line("", 0, 0);
      if (event !== undefined) events.push(event);
    } else if (
      this.tail.length * 3 > this.maxLineBytes &&
      utf8Length(this.tail) > this.maxLineBytes
    ) {
      // An unterminated line already over the limit: no need to wait for its end.
      throw makeError("too_large", { what: "line", limit: this.maxLineBytes });
    }
  }

  /** The line buf[start, end), by the WHATWG rules; returns the event a blank line dispatches. */
  private line(buf: string, start: number, end: number): ServerSentEvent | undefined {
    if (start === end) {
      const event = this.hasData
        ? { event: this.eventName || undefined, data: this.data }
        : undefined;
      this.eventName = undefined;
      this.data = "";
      this.hasData = false;
      this.dataSize = 0;
      this.exact = false;
      return event;
    }
    if (
      (end - start) * 3 > this.maxLineBytes &&
      utf8Length(buf.slice(start, end)) > this.maxLineBytes
    ) {
      throw makeError("too_large", { what: "line", limit: this.maxLineBytes });
    }
    if (buf.charCodeAt(start) === COLON) return undefined;
    // Slicing the value straight out of the buffer: no string for the whole line, nor the field.
    let colon = this.colonAt;
    if (colon !== -1 && colon < start) {
      colon = buf.indexOf(":", start);
      this.colonAt = colon;
    }
    if (colon === -1 || colon > end) colon = end;
    const fieldLength = colon - start;
    let valueStart = colon + 1;
    if (valueStart < end && buf.charCodeAt(valueStart) === SPACE) valueStart += 1;
    const value = valueStart < end ? buf.slice(valueStart, end) : "";
    if (fieldLength === 4 && buf.startsWith("data", start)) {
      this.appendData(value);
    } else if (fieldLength === 5 && buf.startsWith("event", start)) {
      this.eventName = value;
    } else if (fieldLength === 5 && buf.startsWith("error", start)) {
      // Not a WHATWG field: llama.cpp's server writes a failure as `error: {...}`.
      this.eventName = "error";
      this.appendData(value);
    }
    // "id" and "retry" do not affect what is dispatched; other fields are ignored.
    return undefined;
  }

  private appendData(value: string): void {
    const separator = this.hasData ? 1 : 0;
    this.data = this.hasData ? `${this.data}\n${value}` : value;
    this.hasData = true;
    if (this.exact) {
      this.dataSize += separator + utf8Length(value);
    } else {
      this.dataSize += separator + value.length;
      // Counting UTF-8 bytes only once the data could be over the limit keeps the common path cheap.
      if (this.dataSize * 3 > this.maxEventBytes) {
        this.exact = true;
        this.dataSize = utf8Length(this.data);
      }
    }
    if (this.exact && this.dataSize > this.maxEventBytes) {
      throw makeError("too_large", { what: "event", limit: this.maxEventBytes });
    }
  }
}

/** UTF-8 length of a string as TextDecoder produces them (no lone surrogates). */
function utf8Length(s: string): number {
  let bytes = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    // A surrogate pair is 4 bytes: 2 for each half.
    bytes += c < 0x80 ? 1 : c < 0x800 || (c >= 0xd800 && c <= 0xdfff) ? 2 : 3;
  }
  return bytes;
}
