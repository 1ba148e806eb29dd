// The TypeScript half of the README's demo: node docs/examples/demo.mjs <base-url> <typescript-dir>
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const [url, pkg] = process.argv.slice(2);
const { CustomLLM } = await import(pathToFileURL(join(pkg, "dist", "index.js")).href);

const llm = new CustomLLM({ baseUrl: url, model: "mock-model", sessionUserPrefix: "demo-call-" });
const messages = [{ role: "user", content: "What is the weather in Rome?" }];
process.stdout.write("typescript > ");
for await (const ev of llm.stream(messages, undefined, { callId: "call-1", caller: "+15551234567" })) {
  if (ev.type === "text") process.stdout.write(ev.content);
  else if (ev.type === "usage")
    process.stdout.write(
      `\n             usage: ${ev.input_tokens} in (+${ev.cache_read_tokens} cached), ${ev.output_tokens} out`,
    );
  else if (ev.type === "finish") process.stdout.write(`\n             finish: ${ev.reason}\n`);
}
await llm.close();
