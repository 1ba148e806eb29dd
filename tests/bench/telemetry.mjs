// The Node side of tests/bench/telemetry.py: the same turns with telemetry off and on (the
// OpenTelemetry SDK's providers, spans dropped, metrics in memory), interleaved; prints
// {figure: {off, on}} (median seconds per turn) as its last line.
//
//   node tests/bench/telemetry.mjs ROOT ROUNDS QUICK

import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const [root, rounds, quick] = [process.argv[2], Number(process.argv[3] ?? 5), process.argv[4] === "1"];
const ts = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "typescript");
const require = createRequire(join(ts, "package.json"));
const load = (name) => import(pathToFileURL(require.resolve(name)).href);
const api = await load("@opentelemetry/api");
const sdkTrace = await load("@opentelemetry/sdk-trace-base");
const sdkMetrics = await load("@opentelemetry/sdk-metrics");
const dist = process.env.BRAINLINE_DIST ?? join(ts, "dist", "index.js");
const brainline = await import(pathToFileURL(dist).href);

const drop = { export: (_spans, done) => done({ code: 0 }), shutdown: async () => {} };
api.trace.setGlobalTracerProvider(
  new sdkTrace.BasicTracerProvider({ spanProcessors: [new sdkTrace.SimpleSpanProcessor(drop)] }),
);
const exporter = new sdkMetrics.InMemoryMetricExporter(sdkMetrics.AggregationTemporality.CUMULATIVE);
const reader = new sdkMetrics.PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
api.metrics.setGlobalMeterProvider(new sdkMetrics.MeterProvider({ readers: [reader] }));

const MESSAGES = [{ role: "user", content: "Hi" }];
const FIGURES = [
  ["one-chunk turn", "burst/1", quick ? 50 : 200],
  ["200-chunk stream", "burst/200", quick ? 10 : 40],
];
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

const out = {};
for (const [figure, scenario, turns] of FIGURES) {
  const llms = {
    off: new brainline.CustomLLM({ baseUrl: `${root}/${scenario}`, model: "bench", telemetry: false }),
    on: new brainline.CustomLLM({ baseUrl: `${root}/${scenario}`, model: "bench", telemetry: true }),
  };
  const times = { off: [], on: [] };
  for (const llm of Object.values(llms)) for await (const _ of llm.stream(MESSAGES)) {}
  for (let r = 0; r < rounds; r++) {
    for (const [mode, llm] of Object.entries(llms)) {
      const start = performance.now();
      for (let t = 0; t < turns; t++) for await (const _ of llm.stream(MESSAGES)) {}
      times[mode].push((performance.now() - start) / 1000 / turns);
    }
  }
  for (const llm of Object.values(llms)) await llm.close();
  out[figure] = { off: median(times.off), on: median(times.on) };
}
await reader.forceFlush();
if (exporter.getMetrics().length === 0) throw new Error("telemetry on recorded no metrics");
console.log(JSON.stringify(out));
