// The npm main entry (and brainline/testing) never load @livekit/agents, an optional peer dependency
// that only brainline/livekit imports: checked in fresh node processes, ESM through a resolve hook
// that refuses @livekit/*, CommonJS through require.cache. Each check has its positive control.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";

const here = new URL(".", import.meta.url);
const HOOKS = `data:text/javascript,import{register}from"node:module";register(${JSON.stringify(
  new URL("no-livekit-hooks.mjs", here).href,
)});`;

function node(args) {
  const run = spawnSync(process.execPath, args, { cwd: here, encoding: "utf8", timeout: 30_000 });
  return { status: run.status, output: run.stdout + run.stderr };
}

function esm(specifier) {
  return node([
    "--import",
    HOOKS,
    "--input-type=module",
    "-e",
    `await import(${JSON.stringify(specifier)});`,
  ]);
}

function cjsLoaded(specifier) {
  const script = `require(${JSON.stringify(specifier)});
process.stdout.write(JSON.stringify(Object.keys(require.cache).filter((p) => p.includes("/node_modules/@livekit/"))));`;
  const run = node(["-e", script]);
  assert.equal(run.status, 0, run.output);
  return JSON.parse(run.output);
}

test("ESM: import 'brainline' and 'brainline/testing' resolve nothing under @livekit/", () => {
  for (const entry of ["brainline", "brainline/testing"]) {
    const run = esm(entry);
    assert.equal(run.status, 0, `${entry}: ${run.output}`);
  }
  const control = esm("brainline/livekit");
  assert.notEqual(control.status, 0, "the hook must catch brainline/livekit's import");
  assert.match(control.output, /@livekit\/agents/);
});

test("CommonJS: require('brainline') loads nothing under @livekit/; require('brainline/livekit') works", () => {
  assert.deepEqual(cjsLoaded("brainline"), []);
  assert.deepEqual(cjsLoaded("brainline/testing"), []);
  assert.ok(cjsLoaded("brainline/livekit").length > 0);
  const run = node([
    "-e",
    `const { LLM } = require("brainline/livekit"); const { llm } = require("@livekit/agents");
const { CustomLLM } = require("brainline");
const x = new LLM({ llm: new CustomLLM({ baseUrl: "http://127.0.0.1:9/v1", model: "m" }) });
if (!(x instanceof llm.LLM) || x.model !== "m") process.exit(1);`,
  ]);
  assert.equal(run.status, 0, run.output);
});
