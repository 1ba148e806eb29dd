// Run tests/telemetry/turns.json through the built TypeScript package (typescript/dist) with
// telemetry and content capture on, with the OpenTelemetry SDK's in-memory exporters, and print the
// spans and metric points as JSON: the same shape as dump_py.py, which test_otel_parity.py compares.
//
//   node tests/telemetry/dump_ts.mjs

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const ts = join(here, "..", "..", "typescript");
const require = createRequire(join(ts, "package.json"));
const load = (name) => import(pathToFileURL(require.resolve(name)).href);

const api = await load("@opentelemetry/api");
const sdkTrace = await load("@opentelemetry/sdk-trace-base");
const sdkMetrics = await load("@opentelemetry/sdk-metrics");
const brainline = await import(pathToFileURL(join(ts, "dist", "index.js")).href);
const { MockServer } = await import(pathToFileURL(join(ts, "dist", "testing.js")).href);

const TURNS = JSON.parse(readFileSync(join(here, "turns.json"), "utf8"));

const spans = new sdkTrace.InMemorySpanExporter();
api.trace.setGlobalTracerProvider(
  new sdkTrace.BasicTracerProvider({ spanProcessors: [new sdkTrace.SimpleSpanProcessor(spans)] }),
);
const exporter = new sdkMetrics.InMemoryMetricExporter(sdkMetrics.AggregationTemporality.DELTA);
const reader = new sdkMetrics.PeriodicExportingMetricReader({
  exporter,
  exportIntervalMillis: 3_600_000,
});
api.metrics.setGlobalMeterProvider(new sdkMetrics.MeterProvider({ readers: [reader] }));

const camel = (name) => name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
const module = (name) => brainline[camel(name)];

function takeSpans() {
  const out = spans.getFinishedSpans().map((span) => ({
    name: span.name,
    kind: api.SpanKind[span.kind],
    status: api.SpanStatusCode[span.status.code],
    status_message: span.status.message ?? null,
    duration_ms: span.duration[0] * 1e3 + span.duration[1] / 1e6,
    attributes: { ...span.attributes },
  }));
  spans.reset();
  return out;
}

async function takePoints() {
  await reader.forceFlush();
  const out = [];
  for (const resource of exporter.getMetrics()) {
    for (const scope of resource.scopeMetrics) {
      for (const metric of scope.metrics) {
        for (const point of metric.dataPoints) {
          out.push({
            name: metric.descriptor.name,
            unit: metric.descriptor.unit,
            attributes: { ...point.attributes },
            count: point.value.count,
            sum: point.value.sum,
            bounds: [...point.value.buckets.boundaries],
          });
        }
      }
    }
  }
  exporter.reset();
  return out;
}

async function run(turn) {
  const server = new MockServer(turn.script);
  const url = await server.start();
  let error = null;
  try {
    const options = Object.fromEntries(
      Object.entries(turn.options).map(([key, value]) => [camel(key), value]),
    );
    const llm = new (module(turn.provider).LLM)({
      baseUrl: url,
      model: "parity-model",
      apiKey: TURNS.api_key,
      sessionKeyHeader: "X-Memory-Scope",
      sessionKey: TURNS.session_key,
      telemetry: true,
      captureMessageContent: true,
      ...options,
    });
    const controller = new AbortController();
    let seen = 0;
    try {
      for await (const _ of llm.stream(turn.messages, null, {
        signal: controller.signal,
        callId: "call-1",
        caller: TURNS.caller,
      })) {
        seen += 1;
        if (seen === turn.cancel_after_events) controller.abort();
      }
    } catch (err) {
      error = err?.code ?? err?.name ?? String(err);
    }
    await llm.close();
  } finally {
    await server.stop();
  }
  return { id: turn.id, error, spans: takeSpans(), metrics: await takePoints() };
}

const out = [];
for (const turn of TURNS.turns) out.push(await run(turn));
process.stdout.write(JSON.stringify(out));
