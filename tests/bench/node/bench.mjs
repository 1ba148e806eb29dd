// The Node side of `nox -s bench`: every candidate client, every figure, against the bench server
// (tests/bench/server.py). Run by tests/bench/run.py:
//   node bench.mjs sequential PORT ROUNDS QUICK   -> JSON of the sequential figures on stdout
//   node bench.mjs concurrent NAME PORT TURNS CHUNKS -> JSON of one candidate's concurrent turns
// Each candidate's turn is the library's own async iterable, iterated here directly.
// The comparison packages come from this folder's own package.json / package-lock.json.

import { readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
// run.py points BRAINLINE_DIST at a snapshot of typescript/dist taken when the run started.
const DIST =
  process.env.BRAINLINE_DIST ?? path.join(HERE, "..", "..", "..", "typescript", "dist", "index.js");
const MESSAGES = [{ role: "user", content: "Say something." }];
const TOOLS = [
  {
    type: "function",
    function: {
      name: "lookup",
      description: "Look something up.",
      parameters: { type: "object", properties: { k: { type: "string" } } },
    },
  },
];
const WORD_CHARS = 5; // every text chunk the server sends is "wNNN "

const log = (line) => process.stderr.write(`${line}\n`);

/**
 * A candidate's turn: open(signal, tools) gives the library's own async iterable (or a promise of
 * it) and chars(item) the text and tool-argument characters an item carries. The bench iterates
 * the library's iterable itself, with no adapter generator in between: a user's `for await` loop
 * is all a library's figures include.
 */
const turnOf = (open, chars) => ({ open, chars });

async function items(turn, signal, tools) {
  return await turn.open(signal, tools);
}

/** brainline events. */
function eventChars(ev) {
  if (ev.type === "text") return ev.content.length;
  if (ev.type === "tool_call") return ev.arguments ? ev.arguments.length : 0;
  return 0;
}

/** openai-node chunks. */
function chunkChars(chunk) {
  const delta = chunk.choices?.[0]?.delta;
  if (!delta) return 0;
  let size = delta.content ? delta.content.length : 0;
  for (const call of delta.tool_calls ?? []) size += call.function?.arguments?.length ?? 0;
  return size;
}

/** Vercel AI SDK fullStream parts (an error part is thrown, as a user's loop would). */
function partChars(part) {
  if (part.type === "text-delta") return part.text.length;
  if (part.type === "tool-input-delta") return part.delta.length;
  if (part.type === "error") throw part.error;
  return 0;
}

/** Candidate factories: make(baseUrl) -> turn. */
const CANDIDATES = {
  "raw fetch": async () => (baseUrl) => {
    const url = `${baseUrl}/chat/completions`;
    return turnOf(async function* turn(signal, tools) {
      const body = { model: "bench", messages: MESSAGES, stream: true, stream_options: { include_usage: true } };
      if (tools) body.tools = TOOLS;
      const response = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "text/event-stream" },
        body: JSON.stringify(body),
        signal,
      });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let done = false;
      for (;;) {
        const { value, done: end } = await reader.read();
        if (end) break;
        if (done) continue; // read to the end, so the connection is reused
        buffer += decoder.decode(value, { stream: true });
        let start = 0;
        for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n", start)) {
          const line = buffer.slice(start, nl);
          start = nl + 1;
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") {
            done = true;
            break;
          }
          const chunk = JSON.parse(data);
          const delta = chunk.choices?.[0]?.delta;
          if (!delta) continue;
          if (delta.content) yield delta.content;
          for (const call of delta.tool_calls ?? []) {
            if (call.function?.arguments) yield call.function.arguments;
          }
        }
        buffer = buffer.slice(start);
      }
    }, (piece) => piece.length);
  },
  brainline: async () => {
    const { OpenAICompatibleLLM } = await import(DIST);
    return (baseUrl) => {
      const llm = new OpenAICompatibleLLM({ baseUrl, model: "bench" });
      return turnOf(
        (signal, tools) => llm.stream(MESSAGES, tools ? TOOLS : undefined, { signal }),
        eventChars,
      );
    };
  },
  // The same client through its fetch transport (the `fetch` option, Node's own fetch): its figures
  // beside the socket transport's (issue 15).
  "brainline (fetch)": async () => {
    const { OpenAICompatibleLLM } = await import(DIST);
    return (baseUrl) => {
      const llm = new OpenAICompatibleLLM({ baseUrl, model: "bench", fetch: globalThis.fetch });
      return turnOf(
        (signal, tools) => llm.stream(MESSAGES, tools ? TOOLS : undefined, { signal }),
        eventChars,
      );
    };
  },
  "openai-node": async () => {
    const { default: OpenAI } = await import("openai");
    return (baseUrl) => {
      const client = new OpenAI({ baseURL: baseUrl, apiKey: "bench", maxRetries: 0 });
      return turnOf(
        (signal, tools) =>
          client.chat.completions.create(
            {
              model: "bench",
              messages: MESSAGES,
              stream: true,
              stream_options: { include_usage: true },
              ...(tools ? { tools: TOOLS } : {}),
            },
            { signal },
          ),
        chunkChars,
      );
    };
  },
  "Vercel AI SDK": async () => {
    const { streamText, jsonSchema, tool } = await import("ai");
    const { createOpenAICompatible } = await import("@ai-sdk/openai-compatible");
    const tools = {
      lookup: tool({ description: "Look something up.", inputSchema: jsonSchema(TOOLS[0].function.parameters) }),
    };
    return (baseUrl) => {
      const provider = createOpenAICompatible({ name: "bench", baseURL: baseUrl, apiKey: "bench", includeUsage: true });
      const model = provider.chatModel("bench");
      return turnOf(
        (signal, withTools) =>
          streamText({
            model,
            messages: MESSAGES,
            maxRetries: 0,
            abortSignal: signal,
            ...(withTools ? { tools } : {}),
            onError: () => {},
          }).fullStream,
        partChars,
      );
    };
  },
};

class Candidate {
  constructor(name, factory, root) {
    this.name = name;
    this.factory = factory;
    this.root = root;
    this.turns = new Map();
  }
  turn(scenario) {
    let turn = this.turns.get(scenario);
    if (!turn) {
      turn = this.factory(`${this.root}/${scenario}`);
      this.turns.set(scenario, turn);
    }
    return turn;
  }
}

function control(port, route) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path: route, method: route === "/stats" ? "GET" : "POST", agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => {
        body += d;
      });
      res.on("end", () => resolve(body ? JSON.parse(body) : null));
    });
    req.on("error", reject);
    req.end();
  });
}

async function drain(turn, tools = false) {
  let size = 0;
  const chars = turn.chars;
  for await (const item of await items(turn, undefined, tools)) size += chars(item);
  return size;
}

async function timeTurns(turn, count, tools = false) {
  const start = performance.now();
  let size = 0;
  for (let i = 0; i < count; i++) size = await drain(turn, tools);
  return [(performance.now() - start) / 1000 / count, size];
}

async function timeToFirst(turn, count) {
  const samples = [];
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    let first;
    for await (const item of await items(turn, undefined, false)) {
      if (first === undefined && turn.chars(item)) first = performance.now() - start;
    }
    samples.push(first / 1000);
  }
  return median(samples);
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function p99(values) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.round(0.99 * (s.length - 1)))];
}

const summary = (v) => ({ median: median(v), min: Math.min(...v), max: Math.max(...v) });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function cancelOnce(candidate, scenario, port) {
  const turn = candidate.turn(scenario);
  const ac = new AbortController();
  let started;
  const startedP = new Promise((r) => {
    started = r;
  });
  const closesBefore = (await control(port, "/stats")).closes.length;
  const task = (async () => {
    try {
      for await (const item of await items(turn, ac.signal, false)) if (turn.chars(item)) started();
    } catch (err) {
      if (!ac.signal.aborted) throw err;
    }
  })();
  if (scenario.startsWith("stallmid")) await startedP;
  else {
    // Until the server holds the request (no headers will come).
    for (let i = 0; i < 1000 && !(await control(port, "/stats")).stalled; i++) await sleep(2);
  }
  const t0 = process.hrtime.bigint();
  ac.abort();
  await task;
  const returned = Number(process.hrtime.bigint() - t0) / 1e9;
  for (let i = 0; i < 200; i++) {
    const { closes } = await control(port, "/stats");
    if (closes.length > closesBefore) return [returned, Number(BigInt(closes.at(-1)) - t0) / 1e9];
    await sleep(5);
  }
  throw new Error(`${candidate.name}: the server never saw the close (${scenario})`);
}

async function load(names) {
  const out = [];
  for (const name of names) out.push([name, await CANDIDATES[name]()]);
  return out;
}

async function sequential(port, rounds, quick) {
  const root = `http://127.0.0.1:${port}`;
  // BRAINLINE_BENCH_ONLY="brainline,raw fetch" limits a run to some candidates (profiling, quick checks).
  const only = process.env.BRAINLINE_BENCH_ONLY?.split(",");
  const names = Object.keys(CANDIDATES).filter((n) => !only || only.includes(n));
  const candidates = (await load(names)).map(([n, f]) => new Candidate(n, f, root));
  const nBig = quick ? 2000 : 20000;
  const figures = [
    ["throughput", `burst/${nBig}`, (t) => timeTurns(t, 1), nBig * WORD_CHARS, false],
    ["one_chunk", "burst/1", (t) => timeTurns(t, 50), WORD_CHARS, false],
    ["first_text", "drip/50", (t) => timeToFirst(t, 10), 0, false],
    ["tool_call", "tools/2000", (t) => timeTurns(t, 1, true), 2000 + 6, true],
  ];
  const results = {};
  for (const [figure, scenario, measure, size, tools] of figures) {
    const samples = Object.fromEntries(candidates.map((c) => [c.name, []]));
    // One unmeasured sample each first: back-to-back turns may settle on a second pooled
    // connection (undici hands a socket back to its pool one event-loop turn after the body ends).
    for (const c of candidates) await measure(c.turn(scenario));
    // Every figure takes 3 x rounds: one busy moment on the shared machine moves a median of five
    // (the raw baseline's own 20k-chunk turn ranged 31-66 ms within one run of five rounds).
    for (let r = 0; r < 3 * rounds; r++) {
      const k = r % candidates.length;
      for (const c of [...candidates.slice(k), ...candidates.slice(0, k)]) {
        // A small unmeasured turn first: it may have to reconnect (a slower candidate's turn can
        // outlast a client's keep-alive expiry), the measured one may not.
        await control(port, "/next/burst/1");
        await drain(c.turn(scenario));
        const before = (await control(port, "/stats")).connections;
        let value = await measure(c.turn(scenario));
        if ((await control(port, "/stats")).connections !== before) throw new Error(`${c.name} ${figure}: opened a new connection (did not reuse its own)`);
        if (Array.isArray(value)) {
          const [v, got] = value;
          if (size && got !== size) throw new Error(`${c.name} ${figure}: got ${got} chars, want ${size}`);
          value = v;
        }
        samples[c.name].push(value);
      }
    }
    results[figure] = Object.fromEntries(Object.entries(samples).map(([n, v]) => [n, summary(v)]));
    log(`  node ${figure}: ${Object.entries(results[figure]).map(([n, v]) => `${n} ${(v.median * 1e3).toFixed(3)} ms`).join(", ")}`);
  }
  for (const [figure, scenario] of [
    ["cancel_head", "stallhead/0"],
    ["cancel_mid", "stallmid/0"],
  ]) {
    const out = {};
    for (const c of candidates) {
      const returned = [];
      const closed = [];
      for (let i = 0; i < (quick ? 10 : 100); i++) {
        const [a, b] = await cancelOnce(c, scenario, port);
        returned.push(a);
        closed.push(b);
      }
      out[c.name] = { returned_p50: median(returned), returned_p99: p99(returned), closed_p50: median(closed), closed_p99: p99(closed) };
    }
    results[figure] = out;
    log(`  node ${figure}: ${Object.entries(out).map(([n, v]) => `${n} ${(v.returned_p99 * 1e3).toFixed(2)}/${(v.closed_p99 * 1e3).toFixed(2)} ms`).join(", ")}`);
  }
  return results;
}

/** VmRSS (now) or VmHWM (peak) in KiB, from /proc/self/status (the peak starts anew at exec). */
function statusKib(field) {
  const line = readFileSync("/proc/self/status", "utf8")
    .split("\n")
    .find((l) => l.startsWith(`${field}:`));
  return Number(line.split(/\s+/)[1]);
}

async function concurrent(name, port, turns, chunks) {
  const [[, factory]] = await load([name]);
  const turn = factory(`http://127.0.0.1:${port}/burst/${chunks}`);
  await drain(turn);
  const base = statusKib("VmRSS");
  const durations = [];
  const one = async () => {
    const start = performance.now();
    const size = await drain(turn);
    durations.push((performance.now() - start) / 1000);
    if (size !== chunks * WORD_CHARS) throw new Error(`${name}: got ${size} chars`);
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: turns }, one));
  const wall = (performance.now() - start) / 1000;
  const peak = statusKib("VmHWM");
  return { wall, p50: median(durations), p99: p99(durations), kib_per_turn: Math.max(0, peak - base) / turns };
}

const [mode, ...args] = process.argv.slice(2);
let out;
if (mode === "sequential") out = await sequential(Number(args[0]), Number(args[1]), args[2] === "1");
else if (mode === "concurrent") out = await concurrent(args[0], Number(args[1]), Number(args[2]), Number(args[3]));
else throw new Error(`unknown mode ${mode}`);
process.stdout.write(`${JSON.stringify(out)}\n`);
process.exit(0);
