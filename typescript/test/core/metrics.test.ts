// A FallbackLLM turn's metrics record (python/tests/core/test_metrics.py has the mirror): one
// record per turn naming the endpoint that decided it, with every attempt's requests counted.
import net from "node:net";
import { afterEach, beforeEach, expect, it } from "vitest";
import { AllEndpointsFailedError } from "../../src/core/errors.js";
import type { Event } from "../../src/core/events.js";
import { FallbackLLM } from "../../src/core/fallback.js";
import type { TurnMetrics } from "../../src/core/metrics.js";
import { CustomLLM } from "../../src/generated/custom.js";
import { MockServer } from "../../src/testing.js";

const MESSAGES = [{ role: "user", content: "Hi" }];
let server: MockServer;

beforeEach(async () => {
  server = new MockServer({ routes: {} });
  await server.start();
});
afterEach(async () => {
  await server.stop();
});

async function closedUrl(): Promise<string> {
  const probe = net.createServer();
  await new Promise<void>((ok) => probe.listen(0, "127.0.0.1", ok));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((ok) => probe.close(ok));
  return `http://127.0.0.1:${port}/v1`;
}

async function drain(stream: AsyncIterable<Event>): Promise<Event[]> {
  const events: Event[] = [];
  for await (const event of stream) events.push(event);
  return events;
}

it("gives a fallback turn one record naming the winner", async () => {
  server.addRoute("/b/", { text: ["Hi"], headers: { "x-request-id": "r-b" } });
  const turn: TurnMetrics[] = [];
  const own: TurnMetrics[] = [];
  const primary = new CustomLLM({ baseUrl: await closedUrl(), model: "a", maxRetries: 0 });
  const backup = new CustomLLM({
    baseUrl: `${server.origin}/b/v1`,
    model: "b",
    onMetrics: (m) => own.push(m),
  });
  const llm = new FallbackLLM([primary, backup], { onMetrics: (m) => turn.push(m) });
  const events = await drain(llm.stream(MESSAGES));
  await llm.close();
  expect(turn).toHaveLength(1);
  expect((events.at(-1) as { metrics?: TurnMetrics }).metrics).toBe(turn[0]);
  const record = turn[0] as TurnMetrics;
  expect([record.provider, record.model, record.endpoint]).toEqual(["custom", "b", 1]);
  expect(record.attempts).toBe(2);
  expect(record.request_id).toBe("r-b");
  expect(record.finish_reason).toBe("stop");
  expect(record.error_code).toBeNull();
  expect(record.cancelled).toBe(false);
  expect(own).toHaveLength(1);
  expect([own[0]?.endpoint, own[0]?.attempts]).toEqual([0, 1]);
  expect(own[0]?.first_text_ms as number).toBeLessThanOrEqual(record.first_text_ms as number);
});

it("counts both attempts of a hedged fallback turn", async () => {
  server.addRoute("/a/", { text: ["slow"], stall: 0 });
  server.addRoute("/b/", { text: ["B"] });
  const turn: TurnMetrics[] = [];
  const primary = new CustomLLM({ baseUrl: `${server.origin}/a/v1`, model: "a" });
  const backup = new CustomLLM({ baseUrl: `${server.origin}/b/v1`, model: "b" });
  const llm = new FallbackLLM([primary, backup], {
    hedgeAfter: 0.1,
    onMetrics: (m) => turn.push(m),
  });
  const events = await drain(llm.stream(MESSAGES));
  await llm.close();
  expect(
    events.filter((e) => e.type === "text").map((e) => (e as { content: string }).content),
  ).toEqual(["B"]);
  expect(turn).toHaveLength(1);
  expect([turn[0]?.endpoint, turn[0]?.attempts]).toEqual([1, 2]);
  expect(turn[0]?.first_text_ms as number).toBeGreaterThanOrEqual(100);
});

it("gives an all-failed fallback turn one failed record", async () => {
  server.addRoute("/x/", { status: 500, json: { error: { message: "down" } } });
  const turn: TurnMetrics[] = [];
  const llms = ["a", "b"].map(
    (model) => new CustomLLM({ baseUrl: `${server.origin}/x/v1`, model, maxRetries: 0 }),
  );
  const llm = new FallbackLLM(llms, { onMetrics: (m) => turn.push(m) });
  await expect(drain(llm.stream(MESSAGES))).rejects.toBeInstanceOf(AllEndpointsFailedError);
  await llm.close();
  expect(turn).toHaveLength(1);
  const record = turn[0] as TurnMetrics;
  expect(record.error_code).toBe("all_endpoints_failed");
  expect(record.cancelled).toBe(false);
  expect([record.endpoint, record.attempts]).toEqual([1, 2]);
  expect(record.finish_reason).toBeNull();
});

it("logs through the logger option at the logLevel option's level, never a key", async () => {
  server.addRoute("/l/", { text: ["Hi"], headers: { "x-request-id": "r-l" } });
  const lines: string[] = [];
  const logger = {
    debug: (m: string) => lines.push(`debug ${m}`),
    info: (m: string) => lines.push(`info ${m}`),
    warn: (m: string) => lines.push(`warn ${m}`),
  };
  const llm = new CustomLLM({
    baseUrl: `${server.origin}/l/v1`,
    model: "m",
    apiKey: "sk-never-logged",
    logLevel: "debug",
    logger,
  });
  await drain(llm.stream(MESSAGES));
  const quiet = new CustomLLM({
    baseUrl: `${server.origin}/l/v1`,
    model: "m",
    logLevel: "off",
    logger,
  });
  await drain(quiet.stream(MESSAGES));
  expect(lines.map((line) => line.split(" ").slice(0, 3).join(" "))).toEqual([
    "debug request POST",
    "debug answer HTTP",
    "info turn finished",
  ]);
  expect(lines[2]).toContain("request_id=r-l");
  expect(lines.join("\n")).not.toContain("sk-never-logged");
});

it("refuses a logLevel or a logger it cannot use", () => {
  const base = { baseUrl: `${server.origin}/l/v1`, model: "m" };
  expect(() => new CustomLLM({ ...base, logLevel: "verbose" })).toThrow(/logLevel must be one of/);
  expect(() => new CustomLLM({ ...base, logger: console.log as never })).toThrow(/a logger/);
});
