// OpenTelemetry GenAI spans and metrics (core/telemetry.ts), with the SDK's in-memory exporters.
// tests/telemetry/test_otel_parity.py runs the same turns in both languages and compares them;
// these tests pin the values per turn and what a comparison cannot see: off by default and free
// of the import, the env vars, the span's parent and times, content capture off.

import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { AsyncLocalStorage } from "node:async_hooks";
import {
  type Context,
  type ContextManager,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  context,
  metrics,
  trace,
} from "@opentelemetry/api";
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from "@opentelemetry/sdk-metrics";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { CustomLLM, MistralLLM } from "../../src/index.js";
import { captureOn, telemetryOn } from "../../src/core/telemetry.js";
import { MockServer } from "../../src/testing.js";

/** The smallest AsyncLocalStorage context manager (the SDK's lives in another package). */
class StorageContextManager implements ContextManager {
  private readonly storage = new AsyncLocalStorage<Context>();
  active(): Context {
    return this.storage.getStore() ?? ROOT_CONTEXT;
  }
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    ctx: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    return this.storage.run(ctx, () => fn.apply(thisArg, args));
  }
  bind<T>(_ctx: Context, target: T): T {
    return target;
  }
  enable(): this {
    return this;
  }
  disable(): this {
    this.storage.disable();
    return this;
  }
}

const MESSAGES = [{ role: "user", content: "Hi" }];
const KEY = "sk-telemetry-unit-0001";
const spans = new InMemorySpanExporter();
let exporter: InMemoryMetricExporter;
let reader: PeriodicExportingMetricReader;

type Point = [string, Record<string, unknown>, number, number];

async function points(): Promise<Point[]> {
  await reader.forceFlush();
  const out: Point[] = [];
  for (const resource of exporter.getMetrics()) {
    for (const scope of resource.scopeMetrics) {
      expect(scope.scope.name).toBe("brainline");
      for (const metric of scope.metrics) {
        for (const point of metric.dataPoints) {
          const value = point.value as { count: number; sum: number };
          out.push([metric.descriptor.name, { ...point.attributes }, value.count, value.sum]);
        }
      }
    }
  }
  exporter.reset();
  const key = (p: Point) => `${p[0]} ${JSON.stringify(Object.entries(p[1]).sort())}`;
  return out.sort((a, b) => (key(a) < key(b) ? -1 : 1));
}

function onlySpan(): ReadableSpan {
  const finished = spans.getFinishedSpans();
  expect(finished).toHaveLength(1);
  return finished[0] as ReadableSpan;
}

async function run(
  script: unknown,
  options: Record<string, unknown> = {},
  cancelAfter?: number,
): Promise<unknown[]> {
  const server = new MockServer(script as never);
  const url = await server.start();
  const events: unknown[] = [];
  try {
    const llm = new CustomLLM({
      baseUrl: url,
      model: "test-model",
      apiKey: KEY,
      maxRetries: 0,
      ...options,
    });
    const controller = new AbortController();
    try {
      for await (const event of llm.stream(MESSAGES, null, { signal: controller.signal })) {
        events.push(event);
        if (events.length === cancelAfter) controller.abort();
      }
    } finally {
      await llm.close();
    }
  } finally {
    await server.stop();
  }
  return events;
}

beforeEach(() => {
  delete process.env.BRAINLINE_TELEMETRY;
  delete process.env.OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT;
  trace.setGlobalTracerProvider(
    new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] }),
  );
  exporter = new InMemoryMetricExporter(AggregationTemporality.DELTA);
  reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
  metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));
});

afterEach(async () => {
  spans.reset();
  exporter.reset();
  await reader.shutdown();
  trace.disable();
  metrics.disable();
  context.disable();
  vi.restoreAllMocks();
});

describe("options and env", () => {
  it("telemetryOn reads the option, then BRAINLINE_TELEMETRY", () => {
    expect(telemetryOn(undefined)).toBe(false);
    for (const [value, on] of [
      ["1", true],
      ["true", true],
      [" TRUE ", true],
      ["0", false],
      ["yes", false],
    ] as const) {
      process.env.BRAINLINE_TELEMETRY = value;
      expect(telemetryOn(undefined), value).toBe(on);
    }
    expect(telemetryOn(false)).toBe(false);
    process.env.BRAINLINE_TELEMETRY = "0";
    expect(telemetryOn(true)).toBe(true);
  });

  it("captureOn reads the option, then the OpenTelemetry GenAI variable", () => {
    const name = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT";
    expect(captureOn(undefined)).toBe(false);
    for (const [value, on] of [
      ["true", true],
      ["span_only", true],
      ["SPAN_AND_EVENT", true],
      ["event_only", false],
      ["false", false],
      ["1", true],
    ] as const) {
      process.env[name] = value;
      expect(captureOn(undefined), value).toBe(on);
    }
    expect(captureOn(false)).toBe(false);
  });

  it("off records nothing; the env var turns it on", async () => {
    await run({ text: ["Hi"] });
    expect(spans.getFinishedSpans()).toEqual([]);
    expect(await points()).toEqual([]);
    process.env.BRAINLINE_TELEMETRY = "1";
    await run({ text: ["Hi"] });
    expect(onlySpan().name).toBe("chat test-model");
  });

  it("the built main entry never loads @opentelemetry/api unless telemetry is on (ESM, CJS)", () => {
    const dist = fileURLToPath(new URL("../../dist/", import.meta.url));
    if (!existsSync(`${dist}index.js`)) return; // npm run build makes it (the parity test needs it too)
    // A resolve hook refuses @opentelemetry/*: with telemetry on, brainline then says the API is
    // missing; off, nothing asks for it. require.cache shows a static require of the CJS build.
    const hook =
      "export async function resolve(s, c, n) { if (s.includes('@opentelemetry')) throw new Error('refused'); return n(s, c); }";
    const run = (load: string, telemetry: boolean) => {
      const code = [
        `import { register, createRequire } from "node:module";`,
        `register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hook)}`)});`,
        "const require = createRequire(import.meta.url);",
        `const b = ${load};`,
        `const { MockServer } = await import("./testing.js");`,
        `const server = new MockServer({ text: ["hi"] });`,
        `const llm = new b.CustomLLM({ baseUrl: await server.start(), model: "m", telemetry: ${telemetry} });`,
        `await llm.complete([{ role: "user", content: "x" }]);`,
        "await llm.close(); await server.stop();",
        "console.log(JSON.stringify(Object.keys(require.cache).filter((p) => p.includes('@opentelemetry'))));",
      ].join("\n");
      return spawnSync(process.execPath, ["--input-type=module", "-e", code], {
        cwd: dist,
        encoding: "utf8",
        env: { PATH: process.env.PATH ?? "" },
      });
    };
    for (const load of [`await import("./index.js")`, `require("./index.cjs")`]) {
      const off = run(load, false);
      expect(off.stderr, load).toBe("");
      expect(off.stdout.trim(), load).toBe("[]");
      const on = run(load, true);
      expect(on.stderr, load).toContain("@opentelemetry/api is not installed");
    }
  });
});

describe("spans and metrics", () => {
  it("a finished turn", async () => {
    const script = {
      id: "chatcmpl-7",
      model: "served-model",
      headers: { "x-request-id": "req-7" },
      text: ["Hel", "lo"],
      usage: {
        prompt_tokens: 10,
        completion_tokens: 2,
        prompt_tokens_details: { cached_tokens: 6 },
      },
    };
    const events = await run(script, {
      telemetry: true,
      temperature: 0.2,
      maxTokens: 5,
      stop: "\n",
    });
    const record = (
      events.at(-1) as {
        metrics: { duration_ms: number; first_progress_ms: number; input_tokens: number };
      }
    ).metrics;
    const span = onlySpan();
    expect(span.name).toBe("chat test-model");
    expect(span.kind).toBe(SpanKind.CLIENT);
    expect(span.status.code).toBe(SpanStatusCode.UNSET);
    expect(span.instrumentationScope.name).toBe("brainline");
    const attributes = { ...span.attributes };
    const port = attributes["server.port"];
    delete attributes["server.port"];
    expect(typeof port === "number" && port > 0).toBe(true);
    const ttfc = attributes["gen_ai.response.time_to_first_chunk"];
    delete attributes["gen_ai.response.time_to_first_chunk"];
    expect(ttfc).toBe(record.first_progress_ms / 1000);
    expect(attributes).toEqual({
      "gen_ai.operation.name": "chat",
      "gen_ai.provider.name": "custom",
      "gen_ai.request.model": "test-model",
      "server.address": "127.0.0.1",
      "gen_ai.request.temperature": 0.2,
      "gen_ai.request.max_tokens": 5,
      "gen_ai.request.stop_sequences": ["\n"],
      "gen_ai.request.stream": true,
      "gen_ai.response.id": "chatcmpl-7",
      "gen_ai.response.model": "served-model",
      "gen_ai.response.finish_reasons": ["stop"],
      "gen_ai.usage.input_tokens": 10, // cached tokens included, as the convention counts
      "gen_ai.usage.output_tokens": 2,
      "gen_ai.usage.cache_read.input_tokens": 6,
      "brainline.turn.attempts": 1,
      "brainline.request_id": "req-7",
    });
    expect(record.input_tokens).toBe(4); // the record keeps brainline's meaning: uncached
    const durationMs = span.duration[0] * 1e3 + span.duration[1] / 1e6;
    expect(Math.abs(durationMs - record.duration_ms)).toBeLessThan(0.01);
    const base = {
      "gen_ai.operation.name": "chat",
      "gen_ai.provider.name": "custom",
      "gen_ai.request.model": "test-model",
      "gen_ai.response.model": "served-model",
      "server.address": "127.0.0.1",
      "server.port": port,
    };
    expect(await points()).toEqual([
      ["gen_ai.client.operation.duration", base, 1, record.duration_ms / 1000],
      ["gen_ai.client.operation.time_to_first_chunk", base, 1, ttfc],
      ["gen_ai.client.token.usage", { ...base, "gen_ai.token.type": "input" }, 1, 10],
      ["gen_ai.client.token.usage", { ...base, "gen_ai.token.type": "output" }, 1, 2],
    ]);
  });

  it("a failed turn has an error status and type", async () => {
    await expect(
      run({ status: 401, json: { error: { message: "no" } } }, { telemetry: true }),
    ).rejects.toMatchObject({ code: "http_status" });
    const span = onlySpan();
    expect(span.status).toEqual({ code: SpanStatusCode.ERROR, message: "http_status" });
    expect(span.attributes["error.type"]).toBe("http_status");
    expect(span.attributes).not.toHaveProperty("gen_ai.response.finish_reasons");
    expect(span.attributes).not.toHaveProperty("brainline.turn.cancelled");
    const [point, ...rest] = await points();
    expect(rest).toEqual([]);
    expect(point?.[0]).toBe("gen_ai.client.operation.duration");
    expect(point?.[1]["error.type"]).toBe("http_status");
  });

  it("a cancelled turn ends without an error", async () => {
    await run({ text: ["Once ", "upon"], stall: 1 }, { telemetry: true }, 1);
    const span = onlySpan();
    expect(span.status.code).toBe(SpanStatusCode.UNSET);
    expect(span.attributes["brainline.turn.cancelled"]).toBe(true);
    expect(span.attributes).not.toHaveProperty("error.type");
    expect(span.attributes).not.toHaveProperty("gen_ai.response.finish_reasons");
    const durations = (await points()).filter((p) => p[0] === "gen_ai.client.operation.duration");
    expect(durations.map((p) => p[1]["brainline.turn.cancelled"])).toEqual([true]);
  });

  it("a retried turn is one span counting its attempts", async () => {
    const script = [
      { status: 503, headers: { "retry-after-ms": "0" }, json: { error: {} } },
      { text: ["ok"] },
    ];
    await run(script, { telemetry: true, maxRetries: 1 });
    const span = onlySpan();
    expect(span.attributes["brainline.turn.attempts"]).toBe(2);
    expect(span.attributes).not.toHaveProperty("error.type");
  });

  it("the span is a child of the span active at the start", async () => {
    context.setGlobalContextManager(new StorageContextManager());
    const server = new MockServer({ text: ["Hi", "!"] });
    const url = await server.start();
    const llm = new CustomLLM({ baseUrl: url, model: "test-model", telemetry: true });
    const parent = trace.getTracer("test").startSpan("pipeline");
    try {
      // The turn starts inside the caller's span and ends after it.
      const stream = context.with(trace.setSpan(context.active(), parent), () =>
        llm.stream(MESSAGES),
      );
      await context.with(trace.setSpan(context.active(), parent), () => stream.next());
      for await (const _ of stream) {
      }
    } finally {
      parent.end();
      await llm.close();
      await server.stop();
    }
    const child = spans.getFinishedSpans().find((s) => s.name === "chat test-model");
    expect(child?.parentSpanContext?.spanId).toBe(parent.spanContext().spanId);
    expect(child?.spanContext().traceId).toBe(parent.spanContext().traceId);
  });

  it("content is recorded only when captured", async () => {
    const script = {
      reasoning: ["hm"],
      text: ["Hi"],
      tool_calls: [{ id: "c1", name: "f", arguments: ['{"a":', "1}"] }],
    };
    await run(script, { telemetry: true });
    expect(onlySpan().attributes).not.toHaveProperty("gen_ai.input.messages");
    expect(onlySpan().attributes).not.toHaveProperty("gen_ai.output.messages");
    spans.reset();
    await run(script, { telemetry: true, captureMessageContent: true });
    const attributes = onlySpan().attributes;
    expect(JSON.parse(String(attributes["gen_ai.input.messages"]))).toEqual([
      { role: "user", parts: [{ type: "text", content: "Hi" }] },
    ]);
    expect(JSON.parse(String(attributes["gen_ai.output.messages"]))).toEqual([
      {
        role: "assistant",
        parts: [
          { type: "reasoning", content: "hm" },
          { type: "text", content: "Hi" },
          { type: "tool_call", id: "c1", name: "f", arguments: '{"a":1}' },
        ],
        finish_reason: "tool_calls",
      },
    ]);
  });

  it("a preset names its well-known provider", async () => {
    const server = new MockServer({ text: ["Hi"] });
    const url = await server.start();
    try {
      const llm = new MistralLLM({ baseUrl: url, model: "m", apiKey: KEY, telemetry: true });
      await llm.complete(MESSAGES);
      await llm.close();
    } finally {
      await server.stop();
    }
    expect(onlySpan().attributes["gen_ai.provider.name"]).toBe("mistral_ai");
  });

  it("a failing exporter never breaks the turn", async () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    vi.spyOn(trace, "getTracerProvider").mockImplementation(() => {
      throw new Error("exporter down");
    });
    const events = (await run({ text: ["Hi"] }, { telemetry: true })) as { type: string }[];
    expect(events.map((e) => e.type)).toEqual(["text", "finish"]);
    expect(warn).toHaveBeenCalledWith("brainline: telemetry failed: Error; the turn goes on");
  });
});
