// Run parity cases through brainline's public TypeScript API (the built package).
//
//   node tests/parity/runner_ts.mjs [--entry path/to/index.js] [--transport fetch] < payload.json > transcripts.json
//
// stdin: {"origin": "http://127.0.0.1:P", "closed_origin": ..., "stalled_origin": ..., "scrub_env": [...],
//         "option_names": [...], "cases": [case, ...]}  (written by tests/parity/test_parity.py)
// stdout: {"<case id>": raw record, ...}, the same raw record runner_py.py builds; runner_py.normalize
// turns both into transcripts, so the two languages are observed and normalised alike.
// Each case talks to its own route on the mock server: {origin}/ts/<case id>/v1.
// --transport fetch gives every client `fetch: globalThis.fetch` (the fetch transport) and uses
// the routes {origin}/ts-fetch/<case id>/v1 (runner "ts-fetch" in runner_py.py).
// The named session-key factories below must stay identical to FACTORIES in runner_py.py.

import http from "node:http";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const PROVIDER_CLASSES = {
  custom: "CustomLLM",
  openai_compatible: "OpenAICompatibleLLM",
  hermes: "HermesLLM",
  openclaw: "OpenClawLLM",
  ollama: "OllamaLLM",
  lmstudio: "LMStudioLLM",
  vllm: "VLLMLLM",
  mistral: "MistralLLM",
};
const CANCEL_PROMPT_MS = 1000;
const CLOSE_WAIT_MS = 2000;

const FACTORIES = {
  upper_call_id: (ctx) => (ctx.callId ? ctx.callId.toUpperCase() : null),
  context: (ctx) => [ctx.callId, ctx.callee, ctx.callerHash].map((v) => (v ? v : "-")).join("|"),
  caller_hash_short: (ctx) => (ctx.callerHash ? `h-${ctx.callerHash.slice(0, 8)}` : null),
  none: () => null,
  empty: () => "",
  crlf: () => "bad\r\nkey",
};

const camel = (name) => name.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const DEFAULT = Symbol("default");
// Set from --transport in main(): the route prefix, and the fetch function every client gets.
let ROUTE = "/ts";
let FETCH;

function parseArgs(argv) {
  const args = { entry: new URL("../../typescript/dist/index.js", import.meta.url).href };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--entry") args.entry = pathToFileURL(argv[++i]).href;
    else if (argv[i] === "--transport") args.transport = argv[++i];
  }
  return args;
}

// Control requests go over node:http with a fresh connection each time, so they never share a
// pooled socket with the fetch calls under test.
function getJSONText(url) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
      res.on("error", reject);
    });
    req.on("error", reject);
  });
}

class Records {
  constructor(origin, prefix) {
    this.url = `${origin}/__mock/requests?prefix=${encodeURIComponent(`${prefix}/`)}`;
  }
  async text() {
    return getJSONText(this.url);
  }
  async fetch() {
    return JSON.parse(await this.text()).requests;
  }
  async openConnections() {
    const snapshot = JSON.parse(await this.text());
    const used = new Set(snapshot.requests.map((r) => r.connection));
    return snapshot.connections.filter((c) => used.has(c.id) && c.closed_at === null).length;
  }
  // For each new request, in arrival order: whether the client closed it before the response ended
  // (FallbackLLM cases: the losers' closes). Waits for each to settle.
  async closes(seen) {
    const deadline = Date.now() + CLOSE_WAIT_MS;
    for (;;) {
      const requests = (await this.fetch()).slice(seen);
      const settled = requests.every((r) => r.client_closed || r.completed || r.dropped);
      if (settled || Date.now() >= deadline) return requests.map((r) => Boolean(r.client_closed));
      await sleep(10);
    }
  }
  async sawClose(seen) {
    const deadline = Date.now() + CLOSE_WAIT_MS;
    for (;;) {
      const requests = await this.fetch();
      if (requests.length <= seen) return null;
      const last = requests[requests.length - 1];
      if (last.client_closed || last.completed || last.dropped) return Boolean(last.client_closed);
      if (Date.now() >= deadline) return false;
      await sleep(10);
    }
  }
}

function resolveOption(value, baseUrl, payload) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$factory") return FACTORIES[value.$factory];
    if (keys.length === 1 && keys[0] === "$url") {
      if (value.$url === "default") return DEFAULT;
      return {
        mock: baseUrl,
        mock_slash: `${baseUrl}/`,
        closed: `${payload.closed_origin}/v1`,
        stalled: `${payload.stalled_origin}/v1`,
      }[value.$url];
    }
  }
  return value;
}

// The options of a case (or of one FallbackLLM endpoint, on its route `prefix`).
function buildOptions(testCase, payload, prefix = `${ROUTE}/${testCase.id}`) {
  const baseUrl = `${payload.origin}${prefix}/v1`;
  const options = {};
  if (!("base_url" in testCase.options)) options.baseUrl = baseUrl;
  for (const [name, value] of Object.entries(testCase.options)) {
    const resolved = resolveOption(value, baseUrl, payload);
    if (resolved !== DEFAULT) options[camel(name)] = resolved;
  }
  if (FETCH !== undefined) options.fetch = FETCH;
  return options;
}

function withEnv(testCase, payload, fn) {
  const env = testCase.env ?? {};
  const names = new Set([...payload.scrub_env, ...Object.keys(env)]);
  const saved = new Map([...names].map((n) => [n, process.env[n]]));
  try {
    for (const name of payload.scrub_env) delete process.env[name];
    for (const [name, value] of Object.entries(env)) {
      if (value === null) delete process.env[name];
      else process.env[name] = value;
    }
    return fn();
  } finally {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
}

function errorInfo(mod, err) {
  const info = {
    class: err?.constructor?.name ?? typeof err,
    code: err?.code ?? null,
    message: err instanceof Error ? err.message : String(err),
  };
  if (mod.APIStatusError && err instanceof mod.APIStatusError) {
    info.status = err.status;
    info.retry_after = err.retryAfter ?? null;
    info.body = err.body;
    info.request_id = err.requestId;
  }
  if (mod.StreamError && err instanceof mod.StreamError) {
    info.partial_text = err.partialText;
    info.request_id = err.requestId;
  }
  if (mod.AllEndpointsFailedError && err instanceof mod.AllEndpointsFailedError) {
    info.errors = err.errors.map((e) => e.code);
  }
  return info;
}

function turnInfo(turn) {
  const usage = turn.usage;
  return {
    text: turn.text,
    reasoning: turn.reasoning,
    tool_calls: (turn.toolCalls ?? []).map((c) => ({
      index: c.index,
      id: c.id,
      name: c.name,
      arguments: c.arguments,
    })),
    usage:
      usage == null
        ? null
        : {
            input_tokens: usage.inputTokens ?? usage.input_tokens,
            output_tokens: usage.outputTokens ?? usage.output_tokens,
            cache_read_tokens: usage.cacheReadTokens ?? usage.cache_read_tokens,
          },
    finish_reason: turn.finishReason ?? null,
  };
}

const jsonClone = (value) => JSON.parse(JSON.stringify(value));

async function runCall(mod, llm, call, records, closes = false, sink = undefined) {
  if ("sleep_ms" in call) await sleep(call.sleep_ms);
  const seen = (await records.fetch()).length;
  const delivered = sink === undefined ? 0 : sink.length;
  const method = call.method ?? "stream";
  const opts = {};
  for (const name of ["call_id", "caller", "callee"]) {
    if (name in call && call[name] !== null) opts[camel(name)] = call[name];
  }
  const tools = call.tools ?? undefined;
  const cancel = call.cancel;
  const result = { events: [], error: null };
  const controller = new AbortController();
  let firedAt = null;
  const fire = () => {
    if (firedAt === null) {
      firedAt = performance.now();
      controller.abort();
    }
  };
  let timer = null;
  const started = performance.now();
  if (cancel) {
    opts.signal = controller.signal;
    if (cancel.before) fire();
    else if ("after_ms" in cancel) timer = setTimeout(fire, cancel.after_ms);
  }
  try {
    if (method === "warmup") {
      await llm.warmup();
    } else if (method === "complete") {
      result.turn = jsonClone(turnInfo(await llm.complete(call.messages, tools, opts)));
    } else {
      for await (const event of llm.stream(call.messages, tools, opts)) {
        result.events.push(jsonClone(event));
        if (cancel?.after_events !== undefined && result.events.length >= cancel.after_events) {
          fire();
        }
      }
    }
  } catch (err) {
    result.error = errorInfo(mod, err);
  }
  const ended = performance.now();
  if ("within_ms" in call) result.in_time = ended - started <= call.within_ms;
  if (timer !== null) clearTimeout(timer);
  if (cancel) {
    result.cancel = {
      fired: firedAt !== null,
      prompt: firedAt !== null && ended - firedAt <= CANCEL_PROMPT_MS,
    };
  }
  result.server_saw_close = await records.sawClose(seen);
  if (closes) result.closed = await records.closes(seen);
  if (sink !== undefined) result.metrics = jsonClone(sink.slice(delivered));
  return result;
}

async function runCaseRaw(mod, testCase, payload) {
  const records = new Records(payload.origin, `${ROUTE}/${testCase.id}`);
  const raw = { construct_error: null, turns: [] };
  const sink = testCase.collect_metrics ? [] : undefined;
  const endpoints = testCase.fallback;
  const className = PROVIDER_CLASSES[testCase.provider] ?? "FallbackLLM";
  const Cls = mod[className];
  let llm;
  try {
    if (typeof Cls !== "function") throw new TypeError(`the package exports no ${className}`);
    if (endpoints === undefined) {
      const options = buildOptions(testCase, payload);
      if (sink !== undefined) options.onMetrics = (record) => sink.push(record);
      llm = withEnv(testCase, payload, () => new Cls(options));
    } else {
      // A FallbackLLM over endpoints, each on its own route.
      const options = {};
      for (const [name, value] of Object.entries(testCase.options)) options[camel(name)] = value;
      llm = withEnv(testCase, payload, () => {
        const llms = endpoints.map((e, i) => {
          const Endpoint = mod[PROVIDER_CLASSES[e.provider]];
          return new Endpoint(buildOptions(e, payload, `${ROUTE}/${testCase.id}/e${i}`));
        });
        return new Cls(llms, options);
      });
    }
  } catch (err) {
    raw.construct_error = errorInfo(mod, err);
    raw.requests = await records.text();
    return raw;
  }
  try {
    if (testCase.inspect_config) {
      raw.config = {};
      for (const name of testCase.inspect_config) {
        const value = name === "provider_key" ? Cls.providerKey : llm.config?.[camel(name)];
        raw.config[name] = value === undefined ? null : jsonClone(value);
      }
    }
    const calls = testCase.calls ?? (testCase.call ? [testCase.call] : []);
    for (const call of calls) {
      raw.turns.push(await runCall(mod, llm, call, records, endpoints !== undefined, sink));
    }
    if (testCase.count_open_connections) raw.open_connections = await records.openConnections();
  } finally {
    await llm.close?.();
  }
  raw.requests = await records.text();
  return raw;
}

async function runCase(mod, testCase, payload) {
  const limitMs = (testCase.timeout_s ?? 10) * 1000;
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve(null), limitMs);
  });
  try {
    const raw = await Promise.race([runCaseRaw(mod, testCase, payload), timeout]);
    if (raw !== null) return raw;
  } finally {
    clearTimeout(timer);
  }
  const records = new Records(payload.origin, `${ROUTE}/${testCase.id}`);
  return {
    runner_error: `the case did not finish within ${limitMs / 1000} s`,
    requests: await records.text(),
  };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.transport === "fetch") {
    ROUTE = "/ts-fetch";
    FETCH = globalThis.fetch;
  } else if (args.transport !== undefined && args.transport !== "socket") {
    throw new Error(`unknown --transport ${args.transport}`);
  }
  const payload = JSON.parse(readFileSync(0, "utf8"));
  const mod = await import(args.entry);
  const out = {};
  for (const testCase of payload.cases) {
    try {
      out[testCase.id] = await runCase(mod, testCase, payload);
    } catch (err) {
      out[testCase.id] = { runner_error: `runner failed: ${err?.stack ?? err}`, requests: [] };
    }
  }
  return JSON.stringify(out);
}

// Exit explicitly: a case that hung (and was given up) may still hold a timer or a socket.
main().then(
  (text) => process.stdout.write(text, () => process.exit(0)),
  (err) => {
    process.stderr.write(`${err?.stack ?? err}\n`);
    process.exit(1);
  },
);
