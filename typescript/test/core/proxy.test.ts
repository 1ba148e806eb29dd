// Proxies: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY read as httpx reads them, a real proxy
// (tinyproxy, started here on 127.0.0.1) in front of the mock server, and the proxy's own
// failures as `proxy_error`. python/tests/core/test_proxy.py holds the same tests.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import tls from "node:tls";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { APIConnectionError, CustomLLM, type Event } from "../../src/index.js";
import { proxyFor } from "../../src/core/proxy.js";
import { Target } from "../../src/core/transport.js";
import { MockServer } from "../../src/testing/server.js";

interface EnvCase {
  readonly id: string;
  readonly env: Readonly<Record<string, string>>;
  readonly url: string;
  readonly proxy: string | null;
  readonly authorization?: string;
}

const root = new URL("../../../", import.meta.url);
const CASES: readonly EnvCase[] = JSON.parse(
  readFileSync(new URL("tests/proxy/env_cases.json", root), "utf8"),
).cases;
const fixture = (name: string) =>
  readFileSync(new URL(`typescript/test/fixtures/${name}`, root), "latin1");
const MESSAGES = [{ role: "user", content: "hi" }];
const USER = "alice";
const PASSWORD = "pr0xy-s3cret";
const TINYPROXY = spawnSync("sh", ["-c", "command -v tinyproxy"]).stdout.toString().trim();
const needsTinyproxy = !TINYPROXY && !process.env.CI;

// Every test starts without proxy variables (a developer's own would leak in).
let saved: Record<string, string | undefined> = {};
beforeEach(() => {
  saved = {};
  for (const name of Object.keys(process.env)) {
    if (name.toLowerCase().endsWith("_proxy") || name === "REQUEST_METHOD") {
      saved[name] = process.env[name];
      delete process.env[name];
    }
  }
});
afterEach(() => {
  for (const name of Object.keys(process.env)) {
    if (name.toLowerCase().endsWith("_proxy") || name === "REQUEST_METHOD")
      delete process.env[name];
  }
  Object.assign(process.env, saved);
});

describe("which proxy: the shared cases (python/tests checks each against httpx)", () => {
  for (const c of CASES) {
    it(c.id, () => {
      const proxy = proxyFor(new URL(`${c.url}/chat/completions`), c.env);
      expect(proxy?.url ?? null).toBe(c.proxy);
      expect(proxy?.authorization).toBe(c.authorization);
    });
  }

  it("keys the pool by the proxy: tunnelled and direct connections never mix", async () => {
    const url = "https://api.example.com/v1/chat/completions";
    const direct = await Target.of(url);
    process.env.HTTPS_PROXY = "http://proxy.corp:3128";
    const proxied = await Target.of(url);
    process.env.HTTPS_PROXY = "http://alice:x@proxy.corp:3128";
    const other = await Target.of(url);
    expect(direct.proxy).toBeUndefined();
    expect(new Set([direct.origin, proxied.origin, other.origin]).size).toBe(3);
    expect(proxied.path).toBe("/v1/chat/completions"); // in the tunnel: origin form
    process.env.HTTP_PROXY = "http://proxy.corp:3128";
    expect((await Target.of("http://api.example.com/v1/x?q=1")).path).toBe(
      "http://api.example.com/v1/x?q=1", // to the proxy: absolute form
    );
  });

  it("refuses a proxy scheme it cannot speak, naming the proxy", async () => {
    process.env.HTTPS_PROXY = "socks5://u:p@127.0.0.1:1080";
    const llm = new CustomLLM({ baseUrl: "https://api.example.com/v1", model: "m" });
    const error = await failure(llm);
    expect(error).toBeInstanceOf(APIConnectionError);
    expect((error as APIConnectionError).code).toBe("proxy_error");
    expect((error as Error).message).toBe(
      "could not reach https://api.example.com/v1/chat/completions through the proxy " +
        "socks5://127.0.0.1:1080: socks5:// proxies are not supported (http:// only)",
    );
  });
});

// -- a real proxy ------------------------------------------------------------------------------

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((ok) => server.close(() => ok()));
  return port;
}

async function reachable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** tinyproxy on 127.0.0.1 (Basic auth when `auth`): its URL, without credentials. */
async function tinyproxy(auth = false): Promise<{ url: string; stop: () => Promise<void> }> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const conf = join(tmpdir(), `brainline-tinyproxy-${process.pid}-${port}.conf`);
    const lines = [
      `Port ${port}`,
      "Listen 127.0.0.1",
      "Timeout 30",
      "MaxClients 50",
      "Allow 127.0.0.1",
      "XTinyproxy Yes", // forwarded requests carry X-Tinyproxy: the test sees the way
      "LogLevel Critical",
    ];
    if (auth) lines.push(`BasicAuth ${USER} ${PASSWORD}`);
    writeFileSync(conf, `${lines.join("\n")}\n`);
    const child: ChildProcess = spawn(TINYPROXY, ["-d", "-c", conf], { stdio: "ignore" });
    const exited = new Promise<void>((ok) => child.once("exit", () => ok()));
    const stop = async () => {
      child.kill("SIGTERM");
      await exited;
    };
    const deadline = Date.now() + 5000;
    while (child.exitCode === null && Date.now() < deadline) {
      if (await reachable(port)) return { url: `http://127.0.0.1:${port}`, stop };
      await sleep(20);
    }
    await stop();
  }
  throw new Error("tinyproxy did not start");
}

/**
 * TLS on 127.0.0.1 with the test certificate, relaying each connection to upstreamPort and
 * closing each side when the other closes (so a barge-in reaches the mock server).
 */
async function tlsFront(upstreamPort: number): Promise<{ port: number; close: () => void }> {
  const sockets = new Set<net.Socket>();
  const server = tls.createServer(
    { key: fixture("localhost-key.pem"), cert: fixture("localhost-cert.pem") },
    (socket) => {
      const upstream = net.connect({ host: "127.0.0.1", port: upstreamPort });
      for (const s of [socket, upstream]) {
        sockets.add(s);
        s.on("error", () => {});
        s.on("close", () => {
          socket.destroy();
          upstream.destroy();
        });
      }
      socket.pipe(upstream);
      upstream.pipe(socket);
    },
  );
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    close: () => {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

const withCredentials = (proxy: string, password = PASSWORD) =>
  proxy.replace("http://", `http://${USER}:${password}@`);

async function turn(llm: CustomLLM, signal?: AbortSignal): Promise<Event[]> {
  const events: Event[] = [];
  for await (const event of llm.stream(MESSAGES, null, { signal })) events.push(event);
  return events;
}

async function failure(llm: CustomLLM): Promise<unknown> {
  try {
    await turn(llm);
  } catch (err) {
    return err;
  } finally {
    await llm.close();
  }
  throw new Error("the turn did not fail");
}

const texts = (events: Event[]) =>
  events.flatMap((event) => (event.type === "text" ? [event.content] : []));

describe.skipIf(needsTinyproxy)("through tinyproxy", () => {
  it("http through the proxy in absolute form", async () => {
    const proxy = await tinyproxy(true);
    const server = new MockServer({ text: ["Hel", "lo"] });
    const url = await server.start();
    try {
      process.env.HTTP_PROXY = withCredentials(proxy.url);
      const llm = new CustomLLM({ baseUrl: url, model: "m" });
      const events = await turn(llm);
      await llm.close();
      expect(texts(events)).toEqual(["Hel", "lo"]);
      expect(events.at(-1)?.type).toBe("finish");
      const request = server.requests[0];
      expect(request?.path).toBe("/v1/chat/completions");
      expect(request?.header("x-tinyproxy")).toBe("127.0.0.1"); // the proxy's mark
      expect(request?.header("proxy-authorization")).toBeNull(); // the proxy keeps them
    } finally {
      await server.stop();
      await proxy.stop();
    }
  });

  it("https through a CONNECT tunnel", async () => {
    const proxy = await tinyproxy(true);
    const server = new MockServer({ text: ["sec", "ure"] });
    await server.start();
    const front = await tlsFront(server.port);
    const baseUrl = `https://localhost:${front.port}/v1`;
    try {
      // Without the credentials the tunnel is refused: the turn went to the proxy.
      process.env.HTTPS_PROXY = proxy.url;
      const refused = await failure(new CustomLLM({ baseUrl, model: "m" }));
      expect((refused as APIConnectionError).code).toBe("proxy_error");
      process.env.HTTPS_PROXY = withCredentials(proxy.url);
      const llm = new CustomLLM({ baseUrl, model: "m" });
      for (let i = 0; i < 2; i++) expect(texts(await turn(llm))).toEqual(["sec", "ure"]);
      await llm.close();
      expect(server.requests).toHaveLength(2);
      expect(server.connectionsTotal).toBe(1); // one tunnel, kept alive for the second turn
      expect(server.requests[0]?.header("x-tinyproxy")).toBeNull(); // the proxy saw no HTTP
    } finally {
      front.close();
      await server.stop();
      await proxy.stop();
    }
  });

  for (const scheme of ["http", "https"] as const) {
    it(`a 407 says it came from the proxy (${scheme})`, async () => {
      const proxy = await tinyproxy(true);
      const server = new MockServer({ text: ["never"] });
      const url = await server.start();
      const front = await tlsFront(server.port);
      const base = scheme === "http" ? url : `https://localhost:${front.port}/v1`;
      const attempts: number[] = [];
      try {
        process.env[`${scheme.toUpperCase()}_PROXY`] = proxy.url; // no credentials
        const llm = new CustomLLM({
          baseUrl: base,
          model: "m",
          maxRetries: 2,
          onMetrics: (m) => attempts.push(m.attempts),
        });
        const error = await failure(llm);
        expect(error).toBeInstanceOf(APIConnectionError);
        expect((error as APIConnectionError).code).toBe("proxy_error");
        expect((error as Error).message).toBe(
          `could not reach ${base}/chat/completions through the proxy ${proxy.url}: ` +
            "the proxy answered HTTP 407",
        );
        expect(attempts).toEqual([1]); // a proxy's refusal is not retried
        expect(server.requests).toEqual([]);
      } finally {
        front.close();
        await server.stop();
        await proxy.stop();
      }
    });
  }

  it("wrong credentials are never shown", async () => {
    const proxy = await tinyproxy(true);
    try {
      process.env.HTTPS_PROXY = withCredentials(proxy.url, "wrong-pass");
      const llm = new CustomLLM({
        baseUrl: `https://localhost:${await freePort()}/v1`,
        model: "m",
      });
      const error = (await failure(llm)) as APIConnectionError;
      // tinyproxy answers wrong credentials with 401; to CONNECT, any answer is the proxy's.
      expect(error.code).toBe("proxy_error");
      expect(error.message).toMatch(
        new RegExp(`through the proxy ${proxy.url}: the proxy answered HTTP 401$`),
      );
      const { inspect } = await import("node:util");
      const shown = [
        error.message,
        JSON.stringify(error),
        inspect(error, { depth: 10 }),
        String(error.cause),
        JSON.stringify(llm),
        inspect(llm, { depth: 10 }),
      ];
      for (const text of shown) expect(text).not.toContain("wrong-pass");
      for (const text of shown) expect(text).not.toContain(btoa(`${USER}:wrong-pass`));
    } finally {
      await proxy.stop();
    }
  });

  it("a refused tunnel says it came from the proxy", async () => {
    const proxy = await tinyproxy();
    const closed = await freePort();
    try {
      process.env.HTTPS_PROXY = proxy.url;
      const error = await failure(
        new CustomLLM({ baseUrl: `https://localhost:${closed}/v1`, model: "m" }),
      );
      expect((error as APIConnectionError).code).toBe("proxy_error");
      // tinyproxy answers a CONNECT it cannot make with 500 "Unable to connect".
      expect((error as Error).message).toBe(
        `could not reach https://localhost:${closed}/v1/chat/completions through the proxy ` +
          `${proxy.url}: the proxy answered HTTP 500`,
      );
    } finally {
      await proxy.stop();
    }
  });

  it("barge-in through the tunnel closes it", async () => {
    const proxy = await tinyproxy();
    const server = new MockServer({ text: ["first", "never"], stall: 1 });
    await server.start();
    const front = await tlsFront(server.port);
    try {
      process.env.HTTPS_PROXY = proxy.url;
      const llm = new CustomLLM({ baseUrl: `https://localhost:${front.port}/v1`, model: "m" });
      const controller = new AbortController();
      const events: Event[] = [];
      for await (const event of llm.stream(MESSAGES, null, { signal: controller.signal })) {
        events.push(event);
        controller.abort();
      }
      expect(events).toEqual([{ type: "text", content: "first" }]);
      expect(await server.waitFor(() => server.requests.at(-1)?.clientClosed === true, 2)).toBe(
        true,
      );
      await llm.close();
    } finally {
      front.close();
      await server.stop();
      await proxy.stop();
    }
  });
});

describe("a proxy that never answers CONNECT", () => {
  it("a barge-in or the connect timeout closes the socket to it", async () => {
    let open = 0;
    const heads: string[] = [];
    const silent = net.createServer((socket) => {
      open += 1;
      socket.on("data", (data) => heads.push(data.toString("latin1")));
      socket.on("error", () => {});
      socket.on("close", () => {
        open -= 1;
      });
    });
    await new Promise<void>((ok) => silent.listen(0, "127.0.0.1", ok));
    const { port } = silent.address() as net.AddressInfo;
    try {
      process.env.HTTPS_PROXY = `http://u:p@127.0.0.1:${port}`;
      const llm = new CustomLLM({ baseUrl: "https://api.example.com:8443/v1", model: "m" });
      const controller = new AbortController();
      setTimeout(() => controller.abort(), 200);
      expect(await turn(llm, controller.signal)).toEqual([]);
      expect(heads[0]).toBe(
        "CONNECT api.example.com:8443 HTTP/1.1\r\nHost: api.example.com:8443\r\n" +
          `Proxy-Authorization: Basic ${btoa("u:p")}\r\n\r\n`,
      );
      for (let i = 0; i < 50 && open > 0; i++) await sleep(10);
      expect(open).toBe(0);
      const slow = new CustomLLM({
        baseUrl: "https://api.example.com/v1",
        model: "m",
        timeout: 0.3,
      });
      const error = (await failure(slow)) as APIConnectionError;
      expect(error.code).toBe("connect_timeout");
      for (let i = 0; i < 50 && open > 0; i++) await sleep(10);
      expect(open).toBe(0);
    } finally {
      silent.close();
    }
  });
});

describe("NO_PROXY", () => {
  it("bypasses the proxy; without it, an unreachable proxy is named", async () => {
    const dead = `http://127.0.0.1:${await freePort()}`; // nothing listens there
    process.env.HTTP_PROXY = dead;
    const server = new MockServer({ text: ["direct"] });
    const url = await server.start();
    try {
      process.env.NO_PROXY = "localhost,127.0.0.1";
      const llm = new CustomLLM({ baseUrl: url, model: "m", maxRetries: 0 });
      expect((await turn(llm))[0]).toEqual({ type: "text", content: "direct" });
      await llm.close();
      delete process.env.NO_PROXY;
      const error = await failure(new CustomLLM({ baseUrl: url, model: "m" }));
      expect((error as APIConnectionError).code).toBe("proxy_error");
      expect((error as Error).message).toBe(
        `could not reach ${url}/chat/completions through the proxy ${dead}: ` +
          "no connection to the proxy",
      );
    } finally {
      await server.stop();
    }
  });
});
