/**
 * HTTP/1.1 under the client, on node:net and node:tls sockets: requests written as bytes,
 * responses parsed here (RFC 9112), keep-alive connections pooled per origin and shared by every
 * BaseLLM in the process (as fetch shares undici's global dispatcher). Python's counterpart is
 * httpx.
 *
 * Not fetch: undici's fetch costs a one-chunk turn about twice what a socket does on loopback
 * (its WHATWG Request, Response, Headers and stream objects, and the listener and finalization
 * registry it sets up for every request's AbortSignal), and it hides the connect phase, which the
 * connect timeout needs. Not node:http: its parser calls into JavaScript once per HTTP chunk, and
 * servers send one chunk per event, which cost a 20,000-event answer about a quarter more time
 * than fetch. Here each socket read becomes one body piece, however many chunks it holds.
 * (docs/BENCHMARKS.md has the figures.)
 */
import type * as net from "node:net";
import type * as tls from "node:tls";
import type * as zlib from "node:zlib";
import { KEEPALIVE_EXPIRY } from "../generated/constants.js";
import { type ProxyServer, proxyFor } from "./proxy.js";

/**
 * An idle pooled connection is closed after KEEPALIVE_EXPIRY (or sooner when the server's
 * Keep-Alive header says so), as Python's httpx pool: a server's own idle timeout must not reset
 * the connection under the next turn.
 */
const KEEP_ALIVE_MS = KEEPALIVE_EXPIRY * 1000;
/** A server's Keep-Alive timeout is trusted less this much, so the server never closes first. */
const KEEP_ALIVE_MARGIN_MS = 1000;
/** The longest response head (status line and headers), and trailer section, taken. */
const MAX_HEAD_BYTES = 16 * 1024;
/** How much of a body may wait for the consumer before the socket is paused. */
const QUEUE_MAX_BYTES = 256 * 1024;
/** What fetch and httpx ask for; an answer in one of these is decoded on the fly. */
const ACCEPT_ENCODING = "gzip, deflate";
const STATUS_LINE = /^HTTP\/1\.([01]) ([0-9]{3})(?: [^\r\n]*)?$/;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const UNSAFE_HEADER_TEXT = /[\r\n\0]/;
/** The control bytes a received field line may not hold: all but HTAB (RFC 9110 §5.5). */
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control bytes is its purpose
const FIELD_CTL = /[\0-\x08\n-\x1f\x7f]/;

type Net = typeof net;
type Tls = typeof tls;

// Loaded on first use, not at import: node:tls (with crypto) and node:zlib add several
// milliseconds to the start of a process that may never need them.
let netModule: Promise<Net> | undefined;
let tlsModule: Promise<Tls> | undefined;
let zlibModule: Promise<typeof zlib> | undefined;
let zlibLoaded: typeof zlib | undefined;

/** Idle keep-alive connections by origin, the most recently used last. */
const idle = new Map<string, Connection[]>();

/** Where requests go: an http(s) URL taken apart once per client, and its socket module. */
export class Target {
  readonly hostname: string;
  readonly port: number;
  /** The request target: path and query, or the absolute URL to an http proxy (RFC 9112 §3.2.2). */
  readonly path: string;
  /** The Host header: the host, and the port unless it is the scheme's default. */
  readonly host: string;
  /** The pool's key: the origin, and the proxy (tunnelled and direct connections never mix). */
  readonly origin: string;
  /**
   * The proxy the requests go through (from HTTPS_PROXY / HTTP_PROXY / ALL_PROXY and NO_PROXY,
   * read once, here), or undefined: https in a CONNECT tunnel, http in absolute form.
   */
  readonly proxy: ProxyServer | undefined;
  /** TLS server name (SNI): the host name, none for an IP address. */
  readonly servername: string | undefined;

  private constructor(
    parsed: URL,
    readonly net: Net,
    readonly tls: Tls | undefined,
  ) {
    // An IPv6 literal comes bracketed ("[::1]"); the socket wants it bare.
    this.hostname = parsed.hostname.replace(/^\[(.*)\]$/, "$1");
    this.port = parsed.port ? Number(parsed.port) : tls ? 443 : 80;
    this.host = parsed.host;
    const origin = `${tls ? "https" : "http"}://${parsed.host}`;
    this.proxy = proxyFor(parsed);
    this.path = `${this.proxy !== undefined && !tls ? origin : ""}${parsed.pathname}${parsed.search}`;
    this.origin = this.proxy === undefined ? origin : `${origin} via ${this.proxy.key}`;
    this.servername = net.isIP(this.hostname) ? undefined : this.hostname;
  }

  /** A request to this target (fetch.ts's FetchTarget has the same method). */
  call(
    method: string,
    headers: readonly (readonly [string, string])[],
    payload: Uint8Array | undefined,
    connectMs: number,
  ): Call {
    return new Call(this, method, headers, payload, connectMs);
  }

  /** Close the idle keep-alive connections to this origin (those in use finish first). */
  closeIdle(): void {
    for (const connection of [...(idle.get(this.origin) ?? [])]) connection.destroy();
  }

  /** Rejects when `url` does not parse. */
  static async of(url: string): Promise<Target> {
    const parsed = new URL(url);
    netModule ??= import("node:net");
    const secure = parsed.protocol === "https:";
    if (secure) tlsModule ??= import("node:tls");
    return new Target(parsed, await netModule, secure ? await tlsModule : undefined);
  }
}

/** The status and headers of an answer, and its body (undefined when the status has none). */
export class Reply {
  constructor(
    readonly status: number,
    /** Lower-case names; a repeated header's values joined with ", ". */
    private readonly headers: ReadonlyMap<string, string>,
    readonly body: Body | undefined,
  ) {}

  /** A header's value, or null. `name` is lower case. */
  header(name: string): string | null {
    return this.headers.get(name) ?? null;
  }
}

/** The error a read or the reply rejects with once the call was aborted. */
export class AbortedError extends Error {
  readonly code = "ABORT_ERR";
  constructor() {
    super("The request was aborted");
    this.name = "AbortError";
  }
}

/** A compressed body that does not decompress (the zlib error is its cause). */
export class CorruptBodyError extends Error {
  constructor(cause: unknown) {
    super("The compressed body does not decompress", { cause });
    this.name = "CorruptBodyError";
  }
}

/** The server broke HTTP/1.1 (a bad status line, header or chunk), or its head is too large. */
export class ProtocolError extends Error {
  readonly code = "HTTP_PROTOCOL_ERROR";
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

/**
 * The proxy failed the request before the endpoint could answer: unreachable, or a non-2xx
 * answer to CONNECT (`detail` says which; a 407 to an http request in absolute form is the
 * client's to tell).
 */
export class ProxyError extends Error {
  readonly code = "PROXY_ERROR";
  constructor(
    /** The proxy's URL, without credentials. */
    readonly proxy: string,
    readonly detail: string,
    cause?: unknown,
  ) {
    super(`proxy ${proxy}: ${detail}`, cause === undefined ? undefined : { cause });
    this.name = "ProxyError";
  }
}

/** ProxyError's detail when no connection to the proxy could be made. */
export const PROXY_UNREACHABLE = "no connection to the proxy";

/** ProxyError's detail for a proxy's answer. */
export function proxyAnswered(status: number): string {
  return `the proxy answered HTTP ${status}`;
}

function connectionLost(): Error {
  return Object.assign(new Error("The connection closed before the response ended"), {
    code: "ECONNRESET",
  });
}

/**
 * An answer's body as a sequence of reads: each read() gives everything that arrived since the
 * last one (undefined at the end), and rejects when the connection is lost before the end or the
 * call is aborted.
 */
export class Body {
  private ended = false;
  private failure: Error | undefined = undefined;
  /** What arrived while no read waited: handed over whole by the next read. */
  private queue: Uint8Array[] = [];
  private queued = 0;
  private resolveRead: ((chunk: Uint8Array | undefined) => void) | undefined = undefined;
  private rejectRead: ((err: Error) => void) | undefined = undefined;

  /** `pause(true)` stops the source while the queue is full, `pause(false)` lets it go on. */
  constructor(private readonly pause: (paused: boolean) => void) {}

  read(): Promise<Uint8Array | undefined> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.queued > 0) return Promise.resolve(this.take());
    if (this.ended) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      this.resolveRead = resolve;
      this.rejectRead = reject;
    });
  }

  push(piece: Uint8Array): void {
    if (this.ended || this.failure !== undefined || piece.length === 0) return;
    const resolve = this.resolveRead;
    if (resolve !== undefined) {
      this.resolveRead = undefined;
      this.rejectRead = undefined;
      resolve(piece);
      return;
    }
    this.queue.push(piece);
    this.queued += piece.length;
    if (this.queued >= QUEUE_MAX_BYTES) this.pause(true);
  }

  end(): void {
    if (this.ended || this.failure !== undefined) return;
    this.ended = true;
    const resolve = this.resolveRead;
    this.resolveRead = undefined;
    this.rejectRead = undefined;
    resolve?.(this.queued > 0 ? this.take() : undefined);
  }

  fail(err: Error): void {
    if (this.ended || this.failure !== undefined) return;
    this.failure = err;
    this.queue = [];
    this.queued = 0;
    const reject = this.rejectRead;
    this.resolveRead = undefined;
    this.rejectRead = undefined;
    reject?.(err);
  }

  /** Everything queued, as one piece. */
  private take(): Uint8Array {
    const queue = this.queue;
    const piece = one(queue, this.queued);
    if (this.queued >= QUEUE_MAX_BYTES && !this.ended) this.pause(false);
    this.queue = [];
    this.queued = 0;
    return piece;
  }
}

/** Write a request's head and body in one go. */
function send(socket: net.Socket, text: string, payload: Uint8Array | undefined): void {
  socket.cork();
  socket.write(text, "latin1");
  if (payload !== undefined && payload.byteLength > 0) socket.write(payload);
  socket.uncork();
}

/** The first `size` bytes of `pieces`, in one array. */
export function joined(pieces: readonly Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let at = 0;
  for (const piece of pieces) {
    const n = Math.min(piece.length, size - at);
    out.set(n === piece.length ? piece : piece.subarray(0, n), at);
    at += n;
    if (at === size) break;
  }
  return out;
}

/** `pieces` (of `size` bytes in all) as one. */
function one(pieces: readonly Uint8Array[], size: number): Uint8Array {
  return pieces.length === 1 ? (pieces[0] as Uint8Array) : joined(pieces, size);
}

/** A Buffer as a plain Uint8Array over the same bytes (V8 keeps the decoder's code monomorphic). */
function plain(chunk: Buffer): Uint8Array {
  return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

/** How the body ends: after Content-Length bytes, at the last chunk, or when the server closes. */
type Framing = "length" | "chunked" | "close";
/** Where the response is: its head, its body, or done (the connection pooled or closed). */
type Phase = "head" | "body" | "done";
/** Where a chunked body is: a size line, a chunk's data, the CRLF after it, or the trailers. */
type ChunkState = "size" | "data" | "data-end" | "trailers";

/**
 * One HTTP request on one connection. `reply` resolves with the status and headers;
 * `connecting` is true until the request has a connected socket (TCP, then TLS); abort() ends it
 * at any point, closing its connection unless the body was read to the end, and whatever waits
 * on it rejects.
 */
export class Call {
  readonly reply: Promise<Reply>;
  connecting = false;
  /** The connect phase outlasted `connectMs`. */
  connectTimedOut = false;
  /** The request went out on a pooled keep-alive connection (not one opened for it). */
  readonly reused: boolean;
  /** Some byte of an answer arrived. */
  answered = false;
  private connection: Connection | undefined;
  /** The socket to the proxy while it has not answered CONNECT yet. */
  private tunnelSocket: net.Socket | undefined = undefined;
  /** http through a proxy: the connection goes to the proxy, the request in absolute form. */
  private readonly forwarded: boolean;
  private readonly proxyUrl: string;
  private resolveReply!: (reply: Reply | PromiseLike<Reply>) => void;
  private rejectReply!: (err: Error) => void;
  private body: Body | undefined = undefined;
  private decoder: zlib.Gunzip | zlib.Inflate | zlib.BrotliDecompress | undefined = undefined;
  /** Compressed body bytes that came before the decoder (node:zlib loads on first use). */
  private early: Uint8Array[] | undefined = undefined;
  private endedEarly = false;
  /** The connection's error handed to the decoder (any other error of its own is corrupt data). */
  private lost: Error | undefined = undefined;
  private connectTimer: ReturnType<typeof setTimeout> | undefined = undefined;
  private aborted = false;
  private phase: Phase = "head";
  private readonly head: boolean;
  // The response being parsed.
  private pending: Uint8Array | undefined = undefined;
  private framing: Framing = "close";
  private remaining = 0;
  private chunkState: ChunkState = "size";
  private trailerBytes = 0;
  /** A trailer field came (an obsolete fold may follow it). */
  private trailed = false;
  /** The minor HTTP version of the answer (1.0 or 1.1). */
  private minor = 1;
  private reusable = false;
  private keepAliveMs = KEEP_ALIVE_MS;

  /**
   * `headers` are name/value pairs of byte strings (one char per byte); Host, Accept (unless
   * given), Accept-Encoding, Connection and Content-Length are added here. Throws (before
   * anything is sent) on a header that is not a token or holds CR, LF or NUL.
   */
  constructor(
    target: Target,
    method: string,
    headers: readonly (readonly [string, string])[],
    payload: Uint8Array | undefined,
    private readonly connectMs: number,
  ) {
    this.head = method === "HEAD";
    let text = `${method} ${target.path} HTTP/1.1\r\nHost: ${target.host}\r\n`;
    let accept = false;
    for (let i = 0; i < headers.length; i++) {
      const [name, value] = headers[i] as readonly [string, string];
      if (!TOKEN.test(name) || UNSAFE_HEADER_TEXT.test(value)) {
        throw new TypeError(`invalid header ${JSON.stringify(name)}`);
      }
      if (!accept && name.length === 6 && name.toLowerCase() === "accept") accept = true;
      text += `${name}: ${value}\r\n`;
    }
    if (!accept) text += "Accept: */*\r\n";
    text += `Accept-Encoding: ${ACCEPT_ENCODING}\r\nConnection: keep-alive\r\n`;
    const proxy = target.proxy;
    this.forwarded = proxy !== undefined && target.tls === undefined;
    this.proxyUrl = proxy?.url ?? "";
    if (this.forwarded && proxy?.authorization !== undefined) {
      text += `Proxy-Authorization: ${proxy.authorization}\r\n`;
    }
    if (payload !== undefined) text += `Content-Length: ${payload.byteLength}\r\n`;
    text += "\r\n";
    this.reply = new Promise<Reply>((resolve, reject) => {
      this.resolveReply = resolve;
      this.rejectReply = reject;
    });
    if (proxy?.unusable !== undefined) {
      this.reused = false;
      this.phase = "done";
      this.rejectReply(new ProxyError(proxy.url, proxy.unusable));
      return;
    }
    const pooled = Connection.take(target);
    this.reused = pooled !== undefined;
    if (pooled === undefined && proxy !== undefined && !this.forwarded) {
      this.tunnel(target, proxy, text, payload);
      return;
    }
    const connection = pooled ?? this.open(target);
    this.connection = connection;
    connection.start(this);
    send(connection.socket, text, payload);
  }

  /** End the request now, closing its connection (unless its body was read to the end). */
  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.clearConnectTimer();
    if (this.phase === "done") return;
    this.phase = "done";
    const err = new AbortedError();
    this.rejectReply(err);
    this.body?.fail(err);
    this.decoder?.destroy();
    this.connection?.destroy();
    this.connection = undefined;
    this.tunnelSocket?.destroy();
    this.tunnelSocket = undefined;
  }

  private open(target: Target): Connection {
    const proxy = this.forwarded ? target.proxy : undefined;
    const socket = target.tls
      ? target.tls.connect({
          host: target.hostname,
          port: target.port,
          servername: target.servername,
          ALPNProtocols: ["http/1.1"],
        })
      : target.net.connect({
          host: proxy?.hostname ?? target.hostname,
          port: proxy?.port ?? target.port,
        });
    this.connecting = true;
    socket.once(target.tls ? "secureConnect" : "connect", this.onConnect);
    this.connectTimer = setTimeout(this.onConnectTimeout, this.connectMs);
    return new Connection(target.origin, socket);
  }

  /**
   * https through a proxy: CONNECT to the proxy, then TLS with the endpoint inside the tunnel
   * (RFC 9110 §9.3.6), then the request. The connect phase (and its timer) covers all three.
   */
  private tunnel(
    target: Target,
    proxy: ProxyServer,
    text: string,
    payload: Uint8Array | undefined,
  ): void {
    const raw = target.net.connect({ host: proxy.hostname, port: proxy.port });
    raw.setNoDelay(true);
    this.tunnelSocket = raw;
    this.connecting = true;
    this.connectTimer = setTimeout(this.onConnectTimeout, this.connectMs);
    const authority = `${target.hostname.includes(":") ? `[${target.hostname}]` : target.hostname}:${target.port}`;
    let head = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n`;
    if (proxy.authorization !== undefined) {
      head += `Proxy-Authorization: ${proxy.authorization}\r\n`;
    }
    raw.write(`${head}\r\n`, "latin1");
    let reached = false;
    let received: Uint8Array | undefined;
    const settle = (err: Error | undefined): void => {
      raw.off("connect", onReached);
      raw.off("data", onData);
      raw.off("error", onError);
      raw.off("close", onClose);
      this.tunnelSocket = undefined;
      if (err === undefined) return;
      raw.destroy();
      this.broken(err);
    };
    const onReached = (): void => {
      reached = true;
    };
    // Unreachable: the proxy's fault. Reached, then lost before an answer: a connection error.
    const onError = (err: Error): void =>
      settle(reached ? err : new ProxyError(proxy.url, PROXY_UNREACHABLE, err));
    const onClose = (): void =>
      settle(reached ? connectionLost() : new ProxyError(proxy.url, PROXY_UNREACHABLE));
    const onData = (chunk: Buffer): void => {
      const piece = plain(chunk);
      received =
        received === undefined ? piece : joined([received, piece], received.length + piece.length);
      const end = indexOfHeadEnd(received);
      if (end === -1) {
        if (received.length > MAX_HEAD_BYTES) settle(new ProtocolError("response head too large"));
        return;
      }
      const line = Buffer.from(received.buffer, received.byteOffset, end).toString("latin1");
      const match = STATUS_LINE.exec(line.split("\r\n", 1)[0] ?? "");
      if (match === null) {
        settle(new ProtocolError("bad status line"));
        return;
      }
      const status = Number(match[2]);
      if (status < 200 || status > 299) {
        settle(new ProxyError(proxy.url, proxyAnswered(status)));
        return;
      }
      // The endpoint speaks first only after the ClientHello: bytes here are the proxy's error.
      if (end + 4 !== received.length) {
        settle(new ProtocolError("bytes after CONNECT"));
        return;
      }
      settle(undefined);
      const socket = (target.tls as Tls).connect({
        socket: raw,
        servername: target.servername,
        ALPNProtocols: ["http/1.1"],
      });
      socket.once("secureConnect", this.onConnect);
      const connection = new Connection(target.origin, socket);
      this.connection = connection;
      connection.start(this);
      send(socket, text, payload);
    };
    raw.once("connect", onReached);
    raw.on("data", onData);
    raw.on("error", onError);
    raw.on("close", onClose);
  }

  private readonly onConnect = (): void => {
    this.connecting = false;
    this.clearConnectTimer();
  };

  private readonly onConnectTimeout = (): void => {
    this.connectTimer = undefined;
    if (!this.connecting) return;
    this.connectTimedOut = true;
    this.abort();
  };

  private clearConnectTimer(): void {
    if (this.connectTimer !== undefined) clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
  }

  /** Bytes from the connection. */
  receive(data: Uint8Array): void {
    try {
      let rest = data;
      if (this.phase === "head") {
        this.answered = true;
        const afterHead = this.parseHead(data);
        if (afterHead === undefined) return;
        rest = afterHead;
        // A response without a body is complete with its head.
        if ((this.phase as Phase) !== "body") {
          this.complete(rest.length === 0);
          return;
        }
      }
      if (this.phase === "body") this.parseBody(rest);
    } catch (err) {
      this.broken(err as Error);
    }
  }

  /** The connection closed (`err` when it failed): the end of a close-delimited body. */
  closed(err: Error | undefined): void {
    this.connection = undefined;
    if (this.phase === "body" && this.framing === "close" && err === undefined) {
      this.complete(false);
      return;
    }
    if (this.forwarded && this.connecting) {
      this.broken(new ProxyError(this.proxyUrl, PROXY_UNREACHABLE, err));
      return;
    }
    this.broken(err ?? connectionLost());
  }

  private broken(err: Error): void {
    if (this.phase === "done") return;
    const inBody = this.phase === "body";
    this.phase = "done";
    this.clearConnectTimer();
    if (inBody) this.deliverError(err);
    else this.rejectReply(err);
    this.connection?.destroy();
    this.connection = undefined;
  }

  /** Parse (more of) the head; the bytes after it, or undefined while it is incomplete. */
  private parseHead(data: Uint8Array): Uint8Array | undefined {
    let buf = data;
    if (this.pending !== undefined) {
      buf = joined([this.pending, data], this.pending.length + data.length);
      this.pending = undefined;
    }
    for (;;) {
      const end = indexOfHeadEnd(buf);
      if (end === -1) {
        if (buf.length > MAX_HEAD_BYTES) throw new ProtocolError("response head too large");
        this.pending = buf;
        return undefined;
      }
      if (end > MAX_HEAD_BYTES) throw new ProtocolError("response head too large");
      const lines = Buffer.from(buf.buffer, buf.byteOffset, end).toString("latin1").split("\r\n");
      const rest = buf.subarray(end + 4);
      const status = this.parseStatus(lines[0] ?? "");
      if (status >= 100 && status < 200 && status !== 101) {
        parseHeaders(lines); // an interim answer (100 Continue, 103 Early Hints): checked, then
        buf = rest; // the real one follows
        continue;
      }
      this.start(status, parseHeaders(lines));
      return rest;
    }
  }

  private parseStatus(line: string): number {
    const match = STATUS_LINE.exec(line);
    if (match === null) throw new ProtocolError("bad status line");
    this.minor = Number(match[1]);
    return Number(match[2]);
  }

  /** The response's framing, then its reply. */
  private start(status: number, headers: Map<string, string>): void {
    this.connecting = false;
    this.clearConnectTimer();
    const connection = (headers.get("connection") ?? "").toLowerCase();
    this.reusable = this.minor === 1 ? !/(?:^|,)\s*close\s*(?:,|$)/.test(connection) : false;
    const hint = /(?:^|,)\s*timeout=(\d+)/.exec(headers.get("keep-alive") ?? "");
    if (hint !== null) {
      this.keepAliveMs = Math.min(KEEP_ALIVE_MS, Number(hint[1]) * 1000 - KEEP_ALIVE_MARGIN_MS);
      if (this.keepAliveMs <= 0) this.reusable = false;
    }
    const transfer = headers.get("transfer-encoding");
    const length = headers.get("content-length");
    const hasBody = !(this.head || status === 204 || status === 304 || status === 101);
    if (status === 101) this.reusable = false; // no longer HTTP on this connection
    if (transfer !== undefined) {
      // Both is how request smuggling and response splitting begin (RFC 9112 §6.3): refused.
      if (length !== undefined) throw new ProtocolError("Content-Length with Transfer-Encoding");
      // The last coding decides.
      const codings = transfer.toLowerCase().split(",");
      const last = codings[codings.length - 1] as string;
      this.framing = ows(last, 0, last.length) === "chunked" ? "chunked" : "close";
      if (this.framing === "close") this.reusable = false;
    } else if (length !== undefined) {
      // A list of one repeated value is that value (RFC 9110 §8.6); leading zeros are digits.
      const values = new Set(length.split(",").map((value) => ows(value, 0, value.length)));
      const value = values.size === 1 ? [...values][0] : undefined;
      if (value === undefined || !/^0*[0-9]{1,15}$/.test(value)) {
        throw new ProtocolError("bad Content-Length");
      }
      this.framing = "length";
      this.remaining = Number(value); // 0: an empty body, complete with the head
    } else {
      this.framing = "close";
      this.reusable = false;
    }
    if (!hasBody) {
      this.phase = "done";
      this.resolveReply(new Reply(status, headers, undefined));
      return;
    }
    this.phase = "body";
    const body = new Body(this.pauseSource);
    this.body = body;
    const encoding = headers.get("content-encoding")?.toLowerCase();
    if (encoding !== undefined && encoding !== "" && encoding !== "identity") {
      if (zlibLoaded !== undefined) {
        this.attachDecoder(zlibLoaded, encoding);
      } else {
        this.early = [];
        zlibModule ??= import("node:zlib").then((z) => (zlibLoaded = z));
        this.resolveReply(
          zlibModule.then((z) => {
            this.attachDecoder(z, encoding);
            return new Reply(status, headers, body);
          }),
        );
        return;
      }
    }
    this.resolveReply(new Reply(status, headers, body));
  }

  /** Decode the body as it arrives: gzip, deflate or br (other codings are passed on as sent). */
  private attachDecoder(z: typeof zlib, encoding: string): void {
    const body = this.body as Body;
    const early = this.early ?? [];
    this.early = undefined;
    if (this.aborted) return;
    // Sync flushes: an event is handed on as soon as its compressed bytes arrive.
    const flush = { flush: z.constants.Z_SYNC_FLUSH, finishFlush: z.constants.Z_SYNC_FLUSH };
    let decoder: zlib.Gunzip | zlib.Inflate | zlib.BrotliDecompress;
    if (encoding === "gzip" || encoding === "x-gzip") decoder = z.createGunzip(flush);
    else if (encoding === "deflate") decoder = z.createInflate(flush);
    else if (encoding === "br") decoder = z.createBrotliDecompress();
    else {
      for (const piece of early) body.push(piece);
      if (this.endedEarly) body.end();
      return;
    }
    this.decoder = decoder;
    decoder.on("data", (piece: Buffer) => body.push(plain(piece)));
    decoder.on("end", () => body.end());
    decoder.on("error", (err: Error) => {
      body.fail(err === this.lost ? err : new CorruptBodyError(err));
    });
    for (const piece of early) decoder.write(piece);
    if (this.endedEarly) decoder.end();
  }

  private readonly pauseSource = (paused: boolean): void => {
    const socket = this.connection?.socket;
    if (socket === undefined) return;
    if (paused) socket.pause();
    else socket.resume();
  };

  private parseBody(data: Uint8Array): void {
    if (this.framing === "close") {
      this.deliver(data);
      return;
    }
    if (this.framing === "length") {
      const n = Math.min(this.remaining, data.length);
      this.remaining -= n;
      this.deliver(n === data.length ? data : data.subarray(0, n));
      if (this.remaining === 0) {
        this.complete(n === data.length);
      }
      return;
    }
    this.parseChunks(data);
  }

  /** Chunked transfer coding: the data of every chunk in `data`, delivered as one piece. */
  private parseChunks(input: Uint8Array): void {
    let data = input;
    if (this.pending !== undefined) {
      data = joined([this.pending, input], this.pending.length + input.length);
      this.pending = undefined;
    }
    const pieces: Uint8Array[] = [];
    let size = 0;
    let at = 0;
    const length = data.length;
    while (at < length) {
      if (this.chunkState === "data") {
        const n = Math.min(this.remaining, length - at);
        pieces.push(data.subarray(at, at + n));
        size += n;
        at += n;
        this.remaining -= n;
        if (this.remaining === 0) this.chunkState = "data-end";
        continue;
      }
      // A line: the chunk size, the CRLF after a chunk's data, or a trailer.
      const lf = data.indexOf(0x0a, at);
      if (lf === -1) {
        if (length - at > MAX_HEAD_BYTES) throw new ProtocolError("chunk line too long");
        this.pending = data.slice(at);
        break;
      }
      if (lf === at || data[lf - 1] !== 0x0d) throw new ProtocolError("bad chunk framing");
      const lineEnd = lf - 1;
      if (this.chunkState === "data-end") {
        if (lineEnd !== at) throw new ProtocolError("bad chunk framing");
        this.chunkState = "size";
      } else if (this.chunkState === "size") {
        this.remaining = chunkSize(data, at, lineEnd);
        this.chunkState = this.remaining === 0 ? "trailers" : "data";
      } else {
        this.trailerBytes += lf + 1 - at;
        if (this.trailerBytes > MAX_HEAD_BYTES) throw new ProtocolError("trailers too large");
        if (lineEnd === at) {
          // The end of the body. Bytes after it would be an answer nobody asked for.
          if (size > 0) this.deliver(one(pieces, size));
          this.complete(lf + 1 === length);
          return;
        }
        // A trailer field: checked as a header field, then dropped.
        const line = Buffer.from(data.buffer, data.byteOffset + at, lineEnd - at).toString(
          "latin1",
        );
        if (fieldLine(line)[0] === undefined && !this.trailed) {
          throw new ProtocolError("bad trailer line");
        }
        this.trailed = true;
      }
      at = lf + 1;
    }
    if (size > 0) this.deliver(one(pieces, size));
  }

  private deliver(piece: Uint8Array): void {
    if (this.decoder !== undefined) this.decoder.write(piece);
    else if (this.early !== undefined) this.early.push(piece);
    else this.body?.push(piece);
  }

  private deliverError(err: Error): void {
    this.early = undefined;
    if (this.decoder !== undefined) {
      this.lost = err;
      this.decoder.destroy(err);
    } else {
      this.body?.fail(err);
    }
  }

  /** The response is complete: the connection goes back to the pool unless bytes followed it. */
  private complete(clean: boolean): void {
    this.phase = "done";
    if (this.decoder !== undefined) this.decoder.end();
    else if (this.early !== undefined) this.endedEarly = true;
    else this.body?.end();
    if (!clean) this.reusable = false;
    this.release();
  }

  private release(): void {
    const connection = this.connection;
    this.connection = undefined;
    if (connection === undefined) return;
    if (this.reusable && !this.aborted) connection.release(this.keepAliveMs);
    else connection.destroy();
  }
}

/**
 * The size on a chunk's line, data[at, end): 1-12 hex digits after any leading zeros, then
 * optional blanks and a chunk extension (";...", ignored, RFC 9112 §7.1.1, but without control
 * bytes such as a bare CR). Read from the bytes: there is one such line per event.
 */
function chunkSize(data: Uint8Array, at: number, end: number): number {
  let size = 0;
  let i = at;
  while (i < end - 1 && data[i] === 0x30) i++;
  const digits = i;
  for (; i < end && i - digits < 12; i++) {
    const c = data[i] as number;
    const lower = c | 0x20; // a-f for A-F
    const digit =
      c >= 0x30 && c <= 0x39 ? c - 0x30 : lower >= 0x61 && lower <= 0x66 ? lower - 0x57 : -1;
    if (digit === -1) break;
    size = size * 16 + digit;
  }
  if (i === at) throw new ProtocolError("bad chunk size");
  while (i < end && (data[i] === 0x20 || data[i] === 0x09)) i++;
  if (i === end) return size;
  if (data[i] !== 0x3b) throw new ProtocolError("bad chunk size");
  for (i++; i < end; i++) {
    const c = data[i] as number;
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) throw new ProtocolError("bad chunk extension");
  }
  return size;
}

/** The end of a head ("\r\n\r\n"), or -1. */
function indexOfHeadEnd(buf: Uint8Array): number {
  let at = buf.indexOf(0x0d);
  while (at !== -1 && at + 3 < buf.length) {
    if (buf[at + 1] === 0x0a && buf[at + 2] === 0x0d && buf[at + 3] === 0x0a) return at;
    at = buf.indexOf(0x0d, at + 1);
  }
  return -1;
}

/** The fields of a head's lines (the first is the status line). */
function parseHeaders(lines: readonly string[]): Map<string, string> {
  const headers = new Map<string, string>();
  let last: string | undefined;
  for (let i = 1; i < lines.length; i++) {
    const [name, value] = fieldLine(lines[i] as string);
    if (name === undefined) {
      // An obsolete line fold: a user agent reads it as SP (RFC 9112 §5.2). Whitespace before
      // the first field is refused (§2.2).
      if (last === undefined) throw new ProtocolError("bad header line");
      const before = headers.get(last) as string;
      if (value !== "") headers.set(last, before === "" ? value : `${before} ${value}`);
      continue;
    }
    const key = name.toLowerCase();
    const before = headers.get(key);
    headers.set(key, before === undefined ? value : `${before}, ${value}`);
    last = key;
  }
  return headers;
}

/**
 * A field line's name and value (RFC 9112 §5): a token, a colon, the value without the SP and
 * HTAB around it, no control byte but HTAB. A line that starts with SP or HTAB continues the one
 * before it (obs-fold): its name is undefined.
 */
function fieldLine(line: string): [name: string | undefined, value: string] {
  if (FIELD_CTL.test(line)) throw new ProtocolError("bad header line");
  const first = line.charCodeAt(0);
  if (first === 0x20 || first === 0x09) return [undefined, ows(line, 0, line.length)];
  const colon = line.indexOf(":");
  const name = colon > 0 ? line.slice(0, colon) : "";
  if (!TOKEN.test(name)) throw new ProtocolError("bad header line");
  return [name, ows(line, colon + 1, line.length)];
}

/** text[from, to) without the SP and HTAB at either end (only those: RFC 9110 §5.6.3). */
function ows(text: string, from: number, to: number): string {
  let start = from;
  let end = to;
  while (start < end && (text.charCodeAt(start) === 0x20 || text.charCodeAt(start) === 0x09)) {
    start++;
  }
  while (end > start && (text.charCodeAt(end - 1) === 0x20 || text.charCodeAt(end - 1) === 0x09)) {
    end--;
  }
  return text.slice(start, end);
}

/** One keep-alive socket: busy with one Call, or idle in the pool. */
class Connection {
  private call: Call | undefined = undefined;
  private idleTimer: ReturnType<typeof setTimeout> | undefined = undefined;
  private dead = false;

  constructor(
    private readonly origin: string,
    readonly socket: net.Socket,
  ) {
    socket.setNoDelay(true);
    socket.on("data", this.onData);
    socket.on("end", this.onClosed);
    socket.on("error", this.onError);
    socket.on("close", this.onClosed);
  }

  /** An idle connection to `target`'s origin, most recently used first. */
  static take(target: Target): Connection | undefined {
    const list = idle.get(target.origin);
    if (list === undefined) return undefined;
    const connection = list.pop();
    if (list.length === 0) idle.delete(target.origin);
    if (connection === undefined) return undefined;
    connection.leaveIdle();
    return connection;
  }

  start(call: Call): void {
    this.call = call;
  }

  /** Back to the pool, idle for at most `ms`. */
  release(ms: number): void {
    this.call = undefined;
    if (this.dead) return;
    this.socket.unref();
    if (this.socket.isPaused()) this.socket.resume();
    this.idleTimer = setTimeout(this.destroy, ms);
    this.idleTimer.unref?.();
    const list = idle.get(this.origin);
    if (list === undefined) idle.set(this.origin, [this]);
    else list.push(this);
  }

  readonly destroy = (): void => {
    if (this.dead) return;
    this.dead = true;
    this.leaveIdle();
    this.removeFromPool();
    this.socket.destroy();
  };

  private leaveIdle(): void {
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    this.socket.ref();
  }

  private removeFromPool(): void {
    const list = idle.get(this.origin);
    if (list === undefined) return;
    const at = list.indexOf(this);
    if (at !== -1) list.splice(at, 1);
    if (list.length === 0) idle.delete(this.origin);
  }

  private readonly onData = (chunk: Buffer): void => {
    const call = this.call;
    if (call === undefined) {
      this.destroy(); // an idle connection must say nothing
    } else {
      call.receive(plain(chunk));
    }
  };

  /** The server ended the connection ("end"), or it closed ("close"). */
  private readonly onClosed = (): void => this.ended(undefined);
  private readonly onError = (err: Error): void => this.ended(err);

  /** The server closed the connection or it failed: out of the pool, and its call is told. */
  private ended(err: Error | undefined): void {
    const call = this.call;
    this.call = undefined;
    this.destroy();
    call?.closed(err);
  }
}
