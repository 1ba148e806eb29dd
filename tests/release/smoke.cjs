// `nox -s build` smoke turn for the installed npm tarball through CommonJS require() (see smoke.mjs).
const { CustomLLM, VERSION } = require("brainline");
const { startMockServer } = require("brainline/testing");

(async () => {
  const server = await startMockServer({ script: { text: ["Hel", "lo"] } });
  try {
    const llm = new CustomLLM({ baseUrl: server.url, model: "m" });
    const turn = await llm.complete([{ role: "user", content: "hi" }]);
    await llm.close();
    if (turn.text !== "Hello" || turn.finishReason !== "stop") throw new Error(`CJS turn: ${JSON.stringify(turn)}`);
  } finally {
    await server.close();
  }
  console.log(`npm CJS ok: brainline ${VERSION}`);
})().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
