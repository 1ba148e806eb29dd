import { describe, expect, it } from "vitest";
import { TurnState, completionToChunk } from "../../src/core/chunks.js";
import { StreamError } from "../../src/core/errors.js";
import { type Event, assembleToolCalls } from "../../src/core/events.js";

const delta = (d: Record<string, unknown>, finish: string | null = null) => ({
  choices: [{ index: 0, delta: d, finish_reason: finish }],
});

function feedAll(chunks: unknown[], done = true): Event[] {
  const state = new TurnState();
  return [...chunks.flatMap((chunk) => state.feed(chunk)), ...state.finish(done)];
}

describe("TurnState.feed", () => {
  it("gives reasoning, then text, then tool calls, for one chunk", () => {
    const state = new TurnState();
    const events = state.feed(
      delta({
        content: "Hi",
        reasoning_content: "think",
        tool_calls: [
          { index: 0, id: "c1", type: "function", function: { name: "f", arguments: "{" } },
        ],
      }),
    );
    expect(events).toEqual([
      { type: "reasoning", content: "think" },
      { type: "text", content: "Hi" },
      { type: "tool_call", index: 0, id: "c1", name: "f", arguments: "{" },
    ]);
    expect(state.text).toBe("Hi");
  });

  it("reads reasoning_content, else reasoning, and skips empty strings", () => {
    const state = new TurnState();
    expect(state.feed(delta({ reasoning: "r" }))).toEqual([{ type: "reasoning", content: "r" }]);
    expect(state.feed(delta({ reasoning_content: "", reasoning: "r2" }))).toEqual([
      { type: "reasoning", content: "r2" },
    ]);
    expect(state.feed(delta({ reasoning_content: "a", reasoning: "b" }))).toEqual([
      { type: "reasoning", content: "a" },
    ]);
    expect(state.feed(delta({ content: "", role: "assistant" }))).toEqual([]);
    expect(state.feed(delta({ content: null }))).toEqual([]);
    expect(state.text).toBe("");
  });

  it("reads only choices[0] and guards every access", () => {
    const state = new TurnState();
    expect(state.feed({ choices: [] })).toEqual([]);
    expect(state.feed({ choices: [{}] })).toEqual([]);
    expect(state.feed({ choices: [{ delta: null }] })).toEqual([]);
    expect(state.feed({ choices: [null] })).toEqual([]);
    expect(state.feed({ choices: "x" })).toEqual([]);
    expect(state.feed({ id: "", prompt_filter_results: [] })).toEqual([]);
    expect(state.feed(null)).toEqual([]);
    expect(state.feed([1, 2])).toEqual([]);
    expect(state.feed(5)).toEqual([]);
    expect(
      state.feed({
        choices: [{ delta: { content: "a" } }, { delta: { content: "b" } }],
      }),
    ).toEqual([{ type: "text", content: "a" }]);
  });

  it("gives tool-call deltas with null id / name and empty arguments when absent", () => {
    const state = new TurnState();
    expect(
      state.feed(delta({ tool_calls: [{ index: 1, function: { arguments: "{}" } }] })),
    ).toEqual([{ type: "tool_call", index: 1, id: null, name: null, arguments: "{}" }]);
    expect(state.feed(delta({ tool_calls: [{ index: 1, id: "x" }] }))).toEqual([
      { type: "tool_call", index: 1, id: "x", name: null, arguments: "" },
    ]);
  });

  it("assigns an index when the server omits it: a new slot when the id or name changes", () => {
    const events = feedAll([
      delta({
        tool_calls: [{ id: "call_1", function: { name: "get_time", arguments: '{"tz":' } }],
      }),
      delta({ tool_calls: [{ function: { arguments: '"UTC"}' } }] }),
      delta({ tool_calls: [{ id: "call_2", function: { name: "get_time", arguments: "{}" } }] }),
      delta({ tool_calls: [{ function: { name: "other", arguments: "[]" } }] }),
      delta({ tool_calls: [{ id: "call_3", function: { name: "other", arguments: "1" } }] }),
    ]);
    const calls = events.filter((e) => e.type === "tool_call");
    expect(calls.map((e) => (e.type === "tool_call" ? e.index : -1))).toEqual([0, 0, 1, 2, 2]);
    expect(assembleToolCalls(events)).toEqual([
      { index: 0, id: "call_1", name: "get_time", arguments: '{"tz":"UTC"}' },
      { index: 1, id: "call_2", name: "get_time", arguments: "{}" },
      { index: 2, id: "call_3", name: "other", arguments: "[]1" },
    ]);
  });

  it("remembers the last usage, including from a chunk with empty choices", () => {
    const events = feedAll([
      { ...delta({ content: "a" }), usage: { prompt_tokens: 1, completion_tokens: 1 } },
      { ...delta({ content: "b" }, "stop"), usage: null },
      {
        choices: [],
        usage: {
          prompt_tokens: 10,
          completion_tokens: 4,
          prompt_tokens_details: { cached_tokens: 3 },
        },
      },
    ]);
    expect(events.slice(-2)).toEqual([
      { type: "usage", input_tokens: 7, output_tokens: 4, cache_read_tokens: 3 },
      { type: "finish", reason: "stop" },
    ]);
  });

  it("never reports negative input tokens and counts missing ones as 0", () => {
    expect(
      feedAll([{ usage: { prompt_tokens: 2, prompt_tokens_details: { cached_tokens: 5 } } }])[0],
    ).toEqual({
      type: "usage",
      input_tokens: 0,
      output_tokens: 0,
      cache_read_tokens: 5,
    });
    expect(feedAll([{ usage: {} }])[0]).toEqual({
      type: "usage",
      input_tokens: 0,
      output_tokens: 0,
      cache_read_tokens: 0,
    });
  });

  it("raises server_error for an error object, with the text so far", () => {
    const state = new TurnState();
    state.feed(delta({ content: "Par" }));
    let caught: unknown;
    try {
      state.feed({ error: { message: "Compute error.", code: 502 } });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(StreamError);
    expect((caught as StreamError).code).toBe("server_error");
    expect((caught as StreamError).message).toBe("the server reported an error: Compute error.");
    expect((caught as StreamError).partialText).toBe("Par");
    expect(() => state.feed({ error: { code: 500 } })).toThrow(
      'the server reported an error: {"code":500}',
    );
    // TGI: the error is a string; it is the message as-is.
    expect(() => state.feed({ error: "Input validation error", error_type: "validation" })).toThrow(
      /the server reported an error: Input validation error$/,
    );
    expect(state.feed({ error: null, ...delta({ content: "x" }) })).toEqual([
      { type: "text", content: "x" },
    ]);
  });
});

describe("TurnState.finish", () => {
  it.each([
    ["stop", "stop"],
    ["end_turn", "stop"],
    ["eos", "stop"],
    ["stop_sequence", "stop"],
    ["length", "length"],
    ["max_tokens", "length"],
    ["tool_calls", "tool_calls"],
    ["function_call", "tool_calls"],
    ["content_filter", "content_filter"],
    ["error", "error"],
    ["weird", "other"],
    ["", "other"],
  ])("maps finish_reason %s to %s", (reason, mapped) => {
    expect(feedAll([delta({}, reason)])).toEqual([{ type: "finish", reason: mapped }]);
    expect(feedAll([delta({}, reason)], false)).toEqual([{ type: "finish", reason: mapped }]);
  });

  it("says tool_calls when calls arrived and the reason is stop or other", () => {
    const call = delta({ tool_calls: [{ index: 0, id: "c", function: { name: "f" } }] });
    expect(feedAll([call, delta({}, "stop")]).at(-1)).toEqual({
      type: "finish",
      reason: "tool_calls",
    });
    expect(feedAll([call, delta({}, "odd")]).at(-1)).toEqual({
      type: "finish",
      reason: "tool_calls",
    });
    expect(feedAll([call, delta({}, "length")]).at(-1)).toEqual({
      type: "finish",
      reason: "length",
    });
    expect(feedAll([call]).at(-1)).toEqual({ type: "finish", reason: "tool_calls" });
    expect(feedAll([call], false).at(-1)).toEqual({ type: "finish", reason: "truncated" });
  });

  it("without finish_reason: stop after [DONE], truncated at end of body", () => {
    expect(feedAll([delta({ content: "a" })])).toEqual([
      { type: "text", content: "a" },
      { type: "finish", reason: "stop" },
    ]);
    expect(feedAll([delta({ content: "a" })], false).at(-1)).toEqual({
      type: "finish",
      reason: "truncated",
    });
  });

  it("keeps the last non-null finish_reason", () => {
    expect(feedAll([delta({}, "length"), delta({}, null)]).at(-1)).toEqual({
      type: "finish",
      reason: "length",
    });
    expect(feedAll([delta({}, "length"), delta({}, "stop")]).at(-1)).toEqual({
      type: "finish",
      reason: "stop",
    });
  });
});

describe("completionToChunk", () => {
  it("turns a chat.completion into the events a stream would give", () => {
    const body = {
      id: "x",
      object: "chat.completion",
      choices: [
        {
          index: 0,
          message: {
            role: "assistant",
            content: "Hello",
            reasoning_content: "hmm",
            tool_calls: [
              { id: "a", type: "function", function: { name: "f", arguments: "{}" } },
              { id: "b", type: "function", function: { name: "g", arguments: '{"x":1}' } },
            ],
          },
          finish_reason: "tool_calls",
        },
      ],
      usage: { prompt_tokens: 5, completion_tokens: 2 },
    };
    expect(feedAll([completionToChunk(body)])).toEqual([
      { type: "reasoning", content: "hmm" },
      { type: "text", content: "Hello" },
      { type: "tool_call", index: 0, id: "a", name: "f", arguments: "{}" },
      { type: "tool_call", index: 1, id: "b", name: "g", arguments: '{"x":1}' },
      { type: "usage", input_tokens: 5, output_tokens: 2, cache_read_tokens: 0 },
      { type: "finish", reason: "tool_calls" },
    ]);
  });

  it("keeps an error object, and tolerates odd bodies", () => {
    expect(() => new TurnState().feed(completionToChunk({ error: { message: "no" } }))).toThrow(
      "the server reported an error: no",
    );
    expect(feedAll([completionToChunk({ choices: [] })])).toEqual([
      { type: "finish", reason: "stop" },
    ]);
    expect(feedAll([completionToChunk([1])])).toEqual([{ type: "finish", reason: "stop" }]);
  });
});

describe("assembleToolCalls", () => {
  it("groups by index ascending, keeping the first id and name", () => {
    const events: Event[] = [
      { type: "text", content: "x" },
      { type: "tool_call", index: 2, id: "b", name: "g", arguments: "[" },
      { type: "tool_call", index: 0, id: null, name: null, arguments: '{"a"' },
      { type: "tool_call", index: 0, id: "a", name: "f", arguments: ":1}" },
      { type: "tool_call", index: 2, id: "", name: "g", arguments: "]" },
      { type: "tool_call", index: 0, id: "a2", name: "f", arguments: "" },
    ];
    expect(assembleToolCalls(events)).toEqual([
      { index: 0, id: "a", name: "f", arguments: '{"a":1}' },
      { index: 2, id: "b", name: "g", arguments: "[]" },
    ]);
    expect(assembleToolCalls([])).toEqual([]);
  });
});

describe("the fast paths give what the general path gives", () => {
  const TEXT = { choices: [{ index: 0, delta: { content: "hi" }, finish_reason: null }] };
  const piece = (call: Record<string, unknown>) => ({
    choices: [{ index: 0, delta: { tool_calls: [call] }, finish_reason: null }],
  });
  const OPEN = piece({ index: 0, id: "c1", type: "function", function: { name: "f" } });
  const opened = { type: "tool_call", index: 0, id: "c1", name: "f", arguments: "" };
  const args = (index: number, a: string, name: string | null = null) => ({
    type: "tool_call",
    index,
    id: null,
    name,
    arguments: a,
  });
  const cases: [string, unknown[], unknown[]][] = [
    ["plain text", [TEXT], [{ type: "text", content: "hi" }]],
    [
      "a tag in the text",
      [{ choices: [{ delta: { content: "a<think>b" } }] }],
      [
        { type: "text", content: "a" },
        { type: "reasoning", content: "b" },
      ],
    ],
    [
      "usage in the same chunk",
      [{ ...TEXT, usage: { prompt_tokens: 3 } }],
      [
        { type: "text", content: "hi" },
        { type: "usage", input_tokens: 3, output_tokens: 0, cache_read_tokens: 0 },
      ],
    ],
    [
      "a finish reason in the same chunk",
      [{ choices: [{ delta: { content: "hi" }, finish_reason: "stop" }] }],
      [
        { type: "text", content: "hi" },
        { type: "finish", reason: "stop" },
      ],
    ],
    [
      "reasoning beside the text",
      [{ choices: [{ delta: { content: "hi", reasoning: "r" } }] }],
      [
        { type: "reasoning", content: "r" },
        { type: "text", content: "hi" },
      ],
    ],
    [
      "the next arguments",
      [OPEN, piece({ index: 0, function: { arguments: "{}" } })],
      [opened, args(0, "{}")],
    ],
    [
      "another index",
      [OPEN, piece({ index: 1, function: { arguments: "{}" } })],
      [opened, args(1, "{}")],
    ],
    ["no index", [OPEN, piece({ function: { arguments: "x" } })], [opened, args(0, "x")]],
    [
      "a name with the arguments",
      [OPEN, piece({ index: 0, function: { name: "f", arguments: "x" } })],
      [opened, args(0, "x", "f")],
    ],
    [
      "arguments as an object",
      [OPEN, piece({ index: 0, function: { arguments: { a: 1 } } })],
      [opened, args(0, '{"a":1}')],
    ],
    [
      "arguments before any open call",
      [piece({ index: 0, function: { arguments: "x" } })],
      [args(0, "x")],
    ],
  ];
  it.each(cases)("%s", (_name, chunks, expected) => {
    const state = new TurnState();
    const events = [...chunks.flatMap((chunk) => state.feed(chunk)), ...state.finish(false)];
    const want =
      (expected.at(-1) as Event).type === "finish"
        ? expected
        : [...expected, { type: "finish", reason: "truncated" }];
    expect(events).toEqual(want);
  });

  it("an error in a text chunk is a server_error", () => {
    expect(() => new TurnState().feed({ ...TEXT, error: { message: "boom" } })).toThrow(
      StreamError,
    );
  });
});
