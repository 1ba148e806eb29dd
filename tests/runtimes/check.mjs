// The checks every runtime runs (nox -s runtimes): a streamed turn, an assembled tool call, a
// barge-in the server sees, and an error's class and code, through the public API of the packed
// npm package. Plain ESM with no runtime-specific import: main.mjs runs it on Node, Bun and Deno,
// worker.mjs inside workerd. `origin` is the TypeScript mock server that run.mjs started (SCRIPT).
import { APIStatusError, BrainlineError, ConfigError, CustomLLM, VERSION } from "brainline";

/** The mock server's script: one route per check, each with its own base URL. */
export const SCRIPT = {
  responses: [{ status: 404, json: { error: { message: "no such check" } } }],
  routes: {
    "/turn/": { text: ["Hel", "lo"], usage: { prompt_tokens: 3, completion_tokens: 2 } },
    "/tool/": {
      tool_calls: [{ id: "call_1", name: "get_weather", arguments: ['{"city":', '"Rome"}'] }],
    },
    "/cancel/": { text: ["a", "b"], stall: 1 },
    "/error/": {
      status: 429,
      headers: { "Retry-After": "2" },
      json: { error: { message: "slow down" } },
    },
  },
};

const USER = [{ role: "user", content: "hi" }];
const TOOLS = [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }];

function expect(what, got, want) {
  const [g, w] = [JSON.stringify(got), JSON.stringify(want)];
  if (g !== w) throw new Error(`${what}: got ${g}, want ${w}`);
}

/**
 * Runs the checks through `transport` and resolves to what they saw, or rejects with the first
 * failure. "socket": no fetch option, the default; "fetch": the option `fetch: globalThis.fetch`;
 * "auto": no fetch option where node:net cannot load, so the client must use globalThis.fetch on
 * its own. globalThis.fetch is swapped for a counter meanwhile, which tells the transports apart.
 */
export async function runChecks(origin, transport) {
  const platformFetch = globalThis.fetch;
  let viaFetch = 0;
  globalThis.fetch = (input, init) => {
    if (String(input?.url ?? input).includes("/chat/completions")) viaFetch += 1;
    return platformFetch(input, init);
  };
  try {
    const extra = transport === "fetch" ? { fetch: globalThis.fetch } : {};
    const llm = (check, options = {}) =>
      new CustomLLM({ baseUrl: `${origin}/${check}/v1`, model: "m", ...extra, ...options });
    const seen = { runtime: runtime(), brainline: VERSION, transport };

    // 1. A streamed turn.
    const turnLlm = llm("turn");
    const events = [];
    for await (const ev of turnLlm.stream(USER)) events.push(ev);
    await turnLlm.close();
    expect("turn events", events.map((ev) => ev.type), ["text", "text", "usage", "finish"]);
    expect("turn text", events.filter((ev) => ev.type === "text").map((ev) => ev.content).join(""), "Hello");
    expect("turn usage", [events[2].input_tokens, events[2].output_tokens], [3, 2]);
    expect("turn finish", events[3].reason, "stop");
    seen.turn = "Hello";

    // 2. A tool call assembled from its deltas.
    const toolLlm = llm("tool");
    const turn = await toolLlm.complete(USER, TOOLS);
    await toolLlm.close();
    expect("tool calls", turn.toolCalls, [
      { index: 0, id: "call_1", name: "get_weather", arguments: '{"city":"Rome"}' },
    ]);
    expect("tool finish", turn.finishReason, "tool_calls");
    seen.toolCall = turn.toolCalls[0].arguments;

    // 3. Barge-in mid-stream: the iteration ends quietly, and the server sees the connection close.
    const cancelLlm = llm("cancel");
    const barge = new AbortController();
    const cut = [];
    for await (const ev of cancelLlm.stream(USER, undefined, { signal: barge.signal })) {
      cut.push(ev.type);
      barge.abort();
    }
    expect("cancelled events", cut, ["text"]);
    seen.serverSawClose = await serverSawClose(platformFetch, origin, "/cancel/");
    await cancelLlm.close();
    if (!seen.serverSawClose) throw new Error("barge-in: the server did not see the close in 5 s");

    // 4. Errors: the class and the code, from the server (429) and from bad input.
    const errorLlm = llm("error", { maxRetries: 0 });
    try {
      await errorLlm.complete(USER);
      throw new Error("HTTP 429: no error raised");
    } catch (err) {
      if (!(err instanceof APIStatusError && err instanceof BrainlineError)) throw err;
      expect("429 error", [err.name, err.code, err.status, err.retryAfter], ["APIStatusError", "http_status", 429, 2]);
      seen.statusError = `${err.name} ${err.code}`;
    } finally {
      await errorLlm.close();
    }
    try {
      llm("turn", { baseUrl: "ftp://example.invalid/v1" });
      throw new Error("ftp:// base URL: no error raised");
    } catch (err) {
      if (!(err instanceof ConfigError && err instanceof BrainlineError)) throw err;
      expect("config error", [err.name, err.code], ["ConfigError", "invalid_base_url"]);
      seen.configError = `${err.name} ${err.code}`;
    }

    // The transport asked for is the one that carried the turns.
    const want = transport === "socket" ? 0 : 4;
    expect("requests through fetch", viaFetch, want);
    return seen;
  } finally {
    globalThis.fetch = platformFetch;
  }
}

/** The runtime this runs on, as "name version". */
function runtime() {
  const { Bun, Deno, navigator, process } = globalThis;
  if (Bun) return `bun ${Bun.version}`;
  if (Deno) return `deno ${Deno.version.deno}`;
  if (navigator?.userAgent === "Cloudflare-Workers") return "workerd";
  return `node ${process.versions.node}`;
}

/** Polls the mock server's record (GET /__mock/requests) until the request under `prefix` shows
 * the client closed its connection. */
async function serverSawClose(fetchFn, origin, prefix) {
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const answer = await fetchFn(`${origin}/__mock/requests?prefix=${prefix}`);
    const { requests } = await answer.json();
    if (requests.length === 1 && requests[0].client_closed) return true;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return false;
}
