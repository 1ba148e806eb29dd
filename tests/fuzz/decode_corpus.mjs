// Decode the shared SSE corpus (tests/fuzz/corpus.py) with the TypeScript SSEDecoder.
// usage: node decode_corpus.mjs DECODER.mjs CORPUS.json.gz OUT.json
// DECODER.mjs is typescript/src/core/sse.ts bundled by esbuild (the test does it); the output has
// the same shape as corpus.decode(): [[event|null, data], ..., {"error": code}?] per stream.
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { gunzipSync } from "node:zlib";

const [decoderPath, corpusPath, outPath] = process.argv.slice(2);
const { SSEDecoder } = await import(pathToFileURL(decoderPath).href);
const corpus = JSON.parse(gunzipSync(readFileSync(corpusPath)).toString("utf8"));
const results = [];
for (const stream of corpus.streams) {
  const options = {};
  if (stream.max_line !== null) options.maxLineBytes = stream.max_line;
  if (stream.max_event !== null) options.maxEventBytes = stream.max_event;
  const decoder = new SSEDecoder(options);
  const out = [];
  try {
    for (const piece of stream.pieces) {
      for (const ev of decoder.decode(Buffer.from(piece, "base64"))) {
        out.push([ev.event ?? null, ev.data]);
      }
    }
    for (const ev of decoder.flush()) out.push([ev.event ?? null, ev.data]);
  } catch (err) {
    if (err?.name !== "StreamError" && err?.constructor?.name !== "StreamError") throw err;
    out.push({ error: err.code });
  }
  results.push(out);
}
writeFileSync(outPath, JSON.stringify(results));
