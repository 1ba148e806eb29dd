// The TypeScript half of the soak (tests/soak/soak.py starts the server and runs this with --node):
// the same fault mix, concurrent calls of back-to-back turns through typescript/dist/index.js.
// The kinds named `fallback/<kind>` run the same turn through a FallbackLLM with hedging.
// usage: node soak.mjs CONFIG.json   (CONFIG: {origin, kinds, outcome, fallback_primary,
//   fallback_outcome, hedge_after, calls, seconds, hang, entry})
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const { BrainlineError, CustomLLM, FallbackLLM } = await import(pathToFileURL(config.entry).href);
const endpoint = (route) => new CustomLLM({ baseUrl: `${config.origin}/${route}/v1`, model: "m", timeout: 10 });
const llms = {};
const outcome = { ...config.outcome };
for (const k of Object.keys(config.kinds)) {
  llms[k] = endpoint(k);
  llms[`fallback/${k}`] = new FallbackLLM([endpoint(config.fallback_primary[k]), endpoint(k)], {
    hedgeAfter: config.hedge_after,
  });
  outcome[`fallback/${k}`] = config.fallback_outcome[k];
}
const kinds = Object.keys(llms);
const MESSAGES = [{ role: "user", content: "hi" }];
const outcomes = {};
const unexpected = {};
const timeouts = {};
const untyped = {};
// Turn times by kind: milliseconds (whole) -> count, so the records do not grow with the turns.
const durations = Object.fromEntries(kinds.map((k) => [k, new Map()]));
const TIMEOUTS = new Set(["read_timeout", "connect_timeout"]);
const rss = [];
let hangs = 0;
const started = performance.now();
const end = started + config.seconds * 1000;
const count = (map, key) => {
  map[key] = (map[key] ?? 0) + 1;
};

async function turn(llm, kind) {
  const barge = new AbortController();
  let timer = kind === "barge_headers" ? setTimeout(() => barge.abort(), 5) : undefined;
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

async function call(seed) {
  let state = seed + 1;
  while (performance.now() < end) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    const kind = kinds[(state >>> 0) % kinds.length];
    const t0 = performance.now();
    let hangTimer;
    const hang = new Promise((resolve) => {
      hangTimer = setTimeout(() => resolve("__hang__"), config.hang * 1000);
    });
    let got;
    try {
      got = await Promise.race([turn(llms[kind], kind.replace(/^fallback\//, "")), hang]);
    } catch (err) {
      count(untyped, err?.constructor?.name ?? typeof err);
      continue;
    } finally {
      clearTimeout(hangTimer);
    }
    if (got === "__hang__") {
      hangs += 1;
      continue;
    }
    const ms = Math.floor(performance.now() - t0);
    durations[kind].set(ms, (durations[kind].get(ms) ?? 0) + 1);
    count(outcomes, got);
    if (got !== outcome[kind]) count(TIMEOUTS.has(got) ? timeouts : unexpected, `${kind} -> ${got}`);
  }
}

const sampler = setInterval(
  () => rss.push([((performance.now() - started) / 1000).toFixed(1), process.memoryUsage().rss / 2 ** 20]),
  Math.min(10, Math.max(1, config.seconds / 30)) * 1000,
);
await Promise.all(Array.from({ length: config.calls }, (_, i) => call(i)));
clearInterval(sampler);
rss.push([((performance.now() - started) / 1000).toFixed(1), process.memoryUsage().rss / 2 ** 20]);
await Promise.all(Object.values(llms).map((llm) => llm.close()));
/** The bucket (ms) below which a fraction p of the turns ended. */
const pct = (histogram, p) => {
  const total = [...histogram.values()].reduce((a, b) => a + b, 0);
  const rank = Math.floor(p * total);
  let seen = 0;
  for (const ms of [...histogram.keys()].sort((a, b) => a - b)) {
    seen += histogram.get(ms);
    if (seen > rank) return ms;
  }
  return 0;
};
const size = (histogram) => [...histogram.values()].reduce((a, b) => a + b, 0);
const every = new Map();
for (const histogram of Object.values(durations)) {
  for (const [ms, n] of histogram) every.set(ms, (every.get(ms) ?? 0) + n);
}
process.stdout.write(
  JSON.stringify({
    turns: size(every),
    outcomes,
    unexpected,
    timeouts,
    untyped,
    hangs,
    turn_ms: { p50: pct(every, 0.5), p99: pct(every, 0.99) },
    turn_ms_by_kind: Object.fromEntries(
      kinds.map((k) => [k, { p50: pct(durations[k], 0.5), p99: pct(durations[k], 0.99), n: size(durations[k]) }]),
    ),
    rss_mb: rss.map(([t, m]) => [Number(t), Math.round(m * 10) / 10]),
  }),
);
