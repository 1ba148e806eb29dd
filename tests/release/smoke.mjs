// `nox -s build` smoke turn for the installed npm tarball, as an ES module (run inside a fresh npm
// project where `npm install <tarball>` put brainline in node_modules), against the mock server
// brainline/testing starts in-process (no Python: no_python.py runs it with none on PATH).
import { CustomLLM, VERSION } from "brainline";
import { startMockServer } from "brainline/testing";

const server = await startMockServer({ script: { text: ["Hel", "lo"], usage: { prompt_tokens: 3, completion_tokens: 2 } } });
try {
  const llm = new CustomLLM({ baseUrl: server.url, model: "m" });
  const types = [];
  for await (const ev of llm.stream([{ role: "user", content: "hi" }])) types.push(ev.type);
  await llm.close();
  if (types.join(",") !== "text,text,usage,finish") throw new Error(`ESM turn: ${types}`);
} finally {
  await server.close();
}
console.log(`npm ESM ok: brainline ${VERSION}`);
