/**
 * HTTP through a WHATWG fetch function: the `fetch` option (the platform's fetch, undici's, a
 * wrapper that adds a proxy or tracing), and the transport used without it where node:net cannot
 * be loaded (browsers, Workers without nodejs_compat). It has the socket transport's surface
 * (transport.ts: a target whose call() gives a request with `reply`, `abort()` and the same
 * flags, answering with the same Reply and Body), so client.ts keeps one path for both.
 *
 * What fetch cannot say, and what follows (docs/runtime.md, "The fetch transport"): it hides the
 * connect phase, so a slow connect is a slow answer (read_timeout, not connect_timeout, and no
 * 10 s connect cap of brainline's own); and it does not say whether a request went out on a
 * pooled connection, so a connection error is retried only when the error names a failed connect
 * (nothing was sent), never otherwise. Redirects are not followed (`redirect: "manual"`: a 3xx is
 * an http_status error; a browser hides it as status 0). The fetch function decodes compressed
 * answers itself.
 */
import { AbortedError, Body, CorruptBodyError, Reply, Target } from "./transport.js";

/** A WHATWG-compatible fetch function. */
export type FetchFunction = typeof globalThis.fetch;

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const UNSAFE_HEADER_TEXT = /[\r\n\0]/;
/**
 * Error codes (of the error fetch rejects with, or of its cause) that mean the connect itself
 * failed, so nothing was sent: undici's (Node's fetch) socket and DNS errors, Bun's name.
 */
const CONNECT_FAILED = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EADDRNOTAVAIL",
  "ConnectionRefused",
]);
/** undici's own connect timeout (10 s by default, as CONNECT_TIMEOUT_CAP). */
const CONNECT_TIMED_OUT = "UND_ERR_CONNECT_TIMEOUT";
/** zlib's codes: undici's decoder failing on a corrupt compressed body. */
const CORRUPT = /^(Z_|ERR_ZLIB|ERR__ERROR_FORMAT_PADDING_1|ERR_PADDING)/;

/** Where requests go through a fetch function. */
export class FetchTarget {
  private constructor(
    private readonly url: string,
    private readonly fetchFn: FetchFunction,
  ) {}

  /** Rejects when `url` does not parse, as Target.of. */
  static async of(url: string, fetchFn: FetchFunction): Promise<FetchTarget> {
    new URL(url);
    return new FetchTarget(url, fetchFn);
  }

  /** A request (`connectMs` is unused: fetch hides the connect phase). */
  call(
    method: string,
    headers: readonly (readonly [string, string])[],
    payload: Uint8Array | undefined,
    _connectMs: number,
  ): FetchCall {
    return new FetchCall(this.fetchFn, this.url, method, headers, payload);
  }

  /** The fetch function owns its connections: nothing to close here. */
  closeIdle(): void {}
}

/** Either transport's target, and either transport's request. */
export type AnyTarget = Target | FetchTarget;
export type AnyCall = ReturnType<AnyTarget["call"]>;

/**
 * The target for `url`: through `fetchFn` when given; else the socket transport, unless its
 * modules cannot be loaded (`open` rejects although the URL parses), where `globalThis.fetch`
 * takes over. `open` is Target.of (a test passes one that fails as a missing node:net does).
 */
export async function targetOf(
  url: string,
  fetchFn: FetchFunction | null | undefined,
  open: (url: string) => Promise<Target> = Target.of,
): Promise<AnyTarget> {
  if (fetchFn != null) return FetchTarget.of(url, fetchFn);
  try {
    return await open(url);
  } catch (err) {
    new URL(url); // a URL that does not parse fails as it would with sockets
    const platform = (globalThis as { fetch?: FetchFunction }).fetch;
    if (typeof platform !== "function") throw err;
    return FetchTarget.of(url, platform);
  }
}

/**
 * One request through fetch, with the socket Call's surface: `reply` resolves with the status
 * and headers, the body is read as it arrives (each read gives what came since the last), and
 * abort() ends it at any point (the AbortSignal makes fetch close the connection) unless the
 * body was read to the end.
 */
export class FetchCall {
  readonly reply: Promise<Reply>;
  /** Set only once the request failed and the error names a failed connect (nothing was sent). */
  connecting = false;
  /** The fetch function's own connect timeout ran out. */
  connectTimedOut = false;
  /** Unknown through fetch, so never claimed: a lost request is not retried at once. */
  readonly reused = false;
  /** The answer's head arrived. */
  answered = false;
  private readonly controller = new AbortController();
  private resolveReply!: (reply: Reply) => void;
  private rejectReply!: (err: Error) => void;
  private body: Body | undefined = undefined;
  private reader: ReadableStreamDefaultReader<Uint8Array> | undefined = undefined;
  private aborted = false;
  private done = false;
  private paused = false;
  private resume: (() => void) | undefined = undefined;

  /** Throws (before anything is sent) on a header that is not a token or holds CR, LF or NUL. */
  constructor(
    fetchFn: FetchFunction,
    url: string,
    method: string,
    headers: readonly (readonly [string, string])[],
    payload: Uint8Array | undefined,
  ) {
    for (const [name, value] of headers) {
      if (!TOKEN.test(name) || UNSAFE_HEADER_TEXT.test(value)) {
        throw new TypeError(`invalid header ${JSON.stringify(name)}`);
      }
    }
    this.reply = new Promise<Reply>((resolve, reject) => {
      this.resolveReply = resolve;
      this.rejectReply = reject;
    });
    const init: RequestInit = {
      method,
      headers: headers as [string, string][],
      redirect: "manual",
      signal: this.controller.signal,
    };
    // A Uint8Array is a BufferSource; TypeScript 5.7+ types only ArrayBuffer-backed ones as such.
    if (payload !== undefined) init.body = payload as Uint8Array<ArrayBuffer>;
    this.send(fetchFn, url, init).then(this.resolveReply, this.rejectReply);
  }

  /** End the request now, closing its connection (unless its body was read to the end). */
  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    if (this.done) return;
    const err = new AbortedError();
    this.rejectReply(err);
    this.body?.fail(err);
    this.controller.abort();
    this.reader?.cancel().catch(() => {});
  }

  private async send(fetchFn: FetchFunction, url: string, init: RequestInit): Promise<Reply> {
    let response: Response;
    try {
      response = await fetchFn(url, init);
    } catch (err) {
      if (this.aborted) throw new AbortedError();
      const code = errorCode(err);
      if (code === CONNECT_TIMED_OUT) this.connectTimedOut = true;
      else if (code !== undefined && CONNECT_FAILED.has(code)) this.connecting = true;
      throw err;
    }
    if (this.aborted) {
      response.body?.cancel().catch(() => {});
      throw new AbortedError();
    }
    this.answered = true;
    const headers = new Map<string, string>();
    response.headers.forEach((value, name) => {
      const before = headers.get(name);
      headers.set(name, before === undefined ? value : `${before}, ${value}`);
    });
    const stream = response.body;
    if (stream === null) {
      this.done = true;
      return new Reply(response.status, headers, undefined);
    }
    const body = new Body(this.pauseSource);
    this.body = body;
    this.reader = stream.getReader();
    this.pump(this.reader, body);
    return new Reply(response.status, headers, body);
  }

  /** The stream's chunks into the Body, as they arrive; paused while the Body's queue is full. */
  private async pump(reader: ReadableStreamDefaultReader<Uint8Array>, body: Body): Promise<void> {
    try {
      for (;;) {
        if (this.paused) await new Promise<void>((resolve) => (this.resume = resolve));
        const { done, value } = await reader.read();
        if (done) {
          this.done = true;
          body.end();
          return;
        }
        body.push(value);
      }
    } catch (err) {
      if (this.aborted) return; // the body failed with AbortedError already
      const code = errorCode(err);
      body.fail(
        code !== undefined && CORRUPT.test(code) ? new CorruptBodyError(err) : asError(err),
      );
    }
  }

  private readonly pauseSource = (paused: boolean): void => {
    this.paused = paused;
    if (paused) return;
    const resume = this.resume;
    this.resume = undefined;
    resume?.();
  };
}

/** The code of an error, or of the error (or errors) it was caused by. */
function errorCode(err: unknown): string | undefined {
  for (let at: unknown = err, depth = 0; at != null && depth < 4; depth++) {
    const { code, errors, cause } = at as { code?: unknown; errors?: unknown; cause?: unknown };
    if (typeof code === "string") return code;
    if (Array.isArray(errors) && errors.length > 0) at = errors[0];
    else at = cause;
  }
  return undefined;
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
