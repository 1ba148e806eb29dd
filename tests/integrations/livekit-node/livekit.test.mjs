// brainline/livekit inside the real @livekit/agents 1.9.0 (never mocked), against brainline's mock
// server on 127.0.0.1. brainline is the packed tarball (nox -s integrations-node installs it).
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { after, before, beforeEach, test } from "node:test";
import {
  APIConnectionError,
  APIStatusError,
  APITimeoutError,
  initializeLogger,
  llm as lk,
} from "@livekit/agents";
import { CustomLLM, FallbackLLM } from "brainline";
import { LLM } from "brainline/livekit";
import { startMockServer } from "brainline/testing";
import { z } from "zod";

/** @type {import("brainline/testing").MockServer} */
let server;

before(async () => {
  initializeLogger({ pretty: false, level: "fatal" }); // as LiveKit's own tests do
  server = await startMockServer({ script: { text: ["unused"] } });
});

after(async () => {
  await server?.close();
});

beforeEach(async () => {
  await server.reset();
});

function chatCtx(text = "What is the weather in Paris and Tokyo?") {
  const ctx = lk.ChatContext.empty();
  ctx.addMessage({ role: "system", content: "You are a voice agent." });
  ctx.addMessage({ role: "user", content: text });
  return ctx;
}

const weather = lk.tool({
  description: "The weather in a city.",
  parameters: z.object({ city: z.string() }),
  execute: async ({ city }) => `sunny in ${city}`,
});

/** A brainline provider on the mock server; options override (maxRetries: 0 isolates LiveKit's). */
function provider(options = {}) {
  return new CustomLLM({ baseUrl: server.url, model: "mock-model", ...options });
}

/** The turn's chunks, as an agent reads them. */
async function chunks(stream) {
  const out = [];
  for await (const chunk of stream) out.push(chunk);
  return out;
}

/** Every `error` the LLM emits (LiveKit reports a stream's failure there, not by throwing). */
function errorsOf(llm) {
  const errors = [];
  llm.on("error", (event) => errors.push(event));
  return errors;
}

async function chatRequests() {
  return (await server.requests()).requests.filter((r) => r.path.endsWith("/chat/completions"));
}

async function waitFor(predicate, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return true;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return false;
}

/** A 127.0.0.1 port with nothing listening: connections to it are refused. */
async function deadPort() {
  const probe = createServer();
  await new Promise((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

function chunk(delta, finishReason = null) {
  return {
    data: {
      id: "chatcmpl-1",
      object: "chat.completion.chunk",
      model: "mock-model",
      choices: [{ index: 0, delta, finish_reason: finishReason }],
    },
  };
}

test("chat() streams text as ChatChunks, then usage; metrics see ttft and tokens", async () => {
  await server.setScript({
    text: ["Hel", "lo, ", "world."],
    reasoning: ["thinking about the weather"],
    usage: { prompt_tokens: 12, completion_tokens: 3, prompt_tokens_details: { cached_tokens: 4 } },
  });
  const llm = new LLM({ llm: provider() });
  const metrics = [];
  llm.on("metrics_collected", (m) => metrics.push(m));
  const got = await chunks(llm.chat({ chatCtx: chatCtx("Hi") }));

  const texts = got.filter((c) => c.delta?.content).map((c) => c.delta.content);
  assert.deepEqual(texts, ["Hel", "lo, ", "world."]);
  assert.ok(got.filter((c) => c.delta).every((c) => c.delta.role === "assistant"));
  // Reasoning is never a text chunk (so never spoken).
  assert.ok(!got.some((c) => JSON.stringify(c).includes("thinking")));
  const usage = got.filter((c) => c.usage).map((c) => c.usage);
  assert.deepEqual(usage, [
    { completionTokens: 3, promptTokens: 12, promptCachedTokens: 4, totalTokens: 15 },
  ]);
  assert.equal(got.at(-1).usage?.completionTokens, 3, "usage is the last chunk");

  await waitFor(() => metrics.length > 0, 2000);
  assert.equal(metrics.length, 1);
  assert.equal(metrics[0].label, "brainline.LLM");
  assert.equal(metrics[0].completionTokens, 3);
  assert.equal(metrics[0].promptTokens, 12);
  assert.ok(metrics[0].ttftMs >= 0);
  assert.equal(metrics[0].cancelled, false);

  const [request] = await chatRequests();
  assert.deepEqual(request.json.messages, [
    { role: "system", content: "You are a voice agent." },
    { role: "user", content: "Hi" },
  ]);
  assert.equal(request.json.tools, undefined, "no tools sent when the agent has none");
  assert.equal(llm.model, "mock-model");
  assert.equal(llm.provider, "custom");
});

test("two parallel tool calls in one chunk come out complete, with the tools sent", async () => {
  await server.setScript({
    sse: [
      chunk({
        role: "assistant",
        tool_calls: [
          {
            index: 0,
            id: "call_paris",
            type: "function",
            function: { name: "get_weather", arguments: '{"city":"Paris"}' },
          },
          {
            index: 1,
            id: "call_tokyo",
            type: "function",
            function: { name: "get_weather", arguments: '{"city":"Tokyo"}' },
          },
        ],
      }),
      chunk({}, "tool_calls"),
      {
        data: {
          id: "chatcmpl-1",
          choices: [],
          usage: { prompt_tokens: 30, completion_tokens: 20 },
        },
      },
      "data: [DONE]\n\n",
    ],
  });
  const llm = new LLM({ llm: provider() });
  const got = await chunks(llm.chat({ chatCtx: chatCtx(), toolCtx: { get_weather: weather } }));

  const withCalls = got.filter((c) => c.delta?.toolCalls?.length);
  assert.equal(withCalls.length, 1, "both calls in one chunk");
  const calls = withCalls[0].delta.toolCalls;
  assert.ok(calls.every((call) => call instanceof lk.FunctionCall));
  assert.deepEqual(
    calls.map(({ callId, name, args }) => ({ callId, name, args })),
    [
      { callId: "call_paris", name: "get_weather", args: '{"city":"Paris"}' },
      { callId: "call_tokyo", name: "get_weather", args: '{"city":"Tokyo"}' },
    ],
  );
  assert.deepEqual(got.at(-1).usage, {
    completionTokens: 20,
    promptTokens: 30,
    promptCachedTokens: 0,
    totalTokens: 50,
  });

  const [request] = await chatRequests();
  assert.equal(request.json.tools.length, 1);
  const { function: fn, type } = request.json.tools[0];
  assert.equal(type, "function");
  assert.equal(fn.name, "get_weather");
  assert.equal(fn.description, "The weather in a city.");
  assert.deepEqual(fn.parameters.properties, { city: { type: "string" } });
  assert.equal(fn.parameters.$schema, undefined);
});

test("three calls in one chunk, arguments in pieces: none lost (LiveKit's own parser may drop the third)", async () => {
  await server.setScript({
    sse: [
      chunk({
        tool_calls: ["a", "b", "c"].map((name, index) => ({
          index,
          id: `call_${name}`,
          type: "function",
          function: { name: `tool_${name}`, arguments: '{"n":' },
        })),
      }),
      chunk({
        tool_calls: [0, 1, 2].map((index) => ({ index, function: { arguments: `${index}}` } })),
      }),
      chunk({}, "tool_calls"),
      "data: [DONE]\n\n",
    ],
  });
  const llm = new LLM({ llm: provider() });
  const response = await llm.chat({ chatCtx: chatCtx() }).collect();
  assert.deepEqual(
    response.toolCalls.map(({ callId, name, args }) => [callId, name, args]),
    [
      ["call_a", "tool_a", '{"n":0}'],
      ["call_b", "tool_b", '{"n":1}'],
      ["call_c", "tool_c", '{"n":2}'],
    ],
  );
});

test("the tool runs through LiveKit's executeToolCall; the follow-up turn carries its result", async () => {
  await server.setScript([
    { tool_calls: [{ id: "call_1", name: "get_weather", arguments: ['{"city":', '"Paris"}'] }] },
    { text: ["It is sunny in Paris."] },
  ]);
  const llm = new LLM({ llm: provider() });
  const toolCtx = new lk.ToolContext({ get_weather: weather });
  const ctx = chatCtx("Weather in Paris?");
  const first = await llm.chat({ chatCtx: ctx, toolCtx }).collect();
  assert.equal(first.toolCalls.length, 1);
  const [call] = first.toolCalls;
  const output = await lk.executeToolCall(call, toolCtx);
  assert.equal(output.isError, false);
  ctx.insert([call, output]);
  const second = await llm.chat({ chatCtx: ctx, toolCtx }).collect();
  assert.equal(second.text, "It is sunny in Paris.");

  const followUp = (await chatRequests())[1].json.messages;
  const assistant = followUp.find((m) => m.role === "assistant");
  assert.deepEqual(assistant.tool_calls, [
    {
      id: "call_1",
      type: "function",
      function: { name: "get_weather", arguments: '{"city":"Paris"}' },
    },
  ]);
  const tool = followUp.find((m) => m.role === "tool");
  assert.equal(tool.tool_call_id, "call_1");
  assert.match(tool.content, /sunny in Paris/);
});

test("close() mid-stream aborts the turn: the server sees the connection close", async () => {
  await server.setScript({ text: ["Hello", " there", " friend"], stall: 1 });
  const llm = new LLM({ llm: provider() });
  const metrics = [];
  llm.on("metrics_collected", (m) => metrics.push(m));
  const stream = llm.chat({ chatCtx: chatCtx("Hi") });
  const first = await stream.next();
  assert.equal(first.value.delta.content, "Hello");
  const closedAt = Date.now();
  stream.close();
  const closed = await waitFor(async () => (await chatRequests())[0]?.client_closed === true, 1000);
  assert.ok(closed, "the server saw the client close within 1 s");
  assert.ok(Date.now() - closedAt < 1000);
  assert.equal((await stream.next()).done, true);
  await waitFor(() => metrics.length > 0, 1000);
  assert.equal(metrics[0]?.cancelled, true);
  // The provider serves the next turn.
  await server.setScript({ text: ["again"] });
  const again = await llm.chat({ chatCtx: chatCtx("Hi") }).collect();
  assert.equal(again.text, "again");
});

test("under LiveKit's FallbackAdapter a dead brainline endpoint fails over to a live one", async () => {
  await server.setScript({ text: ["from ", "the live one"] });
  const dead = new LLM({
    llm: new CustomLLM({ baseUrl: `http://127.0.0.1:${await deadPort()}/v1`, model: "m" }),
  });
  const live = new LLM({ llm: provider() });
  const fallback = new lk.FallbackAdapter({ llms: [dead, live], attemptTimeout: 5 });
  const availability = [];
  fallback.on("llm_availability_changed", (event) =>
    availability.push([event.llm === dead ? "dead" : "live", event.available]),
  );
  const response = await fallback.chat({ chatCtx: chatCtx("Hi") }).collect();
  assert.equal(response.text, "from the live one");
  assert.deepEqual(availability.slice(0, 1), [["dead", false]]);
  assert.equal((await chatRequests()).length, 1);
});

test("a brainline FallbackLLM as the llm: a dead endpoint fails over inside one LiveKit turn", async () => {
  await server.setScript({ text: ["from ", "the backup"] });
  const dead = new CustomLLM({ baseUrl: `http://127.0.0.1:${await deadPort()}/v1`, model: "dead" });
  const llm = new LLM({ llm: new FallbackLLM([dead, provider()]) });
  const errors = errorsOf(llm);
  const response = await llm.chat({ chatCtx: chatCtx("Hi") }).collect();
  assert.equal(response.text, "from the backup");
  assert.deepEqual(errors, []);
  assert.equal(llm.model, "dead", "a FallbackLLM's model is its first endpoint's");
});

test("every endpoint of a FallbackLLM failed: retryable unless all failed for good", async () => {
  const connOptions = { maxRetry: 0, retryIntervalMs: 10, timeoutMs: 5000 };
  await server.setScript({ status: 401, json: { error: { message: "invalid api key" } } });
  const refused = () =>
    new CustomLLM({ baseUrl: "http://127.0.0.1:9/v1", model: "m", maxRetries: 0 });
  const cases = [
    [[provider(), provider()], false], // two 401s: permanent
    [[refused(), provider()], true], // a refused connection could work next time
  ];
  for (const [llms, retryable] of cases) {
    const llm = new LLM({ llm: new FallbackLLM(llms) });
    const errors = errorsOf(llm);
    await llm.chat({ chatCtx: chatCtx("Hi"), connOptions }).collect();
    assert.equal(errors.length, 1);
    const { error } = errors[0];
    assert.ok(error instanceof APIConnectionError, String(error));
    assert.equal(error.cause?.code, "all_endpoints_failed");
    assert.equal(error.retryable, retryable, error.message);
  }
});

test("a 401 is APIStatusError, not retryable: LiveKit does not retry it", async () => {
  await server.setScript({ status: 401, json: { error: { message: "invalid api key" } } });
  const llm = new LLM({ llm: provider() });
  const errors = errorsOf(llm);
  const stream = llm.chat({
    chatCtx: chatCtx("Hi"),
    connOptions: { maxRetry: 3, retryIntervalMs: 10, timeoutMs: 5000 },
  });
  const response = await stream.collect();
  assert.equal(response.text, "");
  assert.equal(errors.length, 1);
  const { error, recoverable } = errors[0];
  assert.ok(error instanceof APIStatusError, String(error));
  assert.equal(error.statusCode, 401);
  assert.equal(error.retryable, false);
  assert.equal(recoverable, false);
  assert.deepEqual(error.body, { error: { message: "invalid api key" } });
  assert.equal(error.cause?.code, "http_status");
  assert.equal((await chatRequests()).length, 1);
});

test("a 503 before any content is retryable: LiveKit retries it (connOptions.maxRetry)", async () => {
  await server.setScript([
    { status: 503, json: { error: { message: "overloaded" } } },
    { text: ["recovered"] },
  ]);
  const llm = new LLM({ llm: provider({ maxRetries: 0 }) });
  const errors = errorsOf(llm);
  const response = await llm
    .chat({
      chatCtx: chatCtx("Hi"),
      connOptions: { maxRetry: 2, retryIntervalMs: 10, timeoutMs: 5000 },
    })
    .collect();
  assert.equal(response.text, "recovered");
  assert.equal(errors.length, 1);
  assert.ok(errors[0].error instanceof APIStatusError);
  assert.equal(errors[0].error.statusCode, 503);
  assert.equal(errors[0].error.retryable, true);
  assert.equal(errors[0].recoverable, true);
  assert.equal((await chatRequests()).length, 2);
});

test("a stream that breaks after text went out is not retryable (it would be heard twice)", async () => {
  await server.setScript({ text: ["Hello", " there"], drop_after: 1 });
  const llm = new LLM({ llm: provider() });
  const errors = errorsOf(llm);
  const response = await llm
    .chat({
      chatCtx: chatCtx("Hi"),
      connOptions: { maxRetry: 3, retryIntervalMs: 10, timeoutMs: 5000 },
    })
    .collect();
  assert.equal(response.text, "Hello");
  assert.equal(errors.length, 1);
  const { error, recoverable } = errors[0];
  assert.ok(error instanceof APIConnectionError, String(error));
  assert.equal(error.retryable, false);
  assert.equal(recoverable, false);
  assert.equal(error.cause?.code, "interrupted");
  assert.equal((await chatRequests()).length, 1);
});

test("the same break before any text is retryable, and the retry's text is what is heard", async () => {
  await server.setScript([{ text: ["lost"], drop_after: 0 }, { text: ["Hello"] }]);
  const llm = new LLM({ llm: provider() });
  const errors = errorsOf(llm);
  const response = await llm
    .chat({
      chatCtx: chatCtx("Hi"),
      connOptions: { maxRetry: 1, retryIntervalMs: 10, timeoutMs: 5000 },
    })
    .collect();
  assert.equal(response.text, "Hello");
  assert.equal(errors.length, 1);
  assert.ok(errors[0].error instanceof APIConnectionError);
  assert.equal(errors[0].error.retryable, true);
  assert.equal((await chatRequests()).length, 2);
});

test("brainline's timeout is APITimeoutError (retryable before content)", async () => {
  await server.setScript({ text: ["late"], stall: "headers" });
  const llm = new LLM({ llm: provider({ timeout: 0.3, maxRetries: 0 }) });
  const errors = errorsOf(llm);
  await llm
    .chat({
      chatCtx: chatCtx("Hi"),
      connOptions: { maxRetry: 0, retryIntervalMs: 10, timeoutMs: 5000 },
    })
    .collect();
  assert.equal(errors.length, 1);
  assert.ok(errors[0].error instanceof APITimeoutError, String(errors[0].error));
  assert.equal(errors[0].error.retryable, true);
  assert.equal(errors[0].error.cause?.code, "read_timeout");
});

test("a bad call (no messages) is brainline's ConfigError, reported unrecoverable, nothing sent", async () => {
  const llm = new LLM({ llm: provider() });
  const errors = errorsOf(llm);
  await llm.chat({ chatCtx: lk.ChatContext.empty() }).collect();
  assert.equal(errors.length, 1);
  assert.equal(errors[0].error.name, "ConfigError");
  assert.equal(errors[0].error.code, "invalid_messages");
  assert.equal(errors[0].recoverable, false);
  assert.equal((await chatRequests()).length, 0);
});

test("new LLM() without a brainline provider: ConfigError, the value never echoed", () => {
  for (const bad of ["sk-secret-value", { apiKey: "sk-secret-value" }, undefined, null]) {
    assert.throws(
      () => new LLM({ llm: bad }),
      (err) =>
        err.name === "ConfigError" &&
        err.code === "invalid_secret_type" &&
        err.message.startsWith("llm must be a brainline provider or FallbackLLM") &&
        !err.message.includes("sk-secret"),
    );
  }
  assert.throws(
    () => new LLM(),
    (err) => err.code === "invalid_secret_type",
  );
});

test("session options reach the provider: the call id header, the caller only hashed", async () => {
  await server.setScript({ text: ["ok"] });
  const hermesLike = provider({ sessionIdHeader: "x-session-id", sessionIdPrefix: "lk-" });
  const llm = new LLM({ llm: hermesLike, callId: "room-42", caller: "+15551234567" });
  await llm.chat({ chatCtx: chatCtx("Hi") }).collect();
  const [request] = await chatRequests();
  const headers = Object.fromEntries(request.headers);
  assert.equal(headers["x-session-id"], "lk-room-42");
  assert.ok(!JSON.stringify(request).includes("15551234567"));
  assert.ok(!JSON.stringify(llm).includes("15551234567"));
});

test("prewarm() opens the connection the first turn uses; aclose() closes it", async () => {
  await server.setScript({ text: ["warm"] });
  const llm = new LLM({ llm: provider() });
  llm.prewarm();
  const warm = async () =>
    (await server.requests()).requests.find((r) => r.path.endsWith("/models"));
  assert.ok(await waitFor(warm, 2000), "GET /models");
  const { connection } = await warm();
  assert.equal((await llm.chat({ chatCtx: chatCtx("Hi") }).collect()).text, "warm");
  assert.equal((await chatRequests())[0].connection, connection, "the turn reused it");
  await llm.aclose();
  const closed = await waitFor(async () => {
    const { connections } = await server.requests();
    return connections.find((c) => c.id === connection)?.closed_at != null;
  }, 2000);
  assert.ok(closed, "aclose() closed the idle connection");
});
