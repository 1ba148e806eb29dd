// brainline/testing: start brainline's scripted OpenAI-compatible mock server from a TypeScript test.
// The server is the Python one (`python3 -m brainline.testing`, docs/testing.md), spawned as a child
// process on 127.0.0.1, so a TypeScript test and a Python test script it the same way.

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Options of startMockServer(). */
export interface MockServerOptions {
  /** The script (docs/testing.md); default: a short demo turn. */
  readonly script?: unknown;
  /** Port on 127.0.0.1; 0 (default) picks a free one. */
  readonly port?: number;
  /** Python interpreter with brainline installed; default $BRAINLINE_PYTHON, else "python3". */
  readonly python?: string;
  /** How long to wait for the server to print its URL, in milliseconds (default 20000). */
  readonly startTimeoutMs?: number;
}

/** What the server recorded, from `GET /__mock/requests` (field names as in Python). */
export interface MockRecords {
  readonly requests: ReadonlyArray<Record<string, unknown>>;
  readonly connections: ReadonlyArray<Record<string, unknown>>;
  readonly connections_open: number;
  readonly connections_total: number;
}

/** A running mock server: its base URL, its records and its control endpoints. */
export interface MockServer {
  /** `http://127.0.0.1:PORT/v1` */
  readonly url: string;
  requests(prefix?: string): Promise<MockRecords>;
  setScript(script: unknown): Promise<void>;
  addRoute(prefix: string, responses: unknown): Promise<void>;
  reset(): Promise<void>;
  /** Stop the server and wait for the process to exit. */
  close(): Promise<void>;
}

/** Raised when the server cannot start (no Python, brainline not installed, a bad script...). */
export class MockServerUnavailableError extends Error {
  readonly code = "mock_server_unavailable";
  constructor(detail: string) {
    super(
      `the embedded mock server needs Python 3.10+ with brainline installed (pip install brainline): ${detail}`,
    );
    this.name = "MockServerUnavailableError";
  }
}

/** The interpreter to run the server with. */
export function mockServerPython(explicit?: string): string {
  return explicit ?? process.env.BRAINLINE_PYTHON ?? "python3";
}

/** Start the mock server; resolves once it listens. Always `await server.close()` afterwards. */
export async function startMockServer(options: MockServerOptions = {}): Promise<MockServer> {
  const args = ["-m", "brainline.testing", "--port", String(options.port ?? 0)];
  let dir: string | undefined;
  if (options.script !== undefined) {
    dir = mkdtempSync(join(tmpdir(), "brainline-mock-"));
    const file = join(dir, "script.json");
    writeFileSync(file, JSON.stringify(options.script));
    args.push("--script", file);
  }
  const cleanup = () => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  };
  const child = spawn(mockServerPython(options.python), args, {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let url: string;
  try {
    url = await firstLine(child, options.startTimeoutMs ?? 20_000);
  } catch (err) {
    child.kill();
    cleanup();
    throw err;
  }
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null) resolve();
    else child.once("exit", () => resolve());
  });
  const control = new URL("/__mock/", url).href;
  const post = async (path: string, body: unknown): Promise<void> => {
    const res = await fetch(control + path, { method: "POST", body: JSON.stringify(body) });
    const text = await res.text();
    if (!res.ok) throw new Error(`mock server: POST /__mock/${path}: ${res.status} ${text}`);
  };
  return {
    url,
    async requests(prefix?: string): Promise<MockRecords> {
      const query = prefix === undefined ? "" : `?prefix=${encodeURIComponent(prefix)}`;
      const res = await fetch(`${control}requests${query}`);
      return (await res.json()) as MockRecords;
    },
    setScript: (script) => post("script", script),
    addRoute: (prefix, responses) => post("route", { prefix, responses }),
    reset: () => post("reset", {}),
    async close(): Promise<void> {
      child.stdin?.end(); // the server stops at end of stdin
      const timer = setTimeout(() => child.kill("SIGTERM"), 5_000);
      await exited;
      clearTimeout(timer);
      cleanup();
    },
  };
}

function firstLine(child: ChildProcess, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    const fail = (detail: string) => {
      clearTimeout(timer);
      reject(new MockServerUnavailableError(detail));
    };
    const timer = setTimeout(() => fail(`no URL within ${timeoutMs} ms`), timeoutMs);
    child.once("error", (e) => fail(e.message));
    child.stderr?.on("data", (chunk: Buffer) => {
      err += chunk.toString("utf8");
    });
    child.once("exit", (code) => fail(`exited with code ${code}: ${err.trim().slice(-300)}`));
    child.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString("utf8");
      const end = out.indexOf("\n");
      if (end >= 0) {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        resolve(out.slice(0, end).trim());
      }
    });
  });
}
