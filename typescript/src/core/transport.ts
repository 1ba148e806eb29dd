/**
 * HTTP/1.1 under the client: node:http and node:https with one keep-alive agent per protocol,
 * shared by every BaseLLM in the process (as fetch shares undici's global dispatcher).
 *
 * Not fetch: undici's fetch costs a one-chunk turn about twice what node:http does on loopback
 * (its WHATWG Request, Response, Headers and stream objects, and the listener and finalization
 * registry it sets up for every request's AbortSignal), and it hides the connect phase, which the
 * connect timeout needs (docs/BENCHMARKS.md). Python's counterpart is httpx.
 */
import type * as http from "node:http";
import type { Socket } from "node:net";
import type { Readable } from "node:stream";
import type * as zlib from "node:zlib";

/**
 * An idle pooled connection is closed after this long (or sooner when the server's Keep-Alive
 * header says so), as httpx's keepalive_expiry: a server's own idle timeout must not reset the
 * connection under the next turn.
 */
const KEEP_ALIVE_MS = 5000;

const AGENT_OPTIONS = { keepAlive: true, timeout: KEEP_ALIVE_MS, scheduling: "lifo" } as const;

/** The request function and keep-alive agent of one protocol. */
interface Protocol {
  readonly request: typeof http.request;
  readonly agent: http.Agent;
}

// Loaded on first use, not at import: node:https (with tls and crypto) and node:zlib add several
// milliseconds to the start of a process that may never need them.
let plain: Promise<Protocol> | undefined;
let secure: Promise<Protocol> | undefined;
let zlibModule: Promise<typeof zlib> | undefined;

function protocol(isSecure: boolean): Promise<Protocol> {
  if (isSecure) {
    secure ??= import("node:https").then((m) => ({
      request: m.request,
      agent: new m.Agent(AGENT_OPTIONS),
    }));
    return secure;
  }
  plain ??= import("node:http").then((m) => ({
    request: m.request,
    agent: new m.Agent(AGENT_OPTIONS),
  }));
  return plain;
}

/** Marks a decoder's error that came from the response: the connection, not the data. */
const LOST = Symbol("lost");

/** How much of a body may wait for the consumer before the socket is paused. */
const QUEUE_MAX_BYTES = 256 * 1024;

/** Statuses whose response has no body (as fetch's null-body statuses). */
const NO_BODY_STATUSES = new Set([101, 204, 205, 304]);

/** What fetch and httpx ask for; an answer in one of these is decoded on the fly. */
const ACCEPT_ENCODING = "gzip, deflate";

/** Where requests go: an http(s) URL taken apart once per client, and its protocol. */
export class Target {
  readonly hostname: string;
  readonly port: number;
  /** Path and query. */
  readonly path: string;
  /** The Host header: the host, and the port unless it is the scheme's default. */
  readonly host: string;

  private constructor(
    parsed: URL,
    readonly protocol: Protocol,
  ) {
    // An IPv6 literal comes bracketed ("[::1]"); the socket wants it bare.
    this.hostname = parsed.hostname.replace(/^\[(.*)\]$/, "$1");
    this.port = parsed.port ? Number(parsed.port) : parsed.protocol === "https:" ? 443 : 80;
    this.path = `${parsed.pathname}${parsed.search}`;
    this.host = parsed.host;
  }

  /** Rejects when `url` does not parse. */
  static async of(url: string): Promise<Target> {
    const parsed = new URL(url);
    return new Target(parsed, await protocol(parsed.protocol === "https:"));
  }
}

/** The status and headers of an answer, and its body (undefined when the status has none). */
export class Reply {
  constructor(
    readonly status: number,
    private readonly headers: http.IncomingHttpHeaders,
    readonly body: Body | undefined,
  ) {}

  /** A header's value (a repeated header joined with ", "), or null. `name` is lower case. */
  header(name: string): string | null {
    const value = this.headers[name];
    if (typeof value === "string") return value;
    return Array.isArray(value) ? value.join(", ") : null;
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

/**
 * An answer's body as a sequence of reads: each read() gives everything that arrived since the
 * last one (undefined at the end), and rejects when the connection is lost before the end or the
 * call is aborted.
 */
export class Body {
  private ended = false;
  private failure: Error | undefined = undefined;
  /** What arrived while no read waited: handed over whole by the next read. */
  private queue: Buffer[] = [];
  private queued = 0;
  private resolveRead: ((chunk: Uint8Array | undefined) => void) | undefined = undefined;
  private rejectRead: ((err: Error) => void) | undefined = undefined;

  /** `decoding`: the stream decompresses the response (see decoded()). */
  constructor(
    private readonly stream: Readable,
    private readonly decoding: boolean,
  ) {
    // Flowing, into a queue of our own that the next read takes whole (a paused stream would
    // stop the socket at every 16 KiB). The queue pauses the stream at QUEUE_MAX_BYTES while the
    // consumer is slower than the server.
    stream.on("data", this.onData);
    stream.on("end", this.onEnd);
    stream.on("error", this.onError);
    stream.on("close", this.onClose);
  }

  read(): Promise<Uint8Array | undefined> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.queued > 0) return Promise.resolve(this.take());
    if (this.ended) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      this.resolveRead = resolve;
      this.rejectRead = reject;
    });
  }

  readonly fail = (err: Error): void => {
    if (this.ended || this.failure !== undefined) return;
    this.failure = err;
    this.queue = [];
    this.queued = 0;
    const reject = this.rejectRead;
    this.resolveRead = undefined;
    this.rejectRead = undefined;
    reject?.(err);
  };

  /** Everything queued, as one piece. */
  private take(): Uint8Array {
    const queue = this.queue;
    const chunk = queue.length === 1 ? (queue[0] as Buffer) : Buffer.concat(queue, this.queued);
    this.queue = [];
    this.queued = 0;
    if (!this.ended && this.stream.isPaused()) this.stream.resume();
    return asUint8Array(chunk);
  }

  private readonly onData = (chunk: Buffer): void => {
    const resolve = this.resolveRead;
    if (resolve !== undefined) {
      this.resolveRead = undefined;
      this.rejectRead = undefined;
      resolve(asUint8Array(chunk));
      return;
    }
    this.queue.push(chunk);
    this.queued += chunk.length;
    if (this.queued >= QUEUE_MAX_BYTES) this.stream.pause();
  };

  private readonly onError = (err: Error): void => {
    this.fail(this.decoding && !(LOST in err) ? new CorruptBodyError(err) : err);
  };

  private readonly onEnd = (): void => {
    this.ended = true;
    const resolve = this.resolveRead;
    this.resolveRead = undefined;
    this.rejectRead = undefined;
    resolve?.(this.queued > 0 ? this.take() : undefined);
  };

  /** Closed without an end: the connection was lost (or destroyed by abort()). */
  private readonly onClose = (): void => {
    if (!this.ended) this.fail(connectionLost());
  };
}

/** A Buffer as a plain Uint8Array over the same bytes. */
function asUint8Array(chunk: Buffer): Uint8Array {
  return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

function connectionLost(): Error {
  return Object.assign(new Error("The connection closed before the response ended"), {
    code: "ECONNRESET",
  });
}

/**
 * One HTTP request. `reply` resolves with the status and headers; `connecting` is true until the
 * request has a connected socket (TCP, then TLS); abort() ends it at any point, closing its
 * connection, and whatever waits on it rejects.
 */
export class Call {
  readonly reply: Promise<Reply>;
  connecting = true;
  /** The connect phase outlasted `connectMs`. */
  connectTimedOut = false;
  private readonly request: http.ClientRequest;
  private body: Body | undefined = undefined;
  private connectTimer: ReturnType<typeof setTimeout> | undefined = undefined;
  private aborted = false;

  /**
   * `headers` are name/value pairs of byte strings (one char per byte); Host, Accept (unless
   * given), Accept-Encoding and Content-Length are added here.
   */
  constructor(
    target: Target,
    method: string,
    headers: readonly (readonly [string, string])[],
    payload: Uint8Array | undefined,
    private readonly connectMs: number,
  ) {
    const raw: string[] = ["Host", target.host];
    let accept = false;
    for (let i = 0; i < headers.length; i++) {
      const [name, value] = headers[i] as readonly [string, string];
      if (!accept && name.length === 6 && name.toLowerCase() === "accept") accept = true;
      raw.push(name, value);
    }
    if (!accept) raw.push("Accept", "*/*");
    raw.push("Accept-Encoding", ACCEPT_ENCODING);
    if (payload !== undefined) raw.push("Content-Length", String(payload.byteLength));
    const { request: send, agent } = target.protocol;
    const request = send({
      host: target.hostname,
      port: target.port,
      path: target.path,
      method,
      // An array keeps the order and the bytes as given (Node adds no Host then: it is above).
      headers: raw as unknown as http.OutgoingHttpHeaders,
      agent,
    });
    this.request = request;
    this.reply = new Promise<Reply>((resolve, reject) => {
      request.on("response", (response: http.IncomingMessage) => {
        this.connecting = false;
        resolve(this.open(response));
      });
      request.on("error", (err: Error) => {
        reject(this.aborted ? new AbortedError() : err);
        this.body?.fail(err);
      });
    });
    request.on("socket", this.onSocket);
    // Headers and body in one write; a string body would be written with the headers as UTF-8.
    request.end(payload);
  }

  /** End the request now, closing its connection (unless its body was read to the end). */
  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.clearConnectTimer();
    this.body?.fail(new AbortedError());
    this.request.destroy();
  }

  private open(response: http.IncomingMessage): Reply | Promise<Reply> {
    const status = response.statusCode ?? 0;
    if (NO_BODY_STATUSES.has(status)) {
      response.resume();
      return new Reply(status, response.headers, undefined);
    }
    const encoding = response.headers["content-encoding"]?.trim().toLowerCase();
    if (encoding === undefined || encoding === "" || encoding === "identity") {
      this.body = new Body(response, false);
      return new Reply(status, response.headers, this.body);
    }
    // The body waits, paused, until the decoder is attached.
    zlibModule ??= import("node:zlib");
    return zlibModule.then((z) => {
      const stream = decoded(z, response, encoding);
      this.body = new Body(stream, stream !== response);
      if (this.aborted) this.body.fail(new AbortedError());
      return new Reply(status, response.headers, this.body);
    });
  }

  private readonly onSocket = (socket: Socket): void => {
    // A pooled connection is ready; a new one connects (and, over TLS, shakes hands) first.
    if (!socket.connecting && (this.request.reusedSocket || !("encrypted" in socket))) {
      this.connecting = false;
      return;
    }
    socket.once("encrypted" in socket ? "secureConnect" : "connect", this.onConnect);
    this.connectTimer = setTimeout(this.onConnectTimeout, this.connectMs);
  };

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
}

/** The body decoded as it arrives (Content-Encoding gzip, deflate or br; others as sent). */
function decoded(z: typeof zlib, response: http.IncomingMessage, encoding: string): Readable {
  // Sync flushes: an event is handed on as soon as its compressed bytes arrive.
  const flush = { flush: z.constants.Z_SYNC_FLUSH, finishFlush: z.constants.Z_SYNC_FLUSH };
  let decoder: zlib.Gunzip | zlib.Inflate | zlib.BrotliDecompress;
  if (encoding === "gzip" || encoding === "x-gzip") decoder = z.createGunzip(flush);
  else if (encoding === "deflate") decoder = z.createInflate(flush);
  else if (encoding === "br") decoder = z.createBrotliDecompress();
  else return response;
  // The response's errors reach the decoder marked as a lost connection; its own are corrupt data.
  const lost = (err?: Error): void => {
    decoder.destroy(Object.assign(err ?? connectionLost(), { [LOST]: true }));
  };
  response.on("error", lost);
  response.on("aborted", () => lost());
  response.pipe(decoder);
  return decoder;
}
