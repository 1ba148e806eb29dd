// The Python MockServer (brainline.testing, docs/testing.md) as a child process, for the reliability
// tests: the same server, scripts and records as the Python side. Needs python3 with httpx; the
// package itself comes from ../python/src.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";

const PYTHON_SRC = resolve(__dirname, "../../../python/src");

export interface Recorded {
  readonly path: string;
  readonly headers: [string, string][];
  readonly body: string;
  readonly client_closed: boolean;
}

export interface Records {
  readonly requests: Recorded[];
  readonly connections_open: number;
  readonly connections_total: number;
}

export class Mock {
  private constructor(
    readonly url: string,
    private readonly child: ChildProcess,
    private readonly dir: string,
  ) {}

  static async start(script: unknown): Promise<Mock> {
    const dir = mkdtempSync(join(tmpdir(), "brainline-mock-"));
    const file = join(dir, "script.json");
    writeFileSync(file, JSON.stringify(script));
    const python = process.env.BRAINLINE_PYTHON ?? "python3";
    const child = spawn(python, ["-m", "brainline.testing", "--port", "0", "--script", file], {
      env: { ...process.env, PYTHONPATH: PYTHON_SRC },
      stdio: ["pipe", "pipe", "inherit"],
    });
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    const url = await new Promise<string>((ok, fail) => {
      const timer = setTimeout(() => fail(new Error("mock server did not start")), 20000);
      lines.once("line", (line) => {
        clearTimeout(timer);
        ok(line.trim());
      });
      child.once("exit", (code) => fail(new Error(`mock server exited with ${code}`)));
    });
    lines.close();
    child.stdout?.resume();
    return new Mock(url, child, dir);
  }

  private control(path: string, body?: unknown): Promise<Response> {
    const url = this.url.replace(/\/v1$/, "") + path;
    return body === undefined
      ? fetch(url)
      : fetch(url, { method: "POST", body: JSON.stringify(body) });
  }

  async records(): Promise<Records> {
    return (await (await this.control("/__mock/requests")).json()) as Records;
  }

  async setScript(script: unknown): Promise<void> {
    await (await this.control("/__mock/script", script)).arrayBuffer();
  }

  async reset(): Promise<void> {
    await (await this.control("/__mock/reset", {})).arrayBuffer();
  }

  async close(): Promise<void> {
    const exited = new Promise((ok) => this.child.once("exit", ok));
    this.child.kill("SIGTERM");
    await exited;
    rmSync(this.dir, { recursive: true, force: true });
  }
}
