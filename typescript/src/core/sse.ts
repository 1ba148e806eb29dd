// Server-sent events decoding; mirrors python/src/brainline/_core/sse.py.
//
// Follows the WHATWG event-stream rules
// (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).
// The decoder works on bytes, as the Python one does: CR and LF never occur inside a multi-byte
// UTF-8 sequence, so lines end at CR and LF bytes, the unterminated end of the input stays bytes
// (a character split across reads is kept whole), and the limits count input bytes.
//
// Text is decoded once per read, the read's complete lines at once, then sliced. That gives the
// same text as Python's decoding once per event: CR, LF, ":" and " " are ASCII, and before an ASCII
// byte both decoders (WHATWG's and Python's "replace") end any incomplete sequence with one U+FFFD,
// as they do at the end of input, so decoding is the same on either side of those bytes.
import { SSE_MAX_EVENT_BYTES, SSE_MAX_LINE_BYTES } from "../generated/constants.js";
import { type StreamError, makeError } from "./errors.js";

/** One dispatched event: its name (undefined when the stream set none) and its data. */
export interface ServerSentEvent {
  readonly event: string | undefined;
  readonly data: string;
}

export interface SSEDecoderOptions {
  /** Longest line accepted, in input bytes (default SSE_MAX_LINE_BYTES). */
  readonly maxLineBytes?: number;
  /** Largest event data accepted, in input bytes (default SSE_MAX_EVENT_BYTES). */
  readonly maxEventBytes?: number;
}

const LF = 10;
const CR = 13;
const COLON = 58;
const BOM = Uint8Array.of(0xef, 0xbb, 0xbf);
const LOWER_D = 100; // "d", the first byte of "data: "
const ONE_LF = Uint8Array.of(LF);
const TWO_LF = Uint8Array.of(LF, LF);
// Not streaming, so stateless and shared. Invalid UTF-8 becomes U+FFFD, one per maximal invalid
// subpart, as in Python's "replace". ignoreBOM keeps a U+FEFF that starts a read or an event: only
// the byte order mark at the start of the stream is dropped, and that on bytes.
const UTF8 = new TextDecoder("utf-8", { ignoreBOM: true });

/**
 * Bytes in, events out, incrementally.
 *
 * Lines end in LF, CRLF or CR (also a CR ending one read and an LF starting the next); a line
 * starting with `:` is a comment; `field:value` takes one optional space after the colon; `data`
 * lines join with LF; `event` names the event; a blank line dispatches, but only when there was a
 * `data` line. Invalid UTF-8 becomes U+FFFD; a leading byte order mark is dropped. Unlike the spec,
 * flush() dispatches the event still pending at the end of input, and a line `error: <value>`
 * (llama.cpp's server) counts as `event: error` plus `data: <value>`.
 *
 * A line longer than `maxLineBytes` or event data longer than `maxEventBytes` (in input bytes,
 * without line ends) raises StreamError `too_large`. When events completed earlier in the same
 * read, they are returned first and the error is raised by the next call (it is also available as
 * `error` at once).
 */
export class SSEDecoder {
  private readonly maxLineBytes: number;
  private readonly maxEventBytes: number;
  private readonly minLimit: number;
  /** The pieces of the line not terminated yet (copies: no view of a caller's buffer is kept). */
  private tail: Uint8Array[] = [];
  private tailSize = 0;
  /** The input so far ended in CR: a leading LF ends the same line. */
  private skipLF = false;
  /** A byte order mark may still come. */
  private atStart = true;
  private eventName: string | undefined = undefined;
  /** The data lines of the pending event, decoded. */
  private data: string[] = [];
  /** Their joined size in input bytes (with the LFs between them). */
  private dataSize = 0;
  /** Next ":" in the text being scanned: -2 not searched yet, -1 none left. */
  private colonAt = -2;
  /** Nothing pending (no partial line, event, CR or error): the fast path may be taken. */
  private plain = true;
  /** The limit error found after events that were returned first; raised by the next call. */
  error: StreamError | undefined = undefined;

  constructor(options: SSEDecoderOptions = {}) {
    this.maxLineBytes = options.maxLineBytes ?? SSE_MAX_LINE_BYTES;
    this.maxEventBytes = options.maxEventBytes ?? SSE_MAX_EVENT_BYTES;
    this.minLimit = Math.min(this.maxLineBytes, this.maxEventBytes);
  }

  /** The events completed by this piece of input. */
  decode(chunk: Uint8Array): ServerSentEvent[] {
    const length = chunk.length;
    if (
      this.plain &&
      length <= this.minLimit &&
      chunk[0] === LOWER_D &&
      chunk[length - 1] === LF &&
      chunk[length - 2] === LF
    ) {
      // The usual read: whole events of one `data: ` line each, LF line ends, nothing pending,
      // under both limits. The checks run on the decoded text, which is cheaper than scanning the
      // bytes: "data: ", CR and LF are ASCII, and an ASCII byte is never part of a multi-byte
      // sequence, so each is in the text exactly where it is in the bytes, and the text between
      // them is what decoding those bytes alone gives. (Starting with "data: ", it has no BOM.)
      const text = UTF8.decode(chunk);
      if (text.startsWith("data: ") && !text.includes("\r")) {
        this.atStart = false;
        const end = text.length - 2;
        if (text.indexOf("\n", 6) === end) return [{ event: undefined, data: text.slice(6, end) }];
        // When no piece holds an LF, every LF belonged to a separator: the split gives exactly the
        // events' data.
        const events: ServerSentEvent[] = [];
        for (const data of text.slice(6, end).split("\n\ndata: ")) {
          if (data.includes("\n")) return this.decodeAny(chunk);
          events.push({ event: undefined, data });
        }
        return events;
      }
    }
    return this.decodeAny(chunk);
  }

  /** At the end of input: the pending line and event, dispatched as if terminated. */
  flush(): ServerSentEvent[] {
    if (this.error !== undefined) throw this.error;
    this.skipLF = false;
    // The pending line (if any) and a blank line.
    const buf = concat(this.tail, this.tail.length > 0 ? TWO_LF : ONE_LF);
    this.tail = [];
    this.tailSize = 0;
    const events: ServerSentEvent[] = [];
    if (this.lines(buf, events)) this.plain = true;
    return events;
  }

  /** Any input: CR line ends, pending lines or events, a byte order mark, the limits. */
  private decodeAny(input: Uint8Array): ServerSentEvent[] {
    if (this.error !== undefined) throw this.error;
    let chunk = input;
    if (this.atStart) {
      const head = concat(this.tail, chunk);
      if (head.length < BOM.length && startsWith(BOM, head)) {
        // Maybe the start of a byte order mark: wait for more.
        this.tail = head.length > 0 ? [head.slice()] : [];
        this.tailSize = head.length;
        this.plain = head.length === 0;
        return [];
      }
      this.atStart = false;
      this.tail = [];
      this.tailSize = 0;
      chunk = startsWith(head, BOM) ? head.subarray(BOM.length) : head;
    }
    if (this.skipLF && chunk.length > 0) {
      this.skipLF = false;
      if (chunk[0] === LF) chunk = chunk.subarray(1);
    }
    const events: ServerSentEvent[] = [];
    if (chunk.indexOf(LF) === -1 && chunk.indexOf(CR) === -1) {
      if (chunk.length > 0) {
        this.tail.push(chunk.slice());
        this.tailSize += chunk.length;
        if (this.tailSize > this.maxLineBytes) throw this.tooLarge("line", this.maxLineBytes);
      }
    } else {
      const buf = concat(this.tail, chunk);
      this.tail = [];
      this.tailSize = 0;
      if (this.lines(buf, events) && this.tailSize > this.maxLineBytes) {
        // An unterminated line already over the limit: no need to wait for its end.
        this.fail("line", this.maxLineBytes, events);
      }
    }
    this.plain =
      this.error === undefined &&
      !this.skipLF &&
      this.tailSize === 0 &&
      this.data.length === 0 &&
      this.eventName === undefined;
    return events;
  }

  /** Interpret the complete lines of buf and keep its unterminated end; false on a limit error. */
  private lines(buf: Uint8Array, events: ServerSentEvent[]): boolean {
    const length = buf.length;
    // Input shorter than both limits cannot break one: then the checks are skipped.
    const check = length + this.dataSize > this.minLimit;
    // The complete lines end at the last CR or LF; what follows is kept as bytes.
    const last = buf[length - 1];
    const cut =
      last === LF || last === CR ? length : Math.max(buf.lastIndexOf(LF), buf.lastIndexOf(CR)) + 1;
    if (cut < length) {
      this.tail = [buf.slice(cut)];
      this.tailSize = length - cut;
    } else if (last === CR) {
      this.skipLF = true;
    }
    const text = UTF8.decode(cut < length ? buf.subarray(0, cut) : buf);
    // One UTF-16 unit per byte (ASCII, or lone invalid bytes): text offsets are byte offsets.
    // Otherwise each line's size comes from finding its end among the bytes too.
    const sameOffsets = text.length === cut;
    let byteAt = 0;
    this.colonAt = -2;
    let pos = 0;
    // Next LF / CR at or after pos; -1 once there is none left (so each is searched in O(n)).
    let lf = text.indexOf("\n");
    let cr = text.indexOf("\r");
    while (lf !== -1 || cr !== -1) {
      const start = pos;
      let end: number;
      if (cr === -1 || (lf !== -1 && lf < cr)) {
        end = lf;
        pos = lf + 1;
      } else {
        end = cr;
        pos = text.charCodeAt(cr + 1) === LF ? cr + 2 : cr + 1;
      }
      let size = end - start;
      if (!sameOffsets) {
        const byteEnd = buf.indexOf(text.charCodeAt(end), byteAt);
        size = byteEnd - byteAt;
        byteAt = byteEnd + pos - end;
      }
      if (!this.line(text, start, end, size, check, events)) return false;
      if (lf !== -1 && lf < pos) lf = text.indexOf("\n", pos);
      if (cr !== -1 && cr < pos) cr = text.indexOf("\r", pos);
    }
    if (this.dataSize > this.maxEventBytes) {
      this.fail("event", this.maxEventBytes, events);
      return false;
    }
    return true;
  }

  /**
   * The line text[start, end), `size` bytes of input, by the WHATWG rules; false on a limit
   * error. A blank line dispatches the pending event into `events`.
   */
  private line(
    text: string,
    start: number,
    end: number,
    size: number,
    check: boolean,
    events: ServerSentEvent[],
  ): boolean {
    if (start === end) {
      const data = this.data;
      if (data.length > 0) {
        if (check && this.dataSize > this.maxEventBytes) {
          this.fail("event", this.maxEventBytes, events);
          return false;
        }
        events.push({
          event: this.eventName,
          data: data.length === 1 ? (data[0] as string) : data.join("\n"),
        });
        this.data = [];
        this.dataSize = 0;
      }
      this.eventName = undefined;
      return true;
    }
    if (check && size > this.maxLineBytes) {
      this.fail("line", this.maxLineBytes, events);
      return false;
    }
    // Sizes of values below: the line's size less the field and colon before them, all ASCII.
    if (text.startsWith("data: ", start)) {
      this.addData(text.slice(start + 6, end), size - 6);
      return true;
    }
    if (text.charCodeAt(start) === COLON) return true; // a comment
    // The colon is searched once per text, not once per line: many colon-less lines stay O(n).
    let colon = this.colonAt;
    if (colon !== -1 && colon < start) {
      colon = text.indexOf(":", start);
      this.colonAt = colon;
    }
    if (colon === -1 || colon > end) colon = end;
    let valueAt = colon + 1;
    if (valueAt < end && text.charCodeAt(valueAt) === 32) valueAt += 1; // one optional space
    const value = valueAt < end ? text.slice(valueAt, end) : "";
    const valueSize = valueAt < end ? size - (valueAt - start) : 0;
    const field = colon - start;
    if (field === 4 && text.startsWith("data", start)) {
      this.addData(value, valueSize);
    } else if (field === 5 && text.startsWith("event", start)) {
      this.eventName = value || undefined;
    } else if (field === 5 && text.startsWith("error", start)) {
      // Not a WHATWG field: llama.cpp's server writes a failure as `error: {...}`.
      this.eventName = "error";
      this.addData(value, valueSize);
    }
    // "id" and "retry" do not change what is dispatched; other fields are ignored.
    return true;
  }

  private addData(value: string, size: number): void {
    this.dataSize += this.data.length > 0 ? size + 1 : size;
    this.data.push(value);
  }

  /** Remember the limit error; throw it now unless events came before it in this read. */
  private fail(what: string, limit: number, events: ServerSentEvent[]): void {
    const error = this.tooLarge(what, limit);
    if (events.length === 0) throw error;
  }

  private tooLarge(what: string, limit: number): StreamError {
    const error = makeError("too_large", { what, limit }) as StreamError;
    this.error = error;
    this.plain = false;
    return error;
  }
}

/** `buf` begins with `prefix`. */
function startsWith(buf: Uint8Array, prefix: Uint8Array): boolean {
  for (let i = 0; i < prefix.length; i++) if (buf[i] !== prefix[i]) return false;
  return true;
}

/** The pieces, then `last`, in one array (`last` itself when there are no pieces). */
function concat(pieces: readonly Uint8Array[], last: Uint8Array): Uint8Array {
  if (pieces.length === 0) return last;
  let size = last.length;
  for (const piece of pieces) size += piece.length;
  const out = new Uint8Array(size);
  let at = 0;
  for (const piece of pieces) {
    out.set(piece, at);
    at += piece.length;
  }
  out.set(last, at);
  return out;
}
