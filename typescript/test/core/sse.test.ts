import { describe, expect, it } from "vitest";
import { StreamError } from "../../src/core/errors.js";
import { SSEDecoder, type SSEDecoderOptions, type ServerSentEvent } from "../../src/core/sse.js";

const encoder = new TextEncoder();

/** Decode the pieces in order, then flush; every event, in order. */
function run(
  pieces: readonly (string | Uint8Array)[],
  options?: SSEDecoderOptions,
): ServerSentEvent[] {
  const decoder = new SSEDecoder(options);
  const events: ServerSentEvent[] = [];
  for (const piece of pieces) {
    events.push(...decoder.decode(typeof piece === "string" ? encoder.encode(piece) : piece));
  }
  events.push(...decoder.flush());
  return events;
}

/** Events collected until the decoder throws; returns both. */
function runUntilError(
  pieces: readonly (string | Uint8Array)[],
  options?: SSEDecoderOptions,
): { events: ServerSentEvent[]; error: unknown } {
  const decoder = new SSEDecoder(options);
  const events: ServerSentEvent[] = [];
  try {
    for (const piece of pieces) {
      events.push(...decoder.decode(typeof piece === "string" ? encoder.encode(piece) : piece));
    }
    events.push(...decoder.flush());
  } catch (error) {
    return { events, error };
  }
  return { events, error: undefined };
}

const ev = (data: string, event?: string): ServerSentEvent => ({ event, data });

/** Bytes from strings (UTF-8) and byte values, in order: for input that is not valid UTF-8. */
function bytes(...parts: (string | number[])[]): Uint8Array {
  const pieces = parts.map((part) => (typeof part === "string" ? encoder.encode(part) : part));
  return Uint8Array.from(pieces.flatMap((piece) => [...piece]));
}

// Multi-byte characters of every UTF-8 length, comments, a named event, multi-line data, an
// empty-data event, [DONE], and both "data:" spellings.
const SAMPLE = [
  ": keepalive",
  'data: {"c":"Caffè ☕ 😀 ß"}',
  "",
  "event: hermes.tool.progress",
  'data:{"tool":"x"}',
  "",
  ":comment with ünïcödé",
  "data: line one",
  "data:  two spaces",
  "data",
  "id: 7",
  "retry: 100",
  "",
  "event: ignored-without-data",
  "",
  "data: [DONE]",
  "",
];
const SAMPLE_EVENTS = [
  ev('{"c":"Caffè ☕ 😀 ß"}'),
  ev('{"tool":"x"}', "hermes.tool.progress"),
  ev("line one\n two spaces\n"),
  ev("[DONE]"),
];

describe("SSEDecoder", () => {
  it.each([
    ["LF", "\n"],
    ["CRLF", "\r\n"],
    ["CR", "\r"],
  ])("decodes the sample with %s line ends", (_name, eol) => {
    expect(run([SAMPLE.join(eol) + eol])).toEqual(SAMPLE_EVENTS);
  });

  it("decodes mixed line ends", () => {
    let text = "";
    SAMPLE.forEach((line, i) => {
      // A CR then an empty line ended by LF would be one CRLF: avoid writing that by accident.
      const eol = ["\n", "\r\n", "\r"][i % 3] as string;
      text += line + (text.endsWith("\r") && line === "" && eol !== "\r" ? "\r" : eol);
    });
    expect(run([text])).toEqual(SAMPLE_EVENTS);
  });

  it.each([
    ["LF", "\n"],
    ["CRLF", "\r\n"],
    ["CR", "\r"],
  ])("gives the same events at every split position (%s), even inside a character", (_n, eol) => {
    const bytes = encoder.encode(SAMPLE.join(eol) + eol);
    for (let at = 0; at <= bytes.length; at++) {
      expect(run([bytes.subarray(0, at), bytes.subarray(at)]), `split at ${at}`).toEqual(
        SAMPLE_EVENTS,
      );
    }
  });

  it("gives the same events at every pair of split positions (CRLF)", () => {
    const bytes = encoder.encode(`${SAMPLE.slice(0, 8).join("\r\n")}\r\n\r\n`);
    const expected = run([bytes]);
    expect(expected).toHaveLength(3);
    for (let a = 0; a <= bytes.length; a++) {
      for (let b = a; b <= bytes.length; b++) {
        const pieces = [bytes.subarray(0, a), bytes.subarray(a, b), bytes.subarray(b)];
        expect(run(pieces)).toEqual(expected);
      }
    }
  });

  it("decodes one byte at a time", () => {
    const bytes = encoder.encode(`${SAMPLE.join("\r\n")}\r\n`);
    const pieces = [...bytes].map((b) => Uint8Array.of(b));
    expect(run(pieces)).toEqual(SAMPLE_EVENTS);
  });

  it("treats a CR ending one read and an LF starting the next as one line end", () => {
    expect(run(["data: a\r", "\ndata: b\r\n\r\n"])).toEqual([ev("a\nb")]);
    expect(run(["data: a\r", "", "\ndata: b\r", "\n\r", "\n"])).toEqual([ev("a\nb")]);
    // A lone CR followed by a CR is two line ends: the second one dispatches.
    expect(run(["data: a\r", "\rdata: b\n\n"])).toEqual([ev("a"), ev("b")]);
  });

  it("treats a CR ending one read and an LF starting the next as one line end, on every path", () => {
    // The LF after the CR is not a blank line: nothing is dispatched twice, nothing early.
    expect(run(["data: a\r", "\n\n", "data: b\n\n"])).toEqual([ev("a"), ev("b")]);
    expect(run(["data: a\r\r", "\ndata: b\n\n"])).toEqual([ev("a"), ev("b")]);
    expect(run(["event: e\r", "\ndata: a\r", "\n\r", "\n"])).toEqual([ev("a", "e")]);
    // The read after the CR looks like the fast path's, but the CR is pending.
    const decoder = new SSEDecoder();
    expect(decoder.decode(encoder.encode("data: a\r"))).toEqual([]);
    expect(decoder.decode(encoder.encode("\ndata: b\n\n"))).toEqual([ev("a\nb")]);
    // The skipped LF is not counted in a line's size.
    expect(run(["data: 1234\r", "\n\r", "\n"], { maxLineBytes: 10 })).toEqual([ev("1234")]);
  });

  it("keeps a character split across reads whole", () => {
    const bytes = encoder.encode("data: ☕😀\n\n");
    expect(run([bytes.subarray(0, 7), bytes.subarray(7, 9), bytes.subarray(9)])).toEqual([
      ev("☕😀"),
    ]);
    // In an event name, in a line that follows complete ones, and counted once against a limit.
    const named = encoder.encode("data: a\n\nevent: é☕\ndata: ☕b\n\n");
    for (let at = 0; at <= named.length; at++) {
      expect(run([named.subarray(0, at), named.subarray(at)], { maxLineBytes: 13 })).toEqual([
        ev("a"),
        ev("☕b", "é☕"),
      ]);
    }
    const coffee = encoder.encode("data: ☕\n\n");
    const pieces = [coffee.subarray(0, 7), coffee.subarray(7, 8), coffee.subarray(8)];
    expect(run(pieces, { maxLineBytes: 9, maxEventBytes: 3 })).toEqual([ev("☕")]);
    expect((runUntilError(pieces, { maxLineBytes: 8 }).error as StreamError).message).toBe(
      "a stream line exceeded 8 bytes",
    );
    expect((runUntilError(pieces, { maxEventBytes: 2 }).error as StreamError).message).toBe(
      "a stream event exceeded 2 bytes",
    );
  });

  it("strips one optional space after the colon", () => {
    expect(run(["data:x\n\ndata: x\n\ndata:  x\n\n"])).toEqual([ev("x"), ev("x"), ev(" x")]);
    expect(run(["event:  spaced\ndata: 1\n\n"])).toEqual([ev("1", " spaced")]);
  });

  it("does not dispatch without data, and resets the event name", () => {
    expect(run([": ping\n\n: ping\n\n"])).toEqual([]);
    expect(run(["event: error\n\ndata: {}\n\n"])).toEqual([ev("{}")]);
    expect(run(["event: a\ndata: 1\n\ndata: 2\n\n"])).toEqual([ev("1", "a"), ev("2")]);
    expect(run(["event:\ndata: 1\n\n"])).toEqual([ev("1")]);
  });

  it("dispatches an event whose data lines are empty (the WHATWG rule)", () => {
    expect(run(["data:\n\n"])).toEqual([ev("")]);
    expect(run(["data\ndata\n\n"])).toEqual([ev("\n")]);
  });

  it("ignores unknown fields, id and retry", () => {
    expect(run(["foo: bar\nid: 1\nretry: 5\ndata: x\nbaz\n\n"])).toEqual([ev("x")]);
  });

  it("dispatches the pending line and event at the end of input", () => {
    expect(run(["data: tail"])).toEqual([ev("tail")]);
    expect(run(["data: a\n"])).toEqual([ev("a")]);
    expect(run(["data: a\r"])).toEqual([ev("a")]);
    expect(run(["data: a\n\ndata: [DONE]"])).toEqual([ev("a"), ev("[DONE]")]);
    expect(run([": only a comment"])).toEqual([]);
    expect(run([])).toEqual([]);
  });

  it("replaces an incomplete character at the end of input", () => {
    const bytes = encoder.encode("data: ☕");
    expect(run([bytes.subarray(0, bytes.length - 1)])).toEqual([ev("\ufffd")]);
  });

  it("strips a leading byte-order mark", () => {
    expect(run(["\ufeffdata: x\n\n"])).toEqual([ev("x")]);
    const bom = Uint8Array.of(0xef, 0xbb, 0xbf);
    expect(run([bom.subarray(0, 1), bom.subarray(1), "data: x\n\n"])).toEqual([ev("x")]);
  });

  it("strips a byte-order mark split across reads, at any point, and only at the start", () => {
    const stream = encoder.encode("\ufeffdata: x\n\n");
    for (let a = 0; a <= 4; a++) {
      for (let b = a; b <= 4; b++) {
        const pieces = [stream.subarray(0, a), stream.subarray(a, b), stream.subarray(b)];
        expect(run(pieces), `split at ${a}, ${b}`).toEqual([ev("x")]);
      }
    }
    // One byte at a time, with an empty read in the middle of the mark.
    expect(run([[0xef], [], [0xbb], [0xbf], "data: x\n\n"].map((p) => bytes(p)))).toEqual([
      ev("x"),
    ]);
    // A second mark is text: here it starts the field name, which is then unknown.
    expect(run(["\ufeff", "\ufeffdata: x\n\ndata: y\n\n"])).toEqual([ev("y")]);
    // Not a mark after all: the bytes stay, as U+FFFD, in the first line.
    expect(run([bytes([0xef, 0xbb]), "data: x\n\ndata: y\n\n"])).toEqual([ev("y")]);
    expect(run([bytes([0xef]), bytes([0xbb]), "\n", "data: y\n\n"])).toEqual([ev("y")]);
    // Inside the stream, U+FEFF is data, also at the start of a read or of an event.
    expect(run(["data: a\n\n", "data: \ufeffb\ufeff\n\n"])).toEqual([ev("a"), ev("\ufeffb\ufeff")]);
    expect(run(["data: a\r\n", "\ufeffdata: b\r\n\r\n"])).toEqual([ev("a")]);
  });

  it("replaces invalid UTF-8 as Python does (one U+FFFD per maximal invalid subpart)", () => {
    // Expected values are Python's bytes.decode("utf-8", "replace") of the same bytes.
    const cases: [number[], string][] = [
      [[0xff], "\ufffd"],
      [[0xc3], "\ufffd"],
      [[0xe2, 0x98], "\ufffd"],
      [[0xf0, 0x9f, 0x98], "\ufffd"],
      [[0xed, 0xa0, 0x80], "\ufffd\ufffd\ufffd"],
      [[0x80, 0x80], "\ufffd\ufffd"],
      [[0xc0, 0xaf], "\ufffd\ufffd"],
      [[0xe0, 0x80, 0xaf], "\ufffd\ufffd\ufffd"],
      [[0xf0, 0x80, 0x80], "\ufffd\ufffd\ufffd"],
      [[0xf4, 0x90, 0x80, 0x80], "\ufffd\ufffd\ufffd\ufffd"],
      [[0xef, 0xbf, 0xbd], "\ufffd"],
    ];
    for (const [invalid, replaced] of cases) {
      const label = invalid.map((b) => b.toString(16)).join(" ");
      // Before an ASCII byte, at the end of a line, an event and the input, on both paths.
      expect(run([bytes("data: ", invalid, "x\n\n")]), label).toEqual([ev(`${replaced}x`)]);
      expect(run([bytes("data: ", invalid, "\r\n\r\n")]), label).toEqual([ev(replaced)]);
      expect(run([bytes("data: ", invalid, "\n\n")]), label).toEqual([ev(replaced)]);
      expect(run([bytes("data: ", invalid, "\ndata: ", invalid, "\n\n")]), label).toEqual([
        ev(`${replaced}\n${replaced}`),
      ]);
      expect(run([bytes("data: é", invalid, "☕\n\n")]), label).toEqual([ev(`é${replaced}☕`)]);
      expect(run([bytes("event: ", invalid, "\ndata: 1\n\n")]), label).toEqual([ev("1", replaced)]);
      expect(run([bytes("data: ", invalid)]), label).toEqual([ev(replaced)]);
    }
  });

  it("keeps no view of the caller's buffer", () => {
    const decoder = new SSEDecoder();
    const buffer = encoder.encode("data: ab\ndata: cd");
    expect(decoder.decode(buffer)).toEqual([]);
    buffer.fill(0x7a); // the caller reuses its buffer
    expect(decoder.decode(encoder.encode("e\n\n"))).toEqual([ev("ab\ncde")]);
  });

  it("returns the events before a limit error first, then raises it on the next call", () => {
    const decoder = new SSEDecoder({ maxLineBytes: 12 });
    const first = decoder.decode(encoder.encode("data: a\n\ndata: 0123456789012\n\ndata: b\n\n"));
    expect(first).toEqual([ev("a")]);
    expect(decoder.error).toBeInstanceOf(StreamError);
    expect(decoder.error?.code).toBe("too_large");
    expect(() => decoder.decode(encoder.encode("data: c\n\n"))).toThrow(
      decoder.error as StreamError,
    );
    expect(() => decoder.flush()).toThrow("a stream line exceeded 12 bytes");
    const direct = new SSEDecoder({ maxLineBytes: 12 });
    expect(() => direct.decode(encoder.encode("data: 0123456789012\n"))).toThrow(StreamError);
    expect(direct.error?.message).toBe("a stream line exceeded 12 bytes");
  });

  it("finds fields without rescanning the buffer for each line", () => {
    // Many colon-less lines in one read: a naive indexOf(":") per line would be quadratic.
    const text = `${"data\n".repeat(200000)}\n`;
    const started = performance.now();
    const events = run([text]);
    expect(performance.now() - started).toBeLessThan(2000);
    expect(events).toHaveLength(1);
    expect(events[0]?.data).toBe("\n".repeat(199999));
  });

  describe("limits", () => {
    it("refuses a line over the limit, counting UTF-8 bytes", () => {
      expect(run(["data: éé\n\n"], { maxLineBytes: 10 })).toEqual([ev("éé")]); // 10 bytes
      const { error } = runUntilError(["data: ééé\n\n"], { maxLineBytes: 10 });
      expect(error).toBeInstanceOf(StreamError);
      expect((error as StreamError).code).toBe("too_large");
      expect((error as StreamError).message).toBe("a stream line exceeded 10 bytes");
    });

    it("refuses an unterminated line as soon as it is over the limit", () => {
      const { events, error } = runUntilError(["data: 1\n\n", "data: 0123456789", "0123456789"], {
        maxLineBytes: 16,
      });
      expect(events).toEqual([ev("1")]);
      expect((error as StreamError).code).toBe("too_large");
    });

    it("yields the events before the long line, then raises", () => {
      const { events, error } = runUntilError(["data: a\n\ndata: b\n\ndata: 0123456789012\n\n"], {
        maxLineBytes: 12,
      });
      expect(events).toEqual([ev("a"), ev("b")]);
      expect((error as StreamError).message).toBe("a stream line exceeded 12 bytes");
    });

    it("refuses an event whose data is over the limit, counting the joining LFs", () => {
      expect(run(["data: 1234\ndata: 5678\n\n"], { maxEventBytes: 9 })).toEqual([ev("1234\n5678")]);
      const { error } = runUntilError(["data: 1234\ndata: 5678\ndata:\n\n"], { maxEventBytes: 9 });
      expect((error as StreamError).message).toBe("a stream event exceeded 9 bytes");
      const wide = runUntilError(["data: ☕☕\ndata: ☕\n\n"], { maxEventBytes: 9 });
      expect((wide.error as StreamError).code).toBe("too_large");
      expect(run(["data: ☕☕\ndata: ☕\n\n"], { maxEventBytes: 10 })).toEqual([ev("☕☕\n☕")]);
    });

    it("counts input bytes on invalid UTF-8, as Python does (not 3 bytes per U+FFFD)", () => {
      // Two invalid bytes: an 8-byte line and 2 bytes of data, though "\ufffd\ufffd" is 6 in UTF-8.
      const invalid = bytes("data: ", [0xff, 0xff], "\n\n");
      expect(run([invalid], { maxLineBytes: 8, maxEventBytes: 2 })).toEqual([ev("\ufffd\ufffd")]);
      expect((runUntilError([invalid], { maxLineBytes: 7 }).error as StreamError).message).toBe(
        "a stream line exceeded 7 bytes",
      );
      expect((runUntilError([invalid], { maxEventBytes: 1 }).error as StreamError).message).toBe(
        "a stream event exceeded 1 bytes",
      );
      // Valid and invalid bytes together (é 2, ff 1, ☕ 3; ed a0 80 3 bytes, 3 U+FFFD), on the
      // general path (CRLF), over two lines and two reads.
      const mixed = bytes("data: é", [0xff], "☕\r\ndata: ", [0xed, 0xa0, 0x80], "\r\n\r\n");
      const both = [mixed.subarray(0, 10), mixed.subarray(10)];
      const text = "é\ufffd☕\n\ufffd\ufffd\ufffd";
      expect(run(both, { maxLineBytes: 12, maxEventBytes: 10 })).toEqual([ev(text)]);
      expect((runUntilError(both, { maxLineBytes: 11 }).error as StreamError).code).toBe(
        "too_large",
      );
      expect((runUntilError(both, { maxEventBytes: 9 }).error as StreamError).message).toBe(
        "a stream event exceeded 9 bytes",
      );
      // An unterminated line of invalid bytes, refused only once its input bytes are over.
      const tail = bytes("data: ", [0xe2, 0x98, 0xe2, 0x98]);
      expect(run([tail, "\n\n"], { maxLineBytes: 10 })).toEqual([ev("\ufffd\ufffd")]);
      expect(
        (runUntilError([tail, bytes([0x80])], { maxLineBytes: 10 }).error as StreamError).message,
      ).toBe("a stream line exceeded 10 bytes");
    });

    it("resets the event size after each dispatch", () => {
      const pieces = Array.from({ length: 50 }, (_, i) => `data: ${"x".repeat(8)}${i % 10}\n\n`);
      expect(run(pieces, { maxEventBytes: 9 })).toHaveLength(50);
    });

    it("uses the spec limits by default", () => {
      const big = "x".repeat(1048576 - 6);
      expect(run([`data: ${big}\n\n`])).toEqual([ev(big)]);
      const { error } = runUntilError([`data: ${big}x\n\n`]);
      expect((error as StreamError).message).toBe("a stream line exceeded 1048576 bytes");
      const lines = Array.from({ length: 5 }, () => `data: ${"y".repeat(1000000)}\n`).join("");
      const tooBig = runUntilError([lines, "\n"]);
      expect((tooBig.error as StreamError).message).toBe("a stream event exceeded 4194304 bytes");
    });
  });
});
