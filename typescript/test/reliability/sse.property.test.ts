// Property tests of the TypeScript SSE decoder (tests/reliability/test_sse_properties.py mirrors):
// a valid stream decodes to the same events however its bytes are split across reads; arbitrary
// bytes, split anywhere, under any limits, raise nothing but StreamError `too_large`, and keep
// raising it once raised.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { StreamError } from "../../src/core/errors.js";
import { type ServerSentEvent, SSEDecoder, type SSEDecoderOptions } from "../../src/core/sse.js";

const RUNS = { numRuns: 300 };
const encoder = new TextEncoder();

const end = fc.constantFrom("\n", "\r\n", "\r");
const value = fc.string({ unit: "grapheme", maxLength: 30 }).map((s) => s.replace(/[\r\n]/g, ""));
const line = fc.oneof(
  fc.tuple(fc.constantFrom("data:", "data: "), value).map(([a, b]) => a + b),
  value.map((v) => `event: ${v}`),
  value.map((v) => `:${v}`),
  fc.tuple(fc.constantFrom("id: ", "retry: ", "other: ", "data"), value).map(([a, b]) => a + b),
  fc.constant(""),
);
const validStream = fc
  .tuple(
    fc.array(fc.tuple(line, end), { maxLength: 15 }),
    fc.option(line),
    fc.integer({ min: 0, max: 9 }),
  )
  .map(([lines, last, bom]) => {
    let text = lines.map(([l, e]) => l + e).join("") + (last ?? "");
    if (bom === 0) text = `\ufeff${text}`;
    return encoder.encode(text);
  });

function split(data: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = cuts.map((c) => c % (data.length + 1)).sort((a, b) => a - b);
  const pieces: Uint8Array[] = [];
  let last = 0;
  for (const cut of points) {
    pieces.push(data.slice(last, cut));
    last = cut;
  }
  pieces.push(data.slice(last));
  return pieces;
}

function decode(pieces: Uint8Array[], options: SSEDecoderOptions = {}): ServerSentEvent[] {
  const decoder = new SSEDecoder(options);
  const events: ServerSentEvent[] = [];
  for (const piece of pieces) events.push(...decoder.decode(piece));
  events.push(...decoder.flush());
  return events;
}

const cuts = fc.array(fc.nat(), { maxLength: 12 });

describe("SSEDecoder properties", () => {
  it("decodes any split of a valid stream like the whole", () => {
    fc.assert(
      fc.property(validStream, cuts, (stream, at) => {
        const whole = decode([stream]);
        expect(decode(split(stream, at))).toEqual(whole);
        expect(decode(Array.from(stream, (b) => Uint8Array.of(b)))).toEqual(whole);
      }),
      RUNS,
    );
  });

  it("takes a CR ending one read and an LF starting the next as one line end", () => {
    fc.assert(
      fc.property(validStream, cuts, (stream, at) => {
        const text = new TextDecoder().decode(stream);
        const lf = text.replace(/\r\n|\r/g, "\n");
        const crlf = encoder.encode(lf.replace(/\n/g, "\r\n"));
        expect(decode(split(crlf, at))).toEqual(decode([encoder.encode(lf)]));
      }),
      RUNS,
    );
  });

  it("raises only StreamError too_large on arbitrary bytes, and keeps raising it", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 400 }),
        cuts,
        fc.integer({ min: 1, max: 300 }),
        fc.integer({ min: 1, max: 300 }),
        (blob, at, maxLineBytes, maxEventBytes) => {
          const decoder = new SSEDecoder({ maxLineBytes, maxEventBytes });
          try {
            for (const piece of split(blob, at)) {
              for (const ev of decoder.decode(piece)) {
                expect(typeof ev.data).toBe("string");
                expect(ev.event === undefined || typeof ev.event === "string").toBe(true);
              }
            }
            decoder.flush();
          } catch (err) {
            expect(err).toBeInstanceOf(StreamError);
            expect((err as StreamError).code).toBe("too_large");
            expect(() => decoder.decode(encoder.encode("data: x\n\n"))).toThrow(StreamError);
          }
        },
      ),
      RUNS,
    );
  });

  it("never raises on arbitrary bytes under the default limits", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), (blob) => {
        const decoder = new SSEDecoder();
        decoder.decode(blob);
        decoder.flush();
      }),
      RUNS,
    );
  });
});
