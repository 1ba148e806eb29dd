// nox -s runtimes: the packed npm package on every runtime it supports, each through the socket
// transport (the default) and the fetch transport (`fetch: globalThis.fetch`).
//
// Runs on the Node 22 of this folder (Miniflare needs 22+), after `npm ci` here and
// `npm install --no-save <brainline tarball>`. The TypeScript mock server (brainline/testing) runs
// in this process on 127.0.0.1; Node 18/20/22, Bun and Deno run main.mjs as child processes, and
// workerd runs worker.mjs (bundled with brainline by esbuild, as wrangler does) through Miniflare
// with nodejs_compat. Every run makes the checks of check.mjs; this process then checks what the
// server recorded. The last line is "N passed, N failed".
//
//   node run.mjs [--only=node18,deno,...] [--transport=socket|fetch|auto] [--timeout=60]
import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { builtinModules } from "node:module";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { MockServer } from "brainline/testing";
import { SCRIPT } from "./check.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const BIN = join(HERE, "node_modules");
// workerd refuses a compatibility date later than its own release; this is miniflare's workerd.
const COMPATIBILITY_DATE = "2026-07-30";

/** Each runtime: the version it must report (from the lock file's pins), how to run main.mjs (or
 * the worker's compatibility flags), and the transports to check. */
const RUNTIMES = {
  node18: { expect: "node 18.", command: [join(BIN, "node18/bin/node")] },
  node20: { expect: "node 20.", command: [join(BIN, "node20/bin/node")] },
  node22: { expect: "node 22.", command: [join(BIN, "node22/bin/node")] },
  bun: { expect: "bun ", command: [join(BIN, ".bin/bun")] },
  // --allow-env: brainline reads BRAINLINE_LOG, the proxy variables and api_key_env.
  deno: { expect: "deno ", command: [join(BIN, ".bin/deno"), "run", "--allow-net=127.0.0.1", "--allow-env"] },
  workerd: { expect: "workerd", worker: ["nodejs_compat"] },
  // Without nodejs_compat there is no node:net: the client falls back to fetch on its own ("auto").
  "workerd-no-compat": { expect: "workerd", worker: [], transports: ["auto", "fetch"] },
};

function parseArgs(argv) {
  const args = { only: null, transport: null, timeout: 60 };
  for (const arg of argv) {
    const [key, value] = arg.replace(/^--/, "").split("=");
    if (key === "only") args.only = value.split(",");
    else if (key === "transport") args.transport = value;
    else if (key === "timeout") args.timeout = Number(value);
    else throw new Error(`unknown argument ${arg}`);
  }
  for (const name of args.only ?? []) if (!(name in RUNTIMES)) throw new Error(`unknown runtime ${name}`);
  return args;
}

/** A child's environment: no proxy variables (the mock server is on loopback), no telemetry. */
function childEnv() {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/_proxy$/i.test(k)));
  return { ...env, DO_NOT_TRACK: "1", DENO_NO_UPDATE_CHECK: "1", DENO_NO_PROMPT: "1", NO_COLOR: "1" };
}

/** main.mjs in a child process; resolves to what its checks saw. */
function runProgram(command, origin, transport, timeoutS) {
  const [file, ...pre] = command;
  if (!existsSync(file)) return Promise.reject(new Error(`${file} is not installed (npm ci in tests/runtimes)`));
  const options = { cwd: HERE, env: childEnv(), timeout: timeoutS * 1000, killSignal: "SIGKILL" };
  return new Promise((resolve, reject) => {
    execFile(file, [...pre, join(HERE, "main.mjs"), origin, transport], options, (err, stdout, stderr) => {
      if (err) {
        const why = err.killed ? `killed after ${timeoutS} s` : `exit ${err.code}`;
        reject(new Error(`${why}\n${stderr.trim() || stdout.trim()}`));
      } else {
        resolve(JSON.parse(stdout.trim().split("\n").at(-1)));
      }
    });
  });
}

/** worker.mjs with brainline in one module, as wrangler bundles it: the Node built-ins that
 * nodejs_compat provides stay imports (brainline's build imports "net", not "node:net"). */
async function bundleWorker() {
  const esbuild = await import("esbuild");
  const out = await esbuild.build({
    entryPoints: [join(HERE, "worker.mjs")],
    bundle: true,
    write: false,
    format: "esm",
    platform: "neutral",
    conditions: ["workerd", "worker", "import"],
    external: ["node:*", ...builtinModules],
    logLevel: "warning",
  });
  return out.outputFiles[0].text;
}

/** One Miniflare (workerd) per set of compatibility flags, started on first use. */
const workers = new Map();

async function runWorker(flags, origin, transport, timeoutS) {
  const key = flags.join(",");
  if (!workers.has(key)) {
    const { Miniflare } = await import("miniflare");
    const script = await bundleWorker();
    const mf = new Miniflare({
      modules: [{ type: "ESModule", path: "worker.bundle.mjs", contents: script }],
      compatibilityDate: COMPATIBILITY_DATE,
      compatibilityFlags: flags,
    });
    workers.set(key, mf);
    await mf.ready;
  }
  const body = JSON.stringify({ origin, transport });
  const answer = await withTimeout(
    workers.get(key).dispatchFetch("http://worker.test/", { method: "POST", body }),
    timeoutS,
  );
  const result = await answer.json();
  if (!result.ok) throw new Error(result.error);
  return result.seen;
}

function withTimeout(promise, seconds) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer in ${seconds} s`)), seconds * 1000);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** What the server recorded must agree: four turns, and the barge-in's connection closed by the
 * client before its response ended. */
function checkServer(server) {
  const paths = server.requests.map((r) => r.path);
  const want = ["/turn/v1/chat/completions", "/tool/v1/chat/completions", "/cancel/v1/chat/completions", "/error/v1/chat/completions"];
  if (JSON.stringify(paths) !== JSON.stringify(want)) throw new Error(`server saw ${JSON.stringify(paths)}`);
  const cancelled = server.requests[2];
  if (!cancelled.clientClosed || cancelled.completed) throw new Error("server: the barge-in's request was not closed by the client");
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const names = args.only ?? Object.keys(RUNTIMES).filter((name) => !RUNTIMES[name].optional);
  const version = (name) => JSON.parse(readFileSync(join(BIN, name, "package.json"), "utf8")).version;
  const pins = ["bun", "deno", "miniflare", "workerd"].map((name) => `${name} ${version(name)}`);
  console.log(`brainline ${version("brainline")} (packed) on ${names.join(", ")}`);
  console.log(`pinned: ${pins.join(", ")}; driver node ${process.versions.node}`);
  const server = new MockServer(SCRIPT);
  await server.start();
  const results = { passed: 0, failed: 0 };
  try {
    for (const name of names) {
      const runtime = RUNTIMES[name];
      const transports = runtime.transports ?? ["socket", "fetch"];
      for (const transport of transports.filter((t) => !args.transport || t === args.transport)) {
        server.reset();
        const started = performance.now();
        try {
          const seen = runtime.worker
            ? await runWorker(runtime.worker, server.origin, transport, args.timeout)
            : await runProgram(runtime.command, server.origin, transport, args.timeout);
          if (!seen.runtime.startsWith(runtime.expect)) throw new Error(`ran on ${seen.runtime}, not ${runtime.expect}`);
          checkServer(server);
          const took = ((performance.now() - started) / 1000).toFixed(2);
          console.log(`PASS ${name.padEnd(17)} ${transport.padEnd(6)} ${took} s  ${seen.runtime}: ${seen.statusError}, ${seen.configError}`);
          results.passed += 1;
        } catch (err) {
          console.log(`FAIL ${name.padEnd(17)} ${transport.padEnd(6)} ${String(err?.message ?? err).replaceAll("\n", "\n     ")}`);
          results.failed += 1;
        }
      }
    }
  } finally {
    await Promise.allSettled([...workers.values()].map((mf) => mf.dispose()));
    await server.stop();
  }
  console.log(`${results.passed} passed, ${results.failed} failed`);
  process.exitCode = results.failed ? 1 : 0;
}

await main();
