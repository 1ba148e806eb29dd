import { describe, expect, it } from "vitest";
import {
  AllEndpointsFailedError,
  APIConnectionError,
  APIStatusError,
  APITimeoutError,
  BrainlineError,
  ConfigError,
  StreamError,
  formatValue,
  makeError,
} from "../../src/core/errors.js";

describe("formatValue", () => {
  it.each([
    [3, "3"],
    [3.0, "3"],
    [-0, "0"],
    [2.5, "2.5"],
    [0.1 + 0.2, "0.30000000000000004"],
    [1 / 3, "0.3333333333333333"],
    [0.0001, "0.0001"],
    [1e-5, "1e-05"],
    [1.5e-7, "1.5e-07"],
    [-1e-10, "-1e-10"],
    [5e-324, "5e-324"],
    [1e16, "10000000000000000"],
    [1e22, "10000000000000000000000"],
    [123.456, "123.456"],
    [Number.POSITIVE_INFINITY, "Infinity"],
    [Number.NEGATIVE_INFINITY, "-Infinity"],
    [Number.NaN, "NaN"],
  ])("number %s -> %s", (value, expected) => {
    expect(formatValue(value)).toBe(expected);
  });

  it("formats strings as JSON strings, keeping non-ASCII", () => {
    expect(formatValue("a")).toBe('"a"');
    expect(formatValue("")).toBe('""');
    expect(formatValue('say "hi"\n')).toBe('"say \\"hi\\"\\n"');
    expect(formatValue("Caffè ☕")).toBe('"Caffè ☕"');
    expect(formatValue("\u0001")).toBe('"\\u0001"');
  });

  it("formats booleans, undefined and null", () => {
    expect(formatValue(true)).toBe("true");
    expect(formatValue(false)).toBe("false");
    expect(formatValue(undefined)).toBe("undefined");
    expect(formatValue(null)).toBe("null");
  });

  it("formats lists and objects as compact JSON", () => {
    expect(formatValue([1, "a", true, null])).toBe('[1,"a",true,null]');
    expect(formatValue({ b: 1, a: [2.5, { c: "é" }] })).toBe('{"b":1,"a":[2.5,{"c":"é"}]}');
    expect(formatValue([])).toBe("[]");
    expect(formatValue({})).toBe("{}");
    expect(formatValue([1e-5, 3.0])).toBe("[1e-05,3]");
  });
});

describe("makeError", () => {
  it("picks the class and template, formatting params", () => {
    const err = makeError("invalid_type", { option: "timeout", expected: "a number", value: "x" });
    expect(err).toBeInstanceOf(ConfigError);
    expect(err).toBeInstanceOf(BrainlineError);
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toBe("invalid_type");
    expect(err.name).toBe("ConfigError");
    expect(err.message).toBe('timeout must be a number, got "x"');
  });

  it("inserts option, url, detail, what, expected, null, pattern and *_name as-is", () => {
    expect(
      makeError("out_of_range", { option: "topP", minimum: 0, maximum: 1, value: 1.5 }).message,
    ).toBe("topP must be between 0 and 1, got 1.5");
    expect(
      makeError("invalid_session_key_from", { option: "o", null: "undefined", value: 3 }).message,
    ).toBe("o must be 'caller_hash' or undefined, got 3");
    expect(makeError("too_large", { what: "line", limit: 1048576 }).message).toBe(
      "a stream line exceeded 1048576 bytes",
    );
    expect(
      makeError("read_timeout", { url: "http://h/v1/chat/completions", timeout: 0.25 }).message,
    ).toBe("no data from http://h/v1/chat/completions for 0.25 s");
    expect(makeError("server_error", { detail: "boom" }).message).toBe(
      "the server reported an error: boom",
    );
  });

  it("builds every class", () => {
    expect(makeError("connection_error", { url: "u" })).toBeInstanceOf(APIConnectionError);
    expect(makeError("connect_timeout", { url: "u", timeout: 10 })).toBeInstanceOf(APITimeoutError);
    expect(makeError("connect_timeout", { url: "u", timeout: 10 }).message).toBe(
      "no connection to u within 10 s",
    );
    const status = makeError("http_status", {
      url: "u",
      status: 429,
      detail: "slow down",
      body: '{"error":1}',
      retryAfter: 2,
    });
    expect(status).toBeInstanceOf(APIStatusError);
    expect(status.message).toBe("u answered HTTP 429: slow down");
    expect((status as APIStatusError).status).toBe(429);
    expect((status as APIStatusError).body).toBe('{"error":1}');
    expect((status as APIStatusError).retryAfter).toBe(2);
    const stream = makeError("interrupted", { partialText: "Hel" });
    expect(stream).toBeInstanceOf(StreamError);
    expect((stream as StreamError).partialText).toBe("Hel");
    expect(stream.message).toBe("the connection was lost mid-stream");
  });

  it("gives AllEndpointsFailedError each attempt's error", () => {
    const first = makeError("connection_error", { url: "u" });
    const second = makeError("http_status", { url: "v", status: 503, detail: "busy" });
    const err = makeError("all_endpoints_failed", {
      detail: "connection_error, http_status",
      errors: [first, second],
    });
    expect(err).toBeInstanceOf(AllEndpointsFailedError);
    expect(err.message).toBe("every endpoint failed: connection_error, http_status");
    expect((err as AllEndpointsFailedError).errors).toEqual([first, second]);
    expect((makeError("all_endpoints_failed") as AllEndpointsFailedError).errors).toEqual([]);
  });

  it("keeps the cause", () => {
    const cause = new TypeError("fetch failed");
    const err = makeError("connection_error", { url: "u", cause });
    expect(err.cause).toBe(cause);
    expect(makeError("connection_error", { url: "u" }).cause).toBeUndefined();
  });

  it("leaves a placeholder without a param as written, except {null}", () => {
    expect(makeError("invalid_type", { option: "o" }).message).toBe(
      "o must be {expected}, got {value}",
    );
    expect(makeError("invalid_session_key_from", { option: "o", value: "x" }).message).toBe(
      `o must be 'caller_hash' or undefined, got "x"`,
    );
  });

  it("defaults APIStatusError fields", () => {
    const err = makeError("http_status", { url: "u", status: 500, detail: "" }) as APIStatusError;
    expect(err.status).toBe(500);
    expect(err.body).toBe("");
    expect(err.retryAfter).toBeUndefined();
    expect((makeError("malformed", { detail: "x" }) as StreamError).partialText).toBe("");
  });
});
