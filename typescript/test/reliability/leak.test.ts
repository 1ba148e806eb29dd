// Leak test (tests/reliability/test_leaks.py mirrors it): thousands of turns with barge-ins before
// the headers, mid-stream and during stalls, dropped and reset connections, HTTP and stream errors,
// on 4 concurrent workers against the MockServer; every turn ends as its kind says. Afterwards the
// server sees no more open connections than the pools hold, no timer is left, and the heap after
// a full GC has grown by less than HEAP_BOUND since the warm-up. BRAINLINE_LEAK_TURNS sets the count.
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { afterAll, beforeAll, expect, it } from "vitest";
import { BrainlineError } from "../../src/core/errors.js";
import { FallbackLLM } from "../../src/core/fallback.js";
import { CustomLLM } from "../../src/generated/custom.js";
import { Mock } from "./mock.js";

const TURNS = Number(process.env.BRAINLINE_LEAK_TURNS ?? 10000);
const WORKERS = 4;
const WARMUP = 300;
const HEAP_BOUND = 16 * 1024 * 1024;
const MESSAGES = [{ role: "user", content: "hi" }];

// The same table as tests/reliability/faults.py.
const KINDS: Record<string, unknown> = {
  ok: { text: ["Hel", "lo", "!"], usage: { prompt_tokens: 3, completion_tokens: 3 } },
  json: { text: ["whole"], stream: false },
  barge_headers: { text: ["x"], delay_before_headers_ms: 300 },
  barge_mid: { text: Array(20).fill("a"), delay_ms: 2 },
  barge_stall: { text: ["a", "b"], stall: 1 },
  drop: { text: ["a", "b", "c"], drop_after: 1 },
  reset: { text: ["a", "b", "c"], drop_after: 1, drop_reset: true },
  http_500: { status: 500, json: { error: { message: "boom" } } },
  stream_error: { sse: [{ data: { error: { message: "boom" } } }] },
};
const OUTCOME: Record<string, string> = {
  ok: "finish",
  json: "finish",
  barge_headers: "cancelled",
  barge_mid: "cancelled",
  barge_stall: "cancelled",
  drop: "interrupted",
  reset: "interrupted",
  http_500: "http_status",
  stream_error: "server_error",
};

// FallbackLLM with hedging (faults.py's FALLBACK_* names): a primary that never answers, or, for the
// kinds that fail before their first event, one that answers after 100 ms; the kind's route is the
// backup the hedge timer starts.
const FALLBACK_PRIMARY: Record<string, string> = Object.fromEntries(
  Object.keys(KINDS).map((k) => [k, k === "http_500" || k === "stream_error" ? "slow" : "silent"]),
);
const HEDGE_AFTER = 0.01;
const FALLBACK_OUTCOME: Record<string, string> = {
  ...OUTCOME,
  http_500: "finish",
  stream_error: "finish",
};

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

function heap(): number {
  for (let i = 0; i < 3; i++) gc();
  return process.memoryUsage().heapUsed;
}

function timers(): number {
  return process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
}

let server: Mock;
beforeAll(async () => {
  server = await Mock.start({
    routes: {
      ...Object.fromEntries(Object.entries(KINDS).map(([k, v]) => [`/${k}/`, v])),
      "/silent/": { text: ["never"], stall: "headers" },
      "/slow/": { text: ["slow"], delay_before_headers_ms: 100 },
    },
  });
});
afterAll(async () => {
  await server.close();
});

async function turn(llm: CustomLLM | FallbackLLM, kind: string): Promise<string> {
  const barge = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  if (kind === "barge_headers") timer = setTimeout(() => barge.abort(), 5);
  let events = 0;
  let finished = false;
  try {
    for await (const event of llm.stream(MESSAGES, undefined, { signal: barge.signal })) {
      events += 1;
      finished = event.type === "finish";
      if (kind === "barge_mid" && events === 2) barge.abort();
      if (kind === "barge_stall" && events === 1) timer = setTimeout(() => barge.abort(), 5);
    }
  } catch (err) {
    if (err instanceof BrainlineError) return err.code;
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return finished ? "finish" : "cancelled";
}

it(`${TURNS} turns with faults leak nothing`, { timeout: 180_000 }, async () => {
  const origin = server.url.replace(/\/v1$/, "");
  const kinds = Object.keys(KINDS);
  const llms = Object.fromEntries(
    kinds.map((k) => [
      k,
      new CustomLLM({ baseUrl: `${origin}/${k}/v1`, model: "m", maxRetries: 0 }),
    ]),
  );
  // A fixed sequence (xorshift), so a failure can be replayed.
  let seed = 8;
  const plan = Array.from({ length: TURNS }, () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return kinds[(seed >>> 0) % kinds.length] as string;
  });
  const outcomes = new Map<string, number>();
  const wrong: string[] = [];
  const timersBefore = timers();

  const run = async (from: number, to: number) => {
    let next = from;
    const worker = async () => {
      while (next < to) {
        const kind = plan[next++] as string;
        const got = await turn(llms[kind] as CustomLLM, kind);
        outcomes.set(got, (outcomes.get(got) ?? 0) + 1);
        if (got !== OUTCOME[kind]) wrong.push(`${kind} -> ${got}`);
      }
    };
    await Promise.all(Array.from({ length: WORKERS }, worker));
  };

  const started = performance.now();
  await run(0, Math.min(WARMUP, TURNS));
  const heapBefore = heap();
  await run(Math.min(WARMUP, TURNS), TURNS);
  const elapsed = (performance.now() - started) / 1000;
  await new Promise((ok) => setTimeout(ok, 200));
  const heapAfter = heap();
  let records = await server.records();
  for (let i = 0; i < 50 && records.connections_open > WORKERS * kinds.length; i++) {
    await new Promise((ok) => setTimeout(ok, 100));
    records = await server.records();
  }
  const open = records.connections_open;
  await Promise.all(Object.values(llms).map((llm) => llm.close()));

  expect(wrong.slice(0, 10)).toEqual([]);
  expect([...outcomes.values()].reduce((a, b) => a + b, 0)).toBe(TURNS);
  for (const outcome of new Set(Object.values(OUTCOME)))
    expect(outcomes.get(outcome)).toBeGreaterThan(0);
  // Pools: at most one keep-alive connection per concurrent turn, per client.
  expect(open).toBeLessThanOrEqual(WORKERS * kinds.length);
  expect(timers()).toBeLessThanOrEqual(timersBefore);
  expect(heapAfter - heapBefore).toBeLessThan(HEAP_BOUND);
  console.info(
    `${TURNS} turns in ${elapsed.toFixed(1)} s, ${JSON.stringify(Object.fromEntries(outcomes))}, ` +
      `heap ${((heapAfter - heapBefore) / 1024).toFixed(0)} KiB, ${open} open connections`,
  );
});

it("FallbackLLM with hedging leaks nothing", { timeout: 180_000 }, async () => {
  const origin = server.url.replace(/\/v1$/, "");
  const kinds = Object.keys(KINDS);
  const turns = Math.max(Math.floor(TURNS / 5), 2 * WARMUP);
  const endpoint = (route: string) =>
    new CustomLLM({ baseUrl: `${origin}/${route}/v1`, model: "m", maxRetries: 0, timeout: 5 });
  const llms = Object.fromEntries(
    kinds.map((k) => [
      k,
      new FallbackLLM([endpoint(FALLBACK_PRIMARY[k] as string), endpoint(k)], {
        hedgeAfter: HEDGE_AFTER,
      }),
    ]),
  );
  let seed = 13;
  const plan = Array.from({ length: turns }, () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return kinds[(seed >>> 0) % kinds.length] as string;
  });
  const outcomes = new Map<string, number>();
  const wrong: string[] = [];
  const timersBefore = timers();
  const run = async (from: number, to: number) => {
    let next = from;
    const worker = async () => {
      while (next < to) {
        const kind = plan[next++] as string;
        const got = await turn(llms[kind] as FallbackLLM, kind);
        outcomes.set(got, (outcomes.get(got) ?? 0) + 1);
        if (got !== FALLBACK_OUTCOME[kind]) wrong.push(`${kind} -> ${got}`);
      }
    };
    await Promise.all(Array.from({ length: WORKERS }, worker));
  };

  const started = performance.now();
  await run(0, WARMUP);
  const heapBefore = heap();
  await run(WARMUP, turns);
  const elapsed = (performance.now() - started) / 1000;
  await new Promise((ok) => setTimeout(ok, 200));
  const heapAfter = heap();
  // No hedge timer, retry wait or read timer of a finished turn is left.
  const timersAfter = timers();
  let records = await server.records();
  for (let i = 0; i < 50 && records.connections_open > 2 * WORKERS * kinds.length; i++) {
    await new Promise((ok) => setTimeout(ok, 100));
    records = await server.records();
  }
  const open = records.connections_open;
  await Promise.all(Object.values(llms).map((llm) => llm.close()));

  expect(wrong.slice(0, 10)).toEqual([]);
  expect([...outcomes.values()].reduce((a, b) => a + b, 0)).toBe(turns);
  for (const outcome of new Set(Object.values(FALLBACK_OUTCOME)))
    expect(outcomes.get(outcome)).toBeGreaterThan(0);
  // Two pools per FallbackLLM: at most one keep-alive connection per concurrent turn each.
  expect(open).toBeLessThanOrEqual(2 * WORKERS * kinds.length);
  expect(timersAfter).toBeLessThanOrEqual(timersBefore);
  expect(heapAfter - heapBefore).toBeLessThan(HEAP_BOUND);
  console.info(
    `${turns} FallbackLLM turns in ${elapsed.toFixed(1)} s, ` +
      `${JSON.stringify(Object.fromEntries(outcomes))}, ` +
      `heap ${((heapAfter - heapBefore) / 1024).toFixed(0)} KiB, ${open} open connections`,
  );
});
