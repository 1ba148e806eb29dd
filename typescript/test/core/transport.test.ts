// The HTTP/1.1 transport on its own, against a raw TCP server that writes exact bytes in pieces:
// framing (Content-Length, chunked, until close), heads and chunk lines split anywhere, interim
// answers, trailers, keep-alive decisions, and responses that break HTTP.
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

const realSleep = sleep; // node:timers/promises is not faked by vi.useFakeTimers
import { afterEach, describe, expect, it, vi } from "vitest";
import { KEEPALIVE_EXPIRY } from "../../src/generated/constants.js";
import { Call, ProtocolError, Target } from "../../src/core/transport.js";

/** A server that answers each request on a connection with the next script's pieces. */
class RawServer {
  connections = 0;
  heads: string[] = [];
  private readonly sockets = new Set<net.Socket>();
  private readonly server: net.Server;

  constructor(private readonly scripts: (readonly string[])[]) {
    this.server = net.createServer((socket) => {
      this.connections += 1;
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
      socket.on("error", () => {});
      let buffered = "";
      socket.on("data", (data) => {
        buffered += data.toString("latin1");
        for (;;) {
          const end = buffered.indexOf("\r\n\r\n");
          if (end === -1) return;
          const head = buffered.slice(0, end);
          const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
          if (buffered.length < end + 4 + length) return;
          buffered = buffered.slice(end + 4 + length);
          this.heads.push(head);
          void this.answer(socket, this.scripts.shift() ?? []);
        }
      });
    });
  }

  private async answer(socket: net.Socket, pieces: readonly string[]): Promise<void> {
    for (const piece of pieces) {
      if (piece === "<close>") {
        socket.end();
        return;
      }
      socket.write(Buffer.from(piece, "latin1"));
      await sleep(2);
    }
  }

  get openSockets(): number {
    return this.sockets.size;
  }

  async start(): Promise<string> {
    await new Promise<void>((ok) => this.server.listen(0, "127.0.0.1", ok));
    return `http://127.0.0.1:${(this.server.address() as net.AddressInfo).port}/v1/x`;
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((ok) => this.server.close(ok));
  }
}

let server: RawServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

/** Each piece split into its single bytes: every boundary a parser can meet. */
const bytewise = (text: string): string[] => [...text];

async function fetchText(url: string): Promise<{ status: number; text: string; headers: Call }> {
  const call = new Call(await Target.of(url), "POST", [["X-A", "1"]], Buffer.from("{}"), 10_000);
  const reply = await call.reply;
  let text = "";
  if (reply.body !== undefined) {
    for (
      let piece = await reply.body.read();
      piece !== undefined;
      piece = await reply.body.read()
    ) {
      text += Buffer.from(piece).toString("latin1");
    }
  }
  return { status: reply.status, text, headers: call };
}

/** Two requests in a row: the answers, and whether the second reused the first's connection. */
async function twice(scripts: (readonly string[])[]): Promise<[string[], boolean]> {
  server = new RawServer(scripts);
  const url = await server.start();
  const first = await fetchText(url);
  await sleep(5); // let a closing server's FIN arrive
  const second = await fetchText(url);
  return [[first.text, second.text], server.connections === 1];
}

const OK = "HTTP/1.1 200 OK\r\n";

describe("framing", () => {
  it.each<[string, string[], string, boolean]>([
    ["content-length", [`${OK}Content-Length: 5\r\n\r\nhello`], "hello", true],
    [
      "content-length split bytewise",
      bytewise(`${OK}Content-Length: 5\r\n\r\nhello`),
      "hello",
      true,
    ],
    [
      "chunked, many chunks per read",
      [`${OK}Transfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n`],
      "hello",
      true,
    ],
    [
      "chunked, split bytewise",
      bytewise(`${OK}Transfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n`),
      "hello",
      true,
    ],
    [
      "chunk extensions, blanks and upper-case hex",
      [
        `${OK}Transfer-Encoding: chunked\r\n\r\nA;name=x\r\n0123456789\r\nb \t;y\r\n-abcdefghij\r\n0\r\n\r\n`,
      ],
      "0123456789-abcdefghij",
      true,
    ],
    [
      "trailers",
      [`${OK}Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n`],
      "x",
      true,
    ],
    [
      "interim 100 and 103 answers first",
      [
        `HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n${OK}Content-Length: 2\r\n\r\nok`,
      ],
      "ok",
      true,
    ],
    ["no reason phrase", ["HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"], "ok", true],
    ["an empty body", [`${OK}Content-Length: 0\r\n\r\n`], "", true],
    ["until close: not reused", [`${OK}\r\nall of it`, "<close>"], "all of it", false],
    [
      "Connection: close: not reused",
      [`${OK}Connection: close\r\nContent-Length: 2\r\n\r\nok`],
      "ok",
      false,
    ],
    ["HTTP/1.0: not reused", ["HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"], "ok", false],
    [
      "a Keep-Alive timeout of 1 s: not reused",
      [`${OK}Keep-Alive: timeout=1\r\nContent-Length: 2\r\n\r\nok`],
      "ok",
      false,
    ],
    ["bytes after the body: not reused", [`${OK}Content-Length: 2\r\n\r\nokEXTRA`], "ok", false],
  ])("%s", async (_name, pieces, text, reused) => {
    const [texts, sameConnection] = await twice([pieces, pieces]);
    expect(texts).toEqual([text, text]);
    expect(sameConnection).toBe(reused);
  });

  it("sends the request head as given, then Accept, Accept-Encoding, Connection, Content-Length", async () => {
    server = new RawServer([[`${OK}Content-Length: 0\r\n\r\n`]]);
    const url = await server.start();
    await fetchText(url);
    expect(server.heads[0]?.split("\r\n")).toEqual([
      "POST /v1/x HTTP/1.1",
      `Host: ${new URL(url).host}`,
      "X-A: 1",
      "Accept: */*",
      "Accept-Encoding: gzip, deflate",
      "Connection: keep-alive",
      "Content-Length: 2",
    ]);
  });

  it("refuses a header that would split the request", async () => {
    const target = await Target.of("http://127.0.0.1:9/v1");
    for (const header of [
      ["X-A", "1\r\nX-B: 2"],
      ["X A", "1"],
      ["X-A", "nul\0"],
    ] as const) {
      expect(() => new Call(target, "POST", [header], undefined, 1000)).toThrow(TypeError);
    }
  });
});

/** The status, the named headers and the body of one answer. */
async function answer(
  pieces: readonly string[],
  names: readonly string[],
): Promise<[number, (string | null)[], string]> {
  server = new RawServer([pieces]);
  const call = new Call(await Target.of(await server.start()), "GET", [], undefined, 10_000);
  const reply = await call.reply;
  let text = "";
  for (
    let piece = await reply.body?.read();
    piece !== undefined;
    piece = await reply.body?.read()
  ) {
    text += Buffer.from(piece).toString("latin1");
  }
  return [reply.status, names.map((name) => reply.header(name)), text];
}

// Where the differential fuzz against llhttp (tests/fuzz/http_diff.mjs) found this transport
// reading RFC 9110 / 9112 otherwise.
describe("field values and lengths as RFC 9110 / 9112 read them", () => {
  it("trims only SP and HTAB around a value (a no-break space is part of it)", async () => {
    const head = `${OK}X-A: \xa0v\xa0\r\nX-B:\t v \t\r\nContent-Length: 2\r\n\r\nok`;
    expect(await answer([head], ["x-a", "x-b"])).toEqual([200, ["\xa0v\xa0", "v"], "ok"]);
  });

  it("does not take a no-break space and chunked for chunked", async () => {
    const raw = "2\r\nok\r\n0\r\n\r\n";
    const head = `${OK}Transfer-Encoding: \xa0chunked\r\n\r\n${raw}`;
    expect(await answer([head, "<close>"], [])).toEqual([200, [], raw]);
  });

  it("reads leading zeros in a Content-Length and in chunk sizes", async () => {
    const length = `${OK}Content-Length: 0000000000000002\r\n\r\nok`;
    expect(await answer([length], [])).toEqual([200, [], "ok"]);
    const chunked = `${OK}Transfer-Encoding: chunked\r\n\r\n${"0".repeat(20)}2\r\nok\r\n${"0".repeat(20)}\r\n\r\n`;
    expect(await answer([chunked], [])).toEqual([200, [], "ok"]);
  });

  it("reads an obsolete line fold as a space (RFC 9112 §5.2), in headers and trailers", async () => {
    const head = `${OK}X-A: 1\r\n folded\r\n\t again \r\nX-B:\r\n b\r\nTransfer-Encoding: chunked\r\n\r\n`;
    const body = "2\r\nok\r\n0\r\nX-T: 1\r\n more\r\n\r\n";
    expect(await answer([head + body], ["x-a", "x-b"])).toEqual([
      200,
      ["1 folded again", "b"],
      "ok",
    ]);
  });
});

describe("responses that break HTTP", () => {
  it.each<[string, string[]]>([
    ["a bad status line", ["HTTP/2 200 OK\r\n\r\n"]],
    ["not HTTP at all", ["SSH-2.0-OpenSSH\r\n\r\n"]],
    ["a header without a colon", [`${OK}Nonsense\r\n\r\n`]],
    ["a folded line before the first header", [`${OK} folded\r\nContent-Length: 0\r\n\r\n`]],
    ["a bad Content-Length", [`${OK}Content-Length: 12abc\r\n\r\n`]],
    ["two different Content-Lengths", [`${OK}Content-Length: 2\r\nContent-Length: 3\r\n\r\nok`]],
    [
      "Content-Length and Transfer-Encoding",
      [`${OK}Content-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n`],
    ],
    [
      "Transfer-Encoding and Content-Length on a 204",
      ["HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n"],
    ],
    ["a DEL in a header value", [`${OK}X-A: a\x7fb\r\nContent-Length: 0\r\n\r\n`]],
    ["a control byte in a header value", [`${OK}X-A: \x01\r\nContent-Length: 0\r\n\r\n`]],
    ["a vertical tab after chunked", [`${OK}Transfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n`]],
    [
      "a bad header in an interim answer",
      [`HTTP/1.1 103 Early Hints\r\nX A: 1\r\n\r\n${OK}Content-Length: 0\r\n\r\n`],
    ],
    ["a head over 16 KiB", [`${OK}X-Pad: ${"z".repeat(17_000)}\r\n\r\n`]],
  ])("%s: the reply rejects with ProtocolError", async (_name, pieces) => {
    server = new RawServer([pieces]);
    const url = await server.start();
    await expect(fetchText(url)).rejects.toBeInstanceOf(ProtocolError);
  });

  it.each<[string, string[]]>([
    ["a bad chunk size", [`${OK}Transfer-Encoding: chunked\r\n\r\nzz\r\n`]],
    ["a control byte for a digit", [`${OK}Transfer-Encoding: chunked\r\n\r\n\x12\r\nok\r\n`]],
    [
      "a chunk size over 12 digits",
      [`${OK}Transfer-Encoding: chunked\r\n\r\n${"1".repeat(13)}\r\n`],
    ],
    ["a chunk without its CRLF", [`${OK}Transfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n`]],
    ["a bare LF in the chunk framing", [`${OK}Transfer-Encoding: chunked\r\n\r\n2\nok\r\n`]],
    ["a bare CR in a chunk extension", [`${OK}Transfer-Encoding: chunked\r\n\r\n2;a\rb\r\nok\r\n`]],
    ["a NUL in a chunk extension", [`${OK}Transfer-Encoding: chunked\r\n\r\n2;a=\0\r\nok\r\n`]],
    [
      "a trailer that is not a field",
      [`${OK}Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX A: 1\r\n\r\n`],
    ],
    [
      "a trailer with a control byte",
      [`${OK}Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: \x01\r\n\r\n`],
    ],
  ])("%s: the body read rejects with ProtocolError", async (_name, pieces) => {
    server = new RawServer([pieces]);
    const url = await server.start();
    await expect(fetchText(url)).rejects.toBeInstanceOf(ProtocolError);
  });

  it.each<[string, string[]]>([
    ["closed before the head", ["HTTP/1.1 200", "<close>"]],
    ["closed in a Content-Length body", [`${OK}Content-Length: 10\r\n\r\nshort`, "<close>"]],
    ["closed in a chunked body", [`${OK}Transfer-Encoding: chunked\r\n\r\n5\r\nab`, "<close>"]],
  ])("%s: rejects with ECONNRESET", async (_name, pieces) => {
    server = new RawServer([pieces]);
    const url = await server.start();
    await expect(fetchText(url)).rejects.toMatchObject({ code: "ECONNRESET" });
  });
});

describe("abort", () => {
  it("rejects the reply and the read, and closes the connection", async () => {
    server = new RawServer([[`${OK}Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n`]]);
    const url = await server.start();
    const call = new Call(await Target.of(url), "GET", [], undefined, 10_000);
    const reply = await call.reply;
    expect(Buffer.from((await reply.body?.read()) ?? []).toString()).toBe("ok");
    const read = reply.body?.read();
    call.abort();
    await expect(read).rejects.toMatchObject({ code: "ABORT_ERR" });
    await expect(reply.body?.read()).rejects.toMatchObject({ code: "ABORT_ERR" });
  });

  it("leaves a connection whose body was read to the end in the pool", async () => {
    const done = [`${OK}Content-Length: 2\r\n\r\nok`];
    server = new RawServer([done, done]);
    const url = await server.start();
    const call = new Call(await Target.of(url), "GET", [], undefined, 10_000);
    const body = (await call.reply).body;
    while ((await body?.read()) !== undefined) {}
    call.abort();
    expect((await fetchText(url)).text).toBe("ok");
    expect(server.connections).toBe(1);
  });
});

describe("the pool", () => {
  it("closes an idle connection after KEEPALIVE_EXPIRY, not before", async () => {
    const done = [`${OK}Content-Length: 2\r\n\r\nok`];
    server = new RawServer([done, done]);
    const url = await server.start();
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    try {
      expect((await fetchText(url)).text).toBe("ok");
      await vi.advanceTimersByTimeAsync(KEEPALIVE_EXPIRY * 1000 - 10);
      expect((await fetchText(url)).text).toBe("ok"); // reused, and idle from now on again
      expect(server.connections).toBe(1);
      await vi.advanceTimersByTimeAsync(KEEPALIVE_EXPIRY * 1000);
      // Real time only (vi.waitFor would advance the fake clock): the close reaches the server.
      for (let i = 0; i < 200 && server.openSockets > 0; i++) await realSleep(5);
      expect(server.openSockets).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });
});
