// A scripted OpenAI-compatible streaming server on 127.0.0.1, for tests and demos: the mirror of
// python/src/brainline/testing/server.py (docs/testing.md). Raw HTTP/1.1 on node:net, so framing,
// drops and resets are exact; the same script gives the same bytes as the Python server
// (tests/mockserver/test_drift.py). Every request and connection is recorded.

import { createServer, type Server, type Socket } from "node:net";
import {
  type CompiledResponse,
  type CompiledScript,
  compact,
  compileScript,
  modelsResponse,
  notFound,
  pyRepr,
  ScriptError,
  sortRoutes,
} from "./script.js";

export const HOST = "127.0.0.1";
export const CONTROL_PREFIX = "/__mock/";
const MAX_HEAD_BYTES = 64 * 1024;
const MAX_BODY_BYTES = 64 * 1024 * 1024;

/** Python's `time.monotonic()`: seconds. */
function monotonic(): number {
  return performance.now() / 1000;
}

/** One request as the server received it, and what became of its response. */
export class RecordedRequest {
  route: string | null = null;
  status: number | null = null;
  completed = false;
  clientClosed = false;
  closedAt: number | null = null;
  dropped = false;
  finishedAt: number | null = null;

  constructor(
    readonly index: number,
    readonly connection: number,
    readonly method: string,
    readonly path: string,
    readonly query: string,
    /** `[lowercased name, value]` in wire order. */
    readonly headers: ReadonlyArray<readonly [string, string]>,
    readonly body: Uint8Array,
    /** The parsed body (key order kept), or null when it is not JSON. */
    readonly json: unknown,
    /** Monotonic seconds, like every time here. */
    readonly receivedAt: number,
  ) {}

  /** The first value of a header (case-insensitive), or null. */
  header(name: string): string | null {
    const wanted = name.toLowerCase();
    return this.headers.find(([key]) => key === wanted)?.[1] ?? null;
  }

  headerValues(name: string): string[] {
    const wanted = name.toLowerCase();
    return this.headers.filter(([key]) => key === wanted).map(([, value]) => value);
  }

  /** The JSON form of `GET /__mock/requests` (Python's field names). */
  toDict(): Record<string, unknown> {
    return {
      index: this.index,
      connection: this.connection,
      method: this.method,
      path: this.path,
      query: this.query,
      headers: this.headers.map(([n, v]) => [n, v]),
      body: Buffer.from(this.body).toString("utf8"),
      json: this.json,
      received_at: this.receivedAt,
      route: this.route,
      status: this.status,
      completed: this.completed,
      client_closed: this.clientClosed,
      closed_at: this.closedAt,
      dropped: this.dropped,
      finished_at: this.finishedAt,
    };
  }
}

/** One TCP connection: when it opened and closed, who closed it, which requests it carried. */
export class ConnectionRecord {
  closedAt: number | null = null;
  closedBy: "client" | "server" | null = null;
  readonly requests: number[] = [];

  constructor(
    readonly id: number,
    readonly openedAt: number,
  ) {}

  get open(): boolean {
    return this.closedAt === null;
  }

  toDict(): Record<string, unknown> {
    return {
      id: this.id,
      opened_at: this.openedAt,
      closed_at: this.closedAt,
      closed_by: this.closedBy,
      requests: [...this.requests],
    };
  }
}

/** `GET /__mock/requests`: what `snapshot()` returns. */
export interface MockRecords {
  readonly requests: ReadonlyArray<Record<string, unknown>>;
  readonly connections: ReadonlyArray<Record<string, unknown>>;
  readonly connections_open: number;
  readonly connections_total: number;
}

// -- one connection ---------------------------------------------------------------------------------

class BadRequest extends Error {}
class ClientGone extends Error {}

/** Reads the socket in the background so a client close is seen at any moment. */
class Connection {
  buffer: Buffer = Buffer.alloc(0);
  eof = false;
  serverClosing = false;
  current: RecordedRequest | null = null;
  private wake: (() => void) | null = null;
  private readonly goneWaiters: (() => void)[] = [];

  constructor(
    readonly socket: Socket,
    readonly record: ConnectionRecord,
  ) {
    socket.on("data", (chunk: Buffer) => {
      this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
      if (this.buffer.length > MAX_BODY_BYTES + MAX_HEAD_BYTES) this.ended();
      else this.notify();
    });
    socket.on("end", () => this.ended());
    socket.on("close", () => this.ended());
    socket.on("error", () => this.ended());
  }

  private ended(): void {
    if (this.eof) return;
    this.eof = true;
    const now = monotonic();
    if (this.record.closedAt === null) {
      this.record.closedAt = now;
      this.record.closedBy = this.serverClosing ? "server" : "client";
    }
    const request = this.current;
    if (request !== null && !request.completed && !this.serverClosing) {
      request.clientClosed = true;
      request.closedAt = now;
    }
    this.notify();
    for (const resolve of this.goneWaiters.splice(0)) resolve();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  private data(): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
    });
  }

  gone(): Promise<void> {
    if (this.eof) return Promise.resolve();
    return new Promise((resolve) => this.goneWaiters.push(resolve));
  }

  async readUntil(separator: string, limit: number): Promise<Buffer | null> {
    for (;;) {
      const at = this.buffer.indexOf(separator, 0, "latin1");
      if (at >= 0) {
        const out = this.buffer.subarray(0, at + separator.length);
        this.buffer = this.buffer.subarray(at + separator.length);
        return out;
      }
      if (this.buffer.length > limit) throw new BadRequest("request head too large");
      if (this.eof) return null;
      await this.data();
    }
  }

  async readExactly(size: number): Promise<Buffer> {
    while (this.buffer.length < size) {
      if (this.eof) throw new ClientGone();
      await this.data();
    }
    const out = this.buffer.subarray(0, size);
    this.buffer = this.buffer.subarray(size);
    return out;
  }

  /** Wait, but stop at once when the client goes away. */
  async sleep(seconds: number): Promise<void> {
    if (seconds > 0 && !this.eof) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.gone(),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, seconds * 1000);
        }),
      ]);
      clearTimeout(timer);
    }
    if (this.eof) throw new ClientGone();
  }

  async write(data: Uint8Array): Promise<void> {
    if (this.eof || this.socket.destroyed || this.socket.writableEnded) throw new ClientGone();
    const flushed = this.socket.write(data);
    if (!flushed) {
      await new Promise<void>((resolve) => {
        const done = () => {
          this.socket.off("drain", done);
          this.socket.off("close", done);
          resolve();
        };
        this.socket.on("drain", done);
        this.socket.on("close", done);
      });
      if (this.socket.destroyed) throw new ClientGone();
    }
  }

  close(reset = false): void {
    this.serverClosing = true;
    if (this.record.closedAt === null) {
      this.record.closedAt = monotonic();
      this.record.closedBy = "server";
    }
    if (this.socket.destroyed) return;
    if (reset) {
      // SO_LINGER 0, as Python does: an RST instead of a FIN (resetAndDestroy: Node 18.3+)
      if (typeof this.socket.resetAndDestroy === "function") this.socket.resetAndDestroy();
      else this.socket.destroy();
    } else {
      // flush what was written, send the FIN, then release the socket entirely (as Python's close)
      this.socket.end(() => this.socket.destroy());
    }
  }
}

// -- the server -------------------------------------------------------------------------------------

export interface MockServerOptions {
  /** Port on 127.0.0.1; 0 (default) picks a free one. */
  readonly port?: number;
}

/**
 * A scripted OpenAI-compatible server on 127.0.0.1 (the mirror of Python's
 * `brainline.testing.MockServer`). `await server.start()` returns the base URL, ending in `/v1`;
 * `await server.stop()` closes it. The script can be replaced at any time (`setScript`) and routes
 * added (`addRoute`); records stay until `reset()`.
 */
export class MockServer {
  port = 0;
  #script: CompiledScript;
  readonly #requestedPort: number;
  #counters = new Map<string | null, number>();
  #requests: RecordedRequest[] = [];
  #requestSeq = 0;
  #connections: ConnectionRecord[] = [];
  readonly #live = new Map<number, [Connection, Promise<void>]>();
  #server: Server | null = null;

  constructor(script?: unknown, options: MockServerOptions = {}) {
    this.#script = compileScript(script);
    this.#requestedPort = options.port ?? 0;
  }

  // -- lifecycle ----------------------------------------------------------------------------------

  /** `http://127.0.0.1:PORT` (no path). */
  get origin(): string {
    return `http://${HOST}:${this.port}`;
  }

  /** The base URL to hand to a client: `http://127.0.0.1:PORT/v1`. */
  get url(): string {
    return `${this.origin}/v1`;
  }

  /** Start serving; returns the base URL. */
  async start(): Promise<string> {
    if (this.#server !== null) return this.url;
    const server = createServer({ noDelay: true }, (socket) => this.#handle(socket));
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.#requestedPort, HOST, () => {
        server.off("error", reject);
        resolve();
      });
    }).catch((err: unknown) => {
      this.#server = null;
      throw err;
    });
    const address = server.address();
    this.port = typeof address === "object" && address !== null ? address.port : 0;
    return this.url;
  }

  /** Stop listening and close every open connection. */
  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = null;
    if (server === null) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    const tasks = [...this.#live.values()].map(([conn, task]) => {
      conn.close();
      conn.socket.destroy();
      return task;
    });
    await Promise.allSettled(tasks);
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([closed, new Promise((resolve) => (timer = setTimeout(resolve, 2000)))]);
    clearTimeout(timer);
  }

  // -- script and records -------------------------------------------------------------------------

  /** Replace the whole script; response counters restart. Throws ScriptError. */
  setScript(script: unknown): void {
    this.#script = compileScript(script);
    this.#counters = new Map();
  }

  /** Add or replace one route (path prefix -> responses); its counter restarts. */
  addRoute(prefix: string, responses: unknown): void {
    const compiled = compileScript({ routes: { [prefix]: responses } }).routes[0] as [
      string,
      readonly CompiledResponse[],
    ];
    const routes = this.#script.routes.filter((r) => r[0] !== prefix).map((r) => [r[0], r[1]]);
    routes.push(compiled);
    this.#script = {
      ...this.#script,
      routes: sortRoutes(routes as [string, readonly CompiledResponse[]][]),
    };
    this.#counters.delete(prefix);
  }

  /** Forget recorded requests and closed connections; response counters restart. */
  reset(): void {
    this.#requests = [];
    this.#connections = this.#connections.filter((c) => c.open);
    this.#counters = new Map();
  }

  /** Every request received so far, in arrival order. */
  get requests(): RecordedRequest[] {
    return [...this.#requests];
  }

  /** The requests whose path starts with `prefix`. */
  requestsUnder(prefix: string): RecordedRequest[] {
    return this.#requests.filter((r) => r.path.startsWith(prefix));
  }

  get lastRequest(): RecordedRequest | null {
    return this.#requests.at(-1) ?? null;
  }

  get connections(): ConnectionRecord[] {
    return [...this.#connections];
  }

  /** Connections open right now. */
  get connectionsOpen(): number {
    return this.#connections.filter((c) => c.open).length;
  }

  /** Connections opened since the start (or the last reset, plus those still open). */
  get connectionsTotal(): number {
    return this.#connections.length;
  }

  /** Poll `predicate` until it holds or `timeout` seconds pass. */
  async waitFor(predicate: () => boolean, timeout = 2): Promise<boolean> {
    const deadline = monotonic() + timeout;
    for (;;) {
      if (predicate()) return true;
      if (monotonic() >= deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  /** Requests (those under `prefix`) and connections as JSON data: `GET /__mock/requests`. */
  snapshot(prefix = ""): MockRecords {
    return {
      requests: this.#requests.filter((r) => r.path.startsWith(prefix)).map((r) => r.toDict()),
      connections: this.#connections.map((c) => c.toDict()),
      connections_open: this.connectionsOpen,
      connections_total: this.#connections.length,
    };
  }

  // -- serving ------------------------------------------------------------------------------------

  #pick(method: string, path: string): [string | null, CompiledResponse | null] {
    const script = this.#script;
    const route = script.routes.find((r) => path.startsWith(r[0]));
    if (
      method === "GET" &&
      path.endsWith("/models") &&
      (route === undefined || route[0] !== path)
    ) {
      return [null, null];
    }
    let key: string | null;
    let responses: readonly CompiledResponse[];
    if (route !== undefined) [key, responses] = route;
    else if (script.responses.length > 0) [key, responses] = [null, script.responses];
    else return [null, notFound(method, path)];
    const count = this.#counters.get(key) ?? 0;
    this.#counters.set(key, count + 1);
    return [key, responses[Math.min(count, responses.length - 1)] as CompiledResponse];
  }

  #handle(socket: Socket): void {
    socket.setNoDelay(true);
    const last = this.#connections.at(-1);
    const record = new ConnectionRecord(
      last === undefined ? this.#connections.length + 1 : last.id + 1,
      monotonic(),
    );
    this.#connections.push(record);
    const conn = new Connection(socket, record);
    const task = this.#serveConnection(conn)
      .catch(async (err: unknown) => {
        if (err instanceof BadRequest) {
          const payload = { error: { message: err.message } };
          await conn.write(simpleResponse(400, payload)).catch(() => undefined);
        }
        // anything else: never let one bad connection take the server down
      })
      .finally(() => {
        conn.close();
        this.#live.delete(record.id);
      });
    this.#live.set(record.id, [conn, task]);
  }

  async #serveConnection(conn: Connection): Promise<void> {
    for (;;) {
      let head = await conn.readUntil("\r\n\r\n", MAX_HEAD_BYTES);
      if (head === null) return;
      let start = 0;
      while (start < head.length && (head[start] === 13 || head[start] === 10)) start++;
      head = head.subarray(start);
      if (/^[ \t\n\r\v\f]*$/.test(head.toString("latin1"))) continue;
      const [method, target, headers] = parseHead(head);
      const body = await readBody(conn, headers);
      const [path, query] = splitTarget(target);
      const parsed = parseJson(body);
      const clientClose = headers.some(
        ([n, v]) => n === "connection" && v.toLowerCase().includes("close"),
      );
      if (path.startsWith(CONTROL_PREFIX)) {
        await conn.write(this.#control(method, path, query, body));
        if (clientClose) return;
        continue;
      }
      this.#requestSeq += 1;
      const request = new RecordedRequest(
        this.#requestSeq,
        conn.record.id,
        method,
        path,
        query,
        headers,
        Uint8Array.from(body),
        parsed,
        monotonic(),
      );
      this.#requests.push(request);
      conn.record.requests.push(request.index);
      conn.current = request;
      const [route, picked] = this.#pick(method, path);
      request.route = route;
      const response = picked ?? modelsResponse(this.#script.models);
      request.status = response.status;
      const keep = await this.#respond(conn, request, response);
      conn.current = null;
      if (!keep || clientClose) return;
    }
  }

  /** Write one response; returns whether the connection may carry another request. */
  async #respond(
    conn: Connection,
    request: RecordedRequest,
    response: CompiledResponse,
  ): Promise<boolean> {
    await conn.sleep(response.delayBeforeHeaders);
    if (response.dropBeforeHeaders) {
      // the request was read; not one byte of an answer
      request.dropped = true;
      request.finishedAt = monotonic();
      conn.close(response.dropReset);
      return false;
    }
    const pieces = response.pieces;
    const keepAlive = response.keepAlive && response.transfer !== "close";
    const lines = [`HTTP/1.1 ${response.status} ${reason(response.status)}`];
    for (const [name, value] of response.headers) lines.push(`${name}: ${value}`);
    const names = new Set(response.headers.map(([name]) => name.toLowerCase()));
    if (response.transfer === "chunked" && !names.has("transfer-encoding")) {
      lines.push("transfer-encoding: chunked");
    } else if (response.transfer === "content-length" && !names.has("content-length")) {
      lines.push(`content-length: ${pieces.reduce((n, p) => n + p.length, 0)}`);
    }
    if (!keepAlive && !names.has("connection")) lines.push("connection: close");
    await conn.write(latin1(`${lines.join("\r\n")}\r\n\r\n`));
    const chunked = response.transfer === "chunked";
    for (let count = 0; count <= pieces.length; count++) {
      if (response.dropAfter === count) {
        if (count > 0) await conn.sleep(response.delay); // delay_ms also precedes the drop
        request.dropped = true;
        request.finishedAt = monotonic();
        conn.close(response.dropReset);
        return false;
      }
      if (response.stall === count) {
        await conn.gone();
        throw new ClientGone();
      }
      if (count === pieces.length) break;
      if (count > 0) await conn.sleep(response.delay);
      const piece = pieces[count] as Uint8Array;
      await conn.write(
        chunked
          ? Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, CRLF])
          : piece,
      );
    }
    if (chunked) await conn.write(LAST_CHUNK);
    request.completed = true;
    request.finishedAt = monotonic();
    return keepAlive;
  }

  /** `/__mock/...`: read the records or change the script over HTTP (from any language). */
  #control(method: string, path: string, query: string, body: Buffer): Uint8Array {
    const name = path.slice(CONTROL_PREFIX.length).replace(/^\/+|\/+$/g, "");
    try {
      if (method === "GET" && name === "requests") {
        const prefix = new URLSearchParams(query).get("prefix") ?? "";
        return simpleResponse(200, this.snapshot(prefix));
      }
      if (method === "POST" && name === "script") {
        this.setScript(body.length > 0 ? JSON.parse(body.toString("utf8")) : null);
        return simpleResponse(200, { ok: true });
      }
      if (method === "POST" && name === "route") {
        const payload: unknown = body.length > 0 ? JSON.parse(body.toString("utf8")) : null;
        if (
          typeof payload !== "object" ||
          payload === null ||
          Array.isArray(payload) ||
          typeof (payload as Record<string, unknown>).prefix !== "string"
        ) {
          throw new ScriptError('a route is {"prefix": "/path/", "responses": ...}');
        }
        const p = payload as Record<string, unknown>;
        this.addRoute(p.prefix as string, Object.hasOwn(p, "responses") ? p.responses : null);
        return simpleResponse(200, { ok: true });
      }
      if (method === "POST" && name === "reset") {
        this.reset();
        return simpleResponse(200, { ok: true });
      }
    } catch (err) {
      if (!(err instanceof ScriptError || err instanceof SyntaxError)) throw err;
      return simpleResponse(400, { error: { message: err.message } });
    }
    return simpleResponse(404, { error: { message: `no control endpoint ${path}` } });
  }
}

// -- HTTP helpers -----------------------------------------------------------------------------------

const CRLF = Buffer.from("\r\n");
const LAST_CHUNK = Buffer.from("0\r\n\r\n");

// Python's http.HTTPStatus phrases (3.11), so both servers send the same status line.
const REASONS: Readonly<Record<number, string>> = {
  100: "Continue",
  101: "Switching Protocols",
  102: "Processing",
  103: "Early Hints",
  200: "OK",
  201: "Created",
  202: "Accepted",
  203: "Non-Authoritative Information",
  204: "No Content",
  205: "Reset Content",
  206: "Partial Content",
  207: "Multi-Status",
  208: "Already Reported",
  226: "IM Used",
  300: "Multiple Choices",
  301: "Moved Permanently",
  302: "Found",
  303: "See Other",
  304: "Not Modified",
  305: "Use Proxy",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  402: "Payment Required",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  406: "Not Acceptable",
  407: "Proxy Authentication Required",
  408: "Request Timeout",
  409: "Conflict",
  410: "Gone",
  411: "Length Required",
  412: "Precondition Failed",
  413: "Request Entity Too Large",
  414: "Request-URI Too Long",
  415: "Unsupported Media Type",
  416: "Requested Range Not Satisfiable",
  417: "Expectation Failed",
  418: "I'm a Teapot",
  421: "Misdirected Request",
  422: "Unprocessable Entity",
  423: "Locked",
  424: "Failed Dependency",
  425: "Too Early",
  426: "Upgrade Required",
  428: "Precondition Required",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  451: "Unavailable For Legal Reasons",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
  506: "Variant Also Negotiates",
  507: "Insufficient Storage",
  508: "Loop Detected",
  510: "Not Extended",
  511: "Network Authentication Required",
};

export function reason(status: number): string {
  return REASONS[status] ?? "Unknown";
}

/** The head as latin-1 bytes; like Python's `.encode("latin-1")`, a wider character is an error. */
function latin1(text: string): Buffer {
  if ([...text].some((c) => (c.codePointAt(0) as number) > 0xff))
    throw new Error("the response head is not latin-1");
  return Buffer.from(text, "latin1");
}

// Python's str.strip() whitespace, within latin-1
const PY_SPACE = " \t\n\r\v\f\x1c\x1d\x1e\x1f\x85\xa0";

function pyStrip(text: string, chars = PY_SPACE): string {
  let start = 0;
  let end = text.length;
  while (start < end && chars.includes(text[start] as string)) start++;
  while (end > start && chars.includes(text[end - 1] as string)) end--;
  return text.slice(start, end);
}

function parseHead(head: Buffer): [string, string, [string, string][]] {
  const lines = head.toString("latin1").split("\r\n");
  const first = lines[0] as string;
  const parts = first.split(" ");
  if (parts.length !== 3 || !(parts[2] as string).startsWith("HTTP/1.")) {
    throw new BadRequest(`bad request line ${pyRepr(first)}`);
  }
  const headers: [string, string][] = [];
  for (const line of lines.slice(1)) {
    if (!line) continue;
    const sep = line.indexOf(":");
    const name = sep < 0 ? line : line.slice(0, sep);
    if (sep < 0 || !name || name !== pyStrip(name)) {
      throw new BadRequest(`bad header line ${pyRepr(line)}`);
    }
    headers.push([name.toLowerCase(), pyStrip(line.slice(sep + 1), " \t")]);
  }
  return [parts[0] as string, parts[1] as string, headers];
}

/** Python's int(text, base) for the digits a request may carry. */
function pyInt(text: string, base: 10 | 16): number | null {
  const digits = base === 16 ? "[0-9a-fA-F]" : "[0-9]";
  const prefix = base === 16 ? "(?:0[xX]_?)?" : "";
  const re = new RegExp(`^([+-]?)${prefix}(${digits}+(?:_${digits}+)*)$`);
  const m = re.exec(pyStrip(text));
  if (m === null) return null;
  const value = Number.parseInt((m[2] as string).replaceAll("_", ""), base);
  return m[1] === "-" ? -value : value;
}

async function readBody(conn: Connection, headers: readonly [string, string][]): Promise<Buffer> {
  const values = new Map(headers); // the last value of a repeated header wins, as in Python
  if ((values.get("expect") ?? "").toLowerCase() === "100-continue") {
    await conn.write(Buffer.from("HTTP/1.1 100 Continue\r\n\r\n"));
  }
  if ((values.get("transfer-encoding") ?? "").toLowerCase().includes("chunked")) {
    const body: Buffer[] = [];
    let total = 0;
    for (;;) {
      const sizeLine = await conn.readUntil("\r\n", 4096);
      if (sizeLine === null) throw new ClientGone();
      const size = pyInt(sizeLine.toString("latin1").split(";")[0] as string, 16);
      if (size === null || size < 0) throw new BadRequest("bad chunk size");
      if (size === 0) {
        for (;;) {
          // trailers, up to the blank line
          const trailer = await conn.readUntil("\r\n", MAX_HEAD_BYTES);
          if (trailer === null) throw new ClientGone();
          if (trailer.length === 2) return Buffer.concat(body);
        }
      }
      if (total + size > MAX_BODY_BYTES) throw new BadRequest("request body too large");
      body.push(await conn.readExactly(size));
      total += size;
      await conn.readExactly(2);
    }
  }
  const length = values.get("content-length");
  if (length === undefined) return Buffer.alloc(0);
  const size = pyInt(length, 10);
  if (size === null || size < 0 || size > MAX_BODY_BYTES) {
    throw new BadRequest("bad content-length");
  }
  return conn.readExactly(size);
}

/** `urllib.parse.urlsplit(target)`: path (default "/") and query. */
function splitTarget(target: string): [string, string] {
  let rest = target;
  const hash = rest.indexOf("#");
  if (hash >= 0) rest = rest.slice(0, hash);
  const q = rest.indexOf("?");
  const query = q >= 0 ? rest.slice(q + 1) : "";
  if (q >= 0) rest = rest.slice(0, q);
  const scheme = /^[a-zA-Z][a-zA-Z0-9+.-]*:/.exec(rest);
  if (scheme !== null) rest = rest.slice(scheme[0].length);
  if (rest.startsWith("//")) {
    const slash = rest.indexOf("/", 2);
    rest = slash >= 0 ? rest.slice(slash) : "";
  }
  return [rest || "/", query];
}

const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true });

function parseJson(body: Buffer): unknown {
  if (body.length === 0) return null;
  try {
    return JSON.parse(STRICT_UTF8.decode(body));
  } catch {
    return null;
  }
}

function simpleResponse(status: number, payload: unknown): Uint8Array {
  const body = Buffer.from(compact(payload), "utf8");
  const head =
    `HTTP/1.1 ${status} ${reason(status)}\r\ncontent-type: application/json\r\n` +
    `content-length: ${body.length}\r\n\r\n`;
  return Buffer.concat([Buffer.from(head, "latin1"), body]);
}
