#!/usr/bin/env node
// The `brainline` executable (package.json `bin`); the program is in ./command.ts.

import { EXIT_API, main } from "./command.js";

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = EXIT_API;
  },
);
