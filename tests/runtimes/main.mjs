// One runtime's run on Node, Bun or Deno (run.mjs starts it): `<runtime> main.mjs ORIGIN TRANSPORT`
// prints one JSON line, what the checks saw, or fails with the first check that did not hold.
import process from "node:process";
import { runChecks } from "./check.mjs";

const [origin, transport] = process.argv.slice(2);
const seen = await runChecks(origin, transport);
console.log(JSON.stringify(seen));
