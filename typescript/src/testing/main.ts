// `brainline mock-server [--port P] [--script FILE] [--ignore-stdin]`: run the mock server in the
// foreground (the mirror of python/src/brainline/testing/__main__.py). Prints the base URL as the
// first line of stdout, then serves until SIGTERM, SIGINT or end of stdin.

import { readFileSync } from "node:fs";
import { ScriptError } from "./script.js";
import { MockServer } from "./server.js";

export interface ServeArgs {
  readonly port: number;
  readonly script?: string | undefined;
  readonly ignoreStdin?: boolean | undefined;
}

/** Serve until a signal or end of stdin; resolves to the exit code. */
export async function main(args: ServeArgs): Promise<number> {
  let script: unknown = null;
  if (args.script) {
    try {
      script = JSON.parse(readFileSync(args.script, "utf8"));
    } catch (err) {
      process.stderr.write(`cannot read script ${args.script}: ${(err as Error).message}\n`);
      return 2;
    }
  }
  let server: MockServer;
  try {
    server = new MockServer(script, { port: args.port });
  } catch (err) {
    if (!(err instanceof ScriptError)) throw err;
    process.stderr.write(`invalid script: ${err.message}\n`);
    return 2;
  }
  try {
    await server.start();
  } catch (err) {
    process.stderr.write(`cannot serve: ${(err as Error).message}\n`);
    return 1;
  }
  process.stdout.write(`${server.url}\n`);
  let stop = () => {};
  const stopped = new Promise<void>((resolve) => {
    stop = resolve;
  });
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  if (!args.ignoreStdin) {
    process.stdin.once("end", stop);
    process.stdin.once("error", stop);
    process.stdin.resume();
  }
  await stopped;
  process.off("SIGTERM", stop);
  process.off("SIGINT", stop);
  if (!args.ignoreStdin) {
    process.stdin.off("end", stop);
    process.stdin.off("error", stop);
    process.stdin.destroy(); // else a TTY or a pipe still open keeps the process alive
  }
  await server.stop();
  return 0;
}
