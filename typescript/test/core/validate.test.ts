import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/core/errors.js";
import { checkKnownOptions, closestName } from "../../src/core/validate.js";
import { CustomLLM } from "../../src/index.js";

const KNOWN = new Set([
  "apiKey",
  "apiKeyEnv",
  "baseUrl",
  "model",
  "timeout",
  "topP",
  "stop",
  "seed",
]);

function thrown(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("closestName", () => {
  it.each([
    ["apikey", "apiKey"], // case
    ["APIKEY", "apiKey"],
    ["api_key", "apiKey"], // Python's spelling
    ["api-key", "apiKey"],
    ["base_url", "baseUrl"],
    ["api_key_env", "apiKeyEnv"],
    ["timout", "timeout"], // a deletion
    ["timeoutt", "timeout"], // an insertion
    ["tiemout", "timeout"], // an adjacent swap counts 1
    ["modle", "model"],
    ["basUrl", "baseUrl"],
    ["seeds", "seed"],
  ])("%s -> %s", (name, meant) => {
    expect(closestName(name, KNOWN)).toBe(meant);
  });

  it.each([
    "bogus",
    "x",
    "", // nothing is close to nothing
    "timeouts_ms", // 4 edits from timeout
    "temperature",
  ])("%j -> no suggestion", (name) => {
    expect(closestName(name, KNOWN)).toBeUndefined();
  });

  it("allows at most a third of the name's length, and never more than 2", () => {
    expect(closestName("mdl", ["model"])).toBeUndefined(); // 2 edits, 3 letters
    expect(closestName("modl", ["model"])).toBe("model"); // 1 edit, 4 letters
    expect(closestName("tmout", ["timeout"])).toBeUndefined(); // 2 edits, 5 letters
    expect(closestName("tmeout", ["timeout"])).toBe("timeout"); // 1 edit, 6 letters
    expect(closestName("responseFrmt", ["responseFormat"])).toBe("responseFormat"); // 2 edits
    expect(closestName("responseFt", ["responseFormat"])).toBeUndefined(); // 4 edits
  });

  it("prefers the same letters, then the nearest, then the first in order", () => {
    expect(closestName("stop_p", ["stopQ", "topP", "stopP"])).toBe("stopP");
    expect(closestName("sead", ["seed", "stop"])).toBe("seed");
    expect(closestName("top", KNOWN)).toBe("topP"); // topP and stop are both one edit away
    expect(closestName("abcd", ["abce", "abcf"])).toBe("abce");
    expect(closestName("abcd", ["abcf", "abce"])).toBe("abcf");
  });
});

describe("checkKnownOptions", () => {
  it("accepts known keys, whatever their values", () => {
    checkKnownOptions({}, KNOWN, "CustomLLM");
    checkKnownOptions({ apiKey: undefined, model: null, timeout: "not checked here" }, KNOWN, "X");
  });

  it("refuses an unknown key with unknown_option, naming the class and the likely option", () => {
    const err = thrown(() =>
      checkKnownOptions({ model: "m", apikey: "sk-secret" }, KNOWN, "CustomLLM"),
    );
    expect(err.code).toBe("unknown_option");
    expect(err.message).toBe('CustomLLM got an unknown option "apikey"; did you mean "apiKey"?');
  });

  it("leaves the suggestion out when nothing is close", () => {
    const err = thrown(() => checkKnownOptions({ bogus: 1 }, KNOWN, "FallbackLLM"));
    expect(err.message).toBe('FallbackLLM got an unknown option "bogus"');
  });

  it("refuses an unknown key whose value is undefined", () => {
    const err = thrown(() => checkKnownOptions({ timout: undefined }, KNOWN, "CustomLLM"));
    expect(err.message).toBe('CustomLLM got an unknown option "timout"; did you mean "timeout"?');
  });

  it("names the first unknown key and never the value", () => {
    const err = thrown(() =>
      checkKnownOptions({ apiKey: "a", apikey: "sk-secret-1", bogus: "sk-secret-2" }, KNOWN, "C"),
    );
    expect(err.message).toContain('"apikey"');
    expect(err.message).not.toContain("sk-secret");
  });

  it("quotes a key that is not an identifier", () => {
    const err = thrown(() => checkKnownOptions({ 'a"b\n': 1 }, KNOWN, "C"));
    expect(err.message).toBe('C got an unknown option "a\\"b\\n"');
  });

  it("ignores inherited and symbol keys", () => {
    const options = Object.create({ inherited: 1 }) as Record<string | symbol, unknown>;
    options.model = "m";
    options[Symbol("tag")] = 1;
    checkKnownOptions(options, KNOWN, "C");
  });
});

describe("a generated constructor", () => {
  const valid = { baseUrl: "http://127.0.0.1:9/v1", model: "m" };

  it("refuses a typo before any other check, and its secret value stays out of the message", () => {
    const err = thrown(() => new CustomLLM({ apikey: "sk-live-123" } as never));
    expect(err.code).toBe("unknown_option");
    expect(err.message).toBe('CustomLLM got an unknown option "apikey"; did you mean "apiKey"?');
    expect(String(err.stack)).not.toContain("sk-live-123");
  });

  it("still builds from known options only", () => {
    const llm = new CustomLLM({ ...valid, apiKey: "k", timeout: undefined });
    expect(llm.config.apiKey).toBe("k");
  });

  it("builds fast: the check is one Set lookup per key", () => {
    const options = { ...valid, apiKey: "k", temperature: 0.5, maxTokens: 64, stop: ["x"] };
    const rounds = 2000;
    const start = performance.now();
    for (let i = 0; i < rounds; i++) new CustomLLM(options);
    const perBuild = (performance.now() - start) / rounds;
    expect(perBuild).toBeLessThan(1); // ms; measured ~0.01 ms here, a generous bound for CI
  });
});
