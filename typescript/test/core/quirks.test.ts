// TurnState and SSEDecoder against real-endpoint quirks; mirrors python/tests/core/test_quirks.py.
import { describe, expect, it } from "vitest";
import { TurnState } from "../../src/core/chunks.js";
import { StreamError } from "../../src/core/errors.js";
import type { Event } from "../../src/core/events.js";
import { SSEDecoder } from "../../src/core/sse.js";

function chunk(
  content?: string,
  finishReason: string | null = null,
  fields: Record<string, unknown> = {},
): string {
  const delta: Record<string, unknown> = { ...fields };
  if (content !== undefined) delta.content = content;
  return JSON.stringify({ choices: [{ index: 0, delta, finish_reason: finishReason }] });
}

/** [type, content] of the text and reasoning events, merged by type, in order. */
function texts(events: Event[]): [string, string][] {
  const out: [string, string][] = [];
  for (const event of events) {
    if (event.type !== "text" && event.type !== "reasoning") continue;
    const last = out[out.length - 1];
    if (last !== undefined && last[0] === event.type) last[1] += event.content;
    else out.push([event.type, event.content]);
  }
  return out;
}

function runContents(pieces: string[], reasoning = "emit"): Event[] {
  const state = new TurnState(reasoning);
  const events = pieces.flatMap((piece) => state.feedEvent(undefined, chunk(piece)));
  return [...events, ...state.finish(true)];
}

function thrown(fn: () => unknown): StreamError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(StreamError);
    return err as StreamError;
  }
  throw new Error("expected a StreamError");
}

describe("keep-alives and named events", () => {
  it.each(["", " ", "\r\n\t", ": keepalive", ":", "  : OPENROUTER PROCESSING", ":ping"])(
    "data %j is a keep-alive",
    (data) => {
      const state = new TurnState();
      expect(state.feedEvent(undefined, data)).toEqual([]);
      expect(state.feedEvent("message", data)).toEqual([]);
      expect(state.feedEvent("hermes.tool.progress", data)).toEqual([]);
      expect(state.feedEvent("error", data)).toEqual([]);
    },
  );

  it("non-JSON data that is not a keep-alive is malformed with the partial text", () => {
    const state = new TurnState();
    state.feedEvent(undefined, chunk("Hel"));
    const error = thrown(() =>
      state.feedEvent(undefined, "Number of choices must be greater than 0."),
    );
    expect(error.code).toBe("malformed");
    expect(error.message).toBe(
      "malformed stream: data is not JSON: Number of choices must be greater than 0.",
    );
    expect(error.partialText).toBe("Hel");
    expect(() => new TurnState().feedEvent(undefined, "x".repeat(300))).toThrow(
      /data is not JSON: x{200}$/,
    );
  });

  it("named events are progress events, never text", () => {
    const state = new TurnState();
    const data = '{"tool_call_id":"t1","name":"search","status":"running"}';
    expect(state.feedEvent("hermes.tool.progress", data)).toEqual([
      {
        type: "progress",
        event: "hermes.tool.progress",
        data: { tool_call_id: "t1", name: "search", status: "running" },
      },
    ]);
    expect(state.feedEvent("status", "still working")).toEqual([
      { type: "progress", event: "status", data: "still working" },
    ]);
    expect(state.feedEvent("delta", chunk("hi"))).toEqual([
      { type: "progress", event: "delta", data: JSON.parse(chunk("hi")) },
    ]);
    expect(state.feedEvent("message", chunk("hi"))).toEqual([{ type: "text", content: "hi" }]);
    expect(state.text).toBe("hi");
  });

  it.each([
    ['{"error":{"message":"overloaded","code":502}}', "overloaded"],
    ['{"message":"no error key"}', "no error key"],
    ["upstream timed out", "upstream timed out"],
    ['{"error":"Input validation error"}', "Input validation error"],
    ['{"error":{"code":500}}', '{"code":500}'],
  ])("event: error %j is server_error with the server message", (data, message) => {
    const state = new TurnState();
    state.feedEvent(undefined, chunk("Par"));
    const error = thrown(() => state.feedEvent("error", data));
    expect(error.code).toBe("server_error");
    expect(error.message).toBe(`the server reported an error: ${message}`);
    expect(error.partialText).toBe("Par");
  });

  it("error objects inside chunks", () => {
    for (const [data, message] of [
      ['{"error":{"message":"Compute error."},"message":"Compute error."}', "Compute error."],
      ['{"error":"Input validation error","error_type":"validation"}', "Input validation error"],
      [
        '{"choices":[{"index":0,"delta":{},"finish_reason":"error"}],"error":{"message":"model failed"}}',
        "model failed",
      ],
    ] as const) {
      const error = thrown(() => new TurnState().feedEvent(undefined, data));
      expect(error.code).toBe("server_error");
      expect(error.message).toBe(`the server reported an error: ${message}`);
    }
    const state = new TurnState();
    expect(state.feedEvent(undefined, chunk(undefined, "error"))).toEqual([]);
    expect(state.finish(true)).toEqual([{ type: "finish", reason: "error" }]);
  });

  it("llama.cpp's error field is an error event", () => {
    const decoder = new SSEDecoder();
    const enc = new TextEncoder();
    const events = decoder.decode(enc.encode('error: {"code":500,"message":"boom"}\n\n'));
    expect(events).toEqual([{ event: "error", data: '{"code":500,"message":"boom"}' }]);
    expect(decoder.decode(enc.encode("errors: x\n\ndata: a\n\n"))).toEqual([
      { event: undefined, data: "a" },
    ]);
    expect(() => new TurnState().feedEvent("error", events[0]?.data ?? "")).toThrow(/error: boom$/);
  });
});

describe("whole JSON answers", () => {
  it.each([
    ["", "empty response body"],
    [" \r\n\t", "empty response body"],
    ["{oops", "data is not JSON: {oops"],
    ['{"status":"ok"}', 'not a chat completion: {"status":"ok"}'],
    ["[]", "not a chat completion: []"],
    ['{"error":null}', 'not a chat completion: {"error":null}'],
  ])("body %j is never a silent empty turn", (body, detail) => {
    const error = thrown(() => new TurnState().feedBody(body));
    expect(error.code).toBe("malformed");
    expect(error.message).toBe(`malformed stream: ${detail}`);
  });

  it("an error, a completion and a lone chunk", () => {
    expect(() => new TurnState().feedBody('{"error":{"message":"model not loaded"}}')).toThrow(
      /error: model not loaded$/,
    );
    const completion = {
      object: "chat.completion",
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: "<think>hm</think>Hi" },
          finish_reason: "stop",
        },
      ],
      usage: { prompt_tokens: 3, completion_tokens: 2 },
    };
    expect(new TurnState().feedBody(JSON.stringify(completion))).toEqual([
      { type: "reasoning", content: "hm" },
      { type: "text", content: "Hi" },
      { type: "usage", input_tokens: 3, output_tokens: 2, cache_read_tokens: 0 },
      { type: "finish", reason: "stop" },
    ]);
    expect(new TurnState().feedBody(chunk("Hi", "length"))).toEqual([
      { type: "text", content: "Hi" },
      { type: "finish", reason: "length" },
    ]);
    expect(new TurnState().feedBody('{"choices":[]}')).toEqual([
      { type: "finish", reason: "stop" },
    ]);
  });
});

describe("usage", () => {
  it("x_groq usage, and a top-level usage preferred to it", () => {
    let state = new TurnState();
    state.feedEvent(undefined, chunk("a"));
    state.feed({ choices: [], x_groq: { id: "r", usage: { prompt_tokens: 9 } } });
    state.feed({ choices: [], x_groq: { id: "r" } });
    expect(state.finish(true)[0]).toEqual({
      type: "usage",
      input_tokens: 9,
      output_tokens: 0,
      cache_read_tokens: 0,
    });
    state = new TurnState();
    state.feed({
      choices: [{ index: 0, delta: {}, finish_reason: null }],
      usage: { prompt_tokens: 5, completion_tokens: 1 },
      x_groq: { usage: { prompt_tokens: 99 } },
    });
    expect(state.finish(true)[0]).toMatchObject({ type: "usage", input_tokens: 5 });
  });
});

describe("reasoning", () => {
  it("one reasoning field per chunk, and reasoning_details", () => {
    const state = new TurnState();
    const details = [
      { type: "reasoning.text", text: "A" },
      { type: "reasoning.text", text: "B" },
    ];
    expect(
      state.feedEvent(undefined, chunk(undefined, null, { reasoning_details: details })),
    ).toEqual([{ type: "reasoning", content: "AB" }]);
    const both = chunk(undefined, null, { reasoning: "C", reasoning_details: [{ text: "C" }] });
    expect(state.feedEvent(undefined, both)).toEqual([{ type: "reasoning", content: "C" }]);
    const odd = chunk(undefined, null, {
      reasoning_details: [{ type: "reasoning.encrypted", data: "x" }, 3, null],
    });
    expect(state.feedEvent(undefined, odd)).toEqual([]);
    expect(
      state.feedEvent(undefined, chunk(undefined, null, { reasoning_details: "text" })),
    ).toEqual([]);
    expect(state.text).toBe("");
  });

  it("reasoning drop emits no reasoning events", () => {
    const state = new TurnState("drop");
    const events = [
      ...state.feedEvent(undefined, chunk("<think>a</think>b", null, { reasoning_content: "r" })),
      ...state.feedEvent(undefined, chunk(undefined, null, { reasoning_details: [{ text: "d" }] })),
      ...state.finish(true),
    ];
    expect(events).toEqual([
      { type: "text", content: "b" },
      { type: "finish", reason: "stop" },
    ]);
  });

  const THINK = "Hi <think>plan a</think> there<b> </think> x<";
  const EXPECTED = [
    ["text", "Hi "],
    ["reasoning", "plan a"],
    ["text", " there<b> </think> x<"],
  ];

  it("a <think> block split at every position", () => {
    for (let cut = 1; cut < THINK.length; cut++) {
      expect(texts(runContents([THINK.slice(0, cut), THINK.slice(cut)]))).toEqual(EXPECTED);
    }
  });

  it("a <think> block one character per chunk", () => {
    expect(texts(runContents([...THINK]))).toEqual(EXPECTED);
  });

  it.each([
    [["</think>Hello"], [["text", "Hello"]]],
    [["</", "think>", "\n\nHello"], [["text", "\n\nHello"]]],
    [["Hi</think>"], [["text", "Hi</think>"]]],
    [["Hi", "</think>"], [["text", "Hi</think>"]]],
    [[" </think>"], [["text", " </think>"]]],
    [["</b>"], [["text", "</b>"]]],
    [["<", "b"], [["text", "<b"]]],
    [["</thi"], [["text", "</thi"]]],
    [["<think>a</thi"], [["reasoning", "a</thi"]]],
    [
      ["<think>a</think>b<think>c</think>d"],
      [
        ["reasoning", "a"],
        ["text", "b"],
        ["reasoning", "c"],
        ["text", "d"],
      ],
    ],
    [
      ["<think>a</think></think>"],
      [
        ["reasoning", "a"],
        ["text", "</think>"],
      ],
    ],
  ])("think rules: %j", (pieces, expected) => {
    expect(texts(runContents(pieces))).toEqual(expected);
  });

  it("partial text excludes reasoning and held tag starts", () => {
    const state = new TurnState();
    state.feedEvent(undefined, chunk("Hi <think>x"));
    state.feedEvent(undefined, chunk("</think> yo <"));
    expect(state.text).toBe("Hi  yo ");
    const error = thrown(() => state.feedEvent(undefined, '{"error":{"message":"m"}}'));
    expect(error.partialText).toBe("Hi  yo ");
  });
});
