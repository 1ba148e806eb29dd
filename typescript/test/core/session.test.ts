import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { LLMConfig } from "../../src/generated/options.js";
import {
  type SessionContext,
  hashCaller,
  resolveSessionKey,
  sha256Hex,
} from "../../src/core/session.js";

function config(overrides: Partial<LLMConfig> = {}): LLMConfig {
  return {
    providerKey: "openai_compatible",
    apiKey: undefined,
    apiKeyEnv: undefined,
    baseUrl: "http://127.0.0.1:1/v1",
    model: "m",
    timeout: 60,
    extraHeaders: undefined,
    userAgent: "brainline/test",
    sessionUserPrefix: undefined,
    sessionIdHeader: undefined,
    sessionIdPrefix: "",
    sessionKeyHeader: "X-Key",
    sessionKey: undefined,
    sessionKeyFactory: undefined,
    sessionKeyFrom: undefined,
    temperature: undefined,
    maxTokens: undefined,
    topP: undefined,
    frequencyPenalty: undefined,
    presencePenalty: undefined,
    stop: undefined,
    seed: undefined,
    responseFormat: undefined,
    parallelToolCalls: undefined,
    toolChoice: undefined,
    ...overrides,
  } as LLMConfig;
}

function ctx(caller: string | undefined, callId?: string): SessionContext {
  return { callId, caller, callee: "+15550000000", callerHash: hashCaller(caller) };
}

describe("hashCaller", () => {
  it("matches the reference vector", () => {
    expect(hashCaller("+15551234567")).toBe("8a59780bb8cd2ba0");
  });

  it("is undefined without a caller", () => {
    expect(hashCaller("")).toBeUndefined();
    expect(hashCaller(undefined)).toBeUndefined();
    expect(hashCaller(null)).toBeUndefined();
  });

  it("hashes the UTF-8 bytes", () => {
    expect(hashCaller("é")).toBe("4a99557e4033c353"); // not de2e331d891ae267, the Latin-1 byte
  });
});

describe("resolveSessionKey", () => {
  it("prefers the factory, and its falsy result means none", () => {
    const seen: SessionContext[] = [];
    const factory = (c: SessionContext) => {
      seen.push(c);
      return c.callId ? `k-${c.callId}` : null;
    };
    const cfg = config({
      sessionKeyFactory: factory,
      sessionKeyFrom: "caller_hash",
      sessionKey: "static",
    });
    expect(resolveSessionKey(cfg, ctx("+15551234567", "c1"))).toBe("k-c1");
    expect(resolveSessionKey(cfg, ctx("+15551234567"))).toBeUndefined();
    expect(
      resolveSessionKey(config({ sessionKeyFactory: () => "" }), ctx(undefined)),
    ).toBeUndefined();
    expect(seen[0]?.callerHash).toBe("8a59780bb8cd2ba0");
    expect(seen[0]?.caller).toBe("+15551234567");
  });

  it("derives the key from the caller hash, and none without a caller (no static fallback)", () => {
    const cfg = config({ sessionKeyFrom: "caller_hash", sessionKey: "static" });
    expect(resolveSessionKey(cfg, ctx("+15551234567"))).toBe("patter-caller-8a59780bb8cd2ba0");
    expect(resolveSessionKey(cfg, ctx(undefined))).toBeUndefined();
    expect(resolveSessionKey(config({ sessionKeyFrom: "caller_hash" }), ctx(""))).toBeUndefined();
  });

  it("uses the static key, empty meaning none", () => {
    expect(resolveSessionKey(config({ sessionKey: "s" }), ctx(undefined))).toBe("s");
    expect(resolveSessionKey(config({ sessionKey: "" }), ctx(undefined))).toBeUndefined();
    expect(resolveSessionKey(config(), ctx("+1"))).toBeUndefined();
  });
});

describe("sha256Hex (no node:crypto: browsers, Workers without nodejs_compat)", () => {
  it("equals node:crypto's sha256 on every length around the block boundaries and on UTF-8", () => {
    const samples = ["", "abc", "+15551234567", "é☕𝄞", "x".repeat(1000)];
    for (let n = 0; n <= 200; n++) samples.push("a".repeat(n), "é".repeat(n));
    for (const text of samples) {
      expect(sha256Hex(text)).toBe(createHash("sha256").update(text, "utf8").digest("hex"));
    }
  });

  it("keeps the known caller hash", () => {
    expect(hashCaller("+15551234567")).toBe("8a59780bb8cd2ba0");
  });
});
