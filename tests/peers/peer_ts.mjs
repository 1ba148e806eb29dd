// TypeScript half of `nox -s peers` (driven by tests/peers/run_peers.py): runs the turns of a JSON
// file through the built package (typescript/dist) and prints one JSON result per turn, shaped like
// run_peers.py's Python results, so the two languages can be compared as data.
// Usage: node peer_ts.mjs <typescript package dir> <turns.json>
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [packageDir, turnsFile] = process.argv.slice(2);
const mod = await import(pathToFileURL(join(packageDir, "dist", "index.js")).href);
const CLASSES = { litellm: mod.LiteLLMProxyLLM, hermes: mod.HermesLLM };

const camel = (name) => name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());

function errorInfo(err) {
  const info = {
    class: err?.constructor?.name ?? typeof err,
    code: err?.code ?? null,
    message: err instanceof Error ? err.message : String(err),
  };
  if (err instanceof mod.APIStatusError) {
    info.status = err.status;
    info.body = err.body;
  }
  if (err instanceof mod.StreamError) info.partial_text = err.partialText;
  return info;
}

const results = [];
for (const turn of JSON.parse(readFileSync(turnsFile, "utf8"))) {
  const options = Object.fromEntries(Object.entries(turn.options).map(([k, v]) => [camel(k), v]));
  const llm = new CLASSES[turn.provider](options);
  const events = [];
  let error = null;
  try {
    for await (const ev of llm.stream(turn.messages, null, { callId: turn.call_id ?? undefined })) {
      events.push(ev);
    }
  } catch (err) {
    error = errorInfo(err);
  } finally {
    await llm.close();
  }
  results.push({ name: turn.name, events, error });
}
process.stdout.write(`${JSON.stringify(results)}\n`);
