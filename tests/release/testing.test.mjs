// `nox -s build`: a test as a user of the npm package writes it (node:test), with brainline/testing's
// MockServer; run by no_python.py with no Python on PATH.
import assert from "node:assert/strict";
import { test } from "node:test";
import { CustomLLM } from "brainline";
import { MockServer } from "brainline/testing";

test("a turn, its record, and a barge-in the server sees", async () => {
  const server = new MockServer([{ text: ["Hel", "lo"] }, { text: ["a", "b"], stall: 1 }]);
  const url = await server.start();
  try {
    const llm = new CustomLLM({ baseUrl: url, model: "m" });
    const turn = await llm.complete([{ role: "user", content: "hi" }]);
    assert.equal(turn.text, "Hello");
    assert.equal(server.requests[0].json.model, "m");
    const barge = new AbortController();
    for await (const ev of llm.stream([{ role: "user", content: "hi" }], undefined, { signal: barge.signal })) {
      assert.equal(ev.type, "text");
      barge.abort();
    }
    await llm.close();
    assert.ok(await server.waitFor(() => server.requests[1].clientClosed));
  } finally {
    await server.stop();
  }
});
