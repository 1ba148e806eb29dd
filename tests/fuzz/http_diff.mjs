// Differential fuzz of the TypeScript HTTP/1.1 transport (typescript/src/core/transport.ts) against
// llhttp, the parser node:http uses (`nox -s fuzz`; a fixed-seed sample runs in the suite through
// tests/reliability/test_http_diff.py).
//
// usage: node tests/fuzz/http_diff.mjs [--seed N] [--cases N] [--seconds S] [--only I]
//                                      [--workers N] [--json OUT] [--verbose] [--transport FILE]
//        node tests/fuzz/http_diff.mjs --bytes '"HTTP/1.1 200 OK\r\n..."' [--method GET] --verbose
// Defaults: a random seed (printed), 20,000 cases or 60 s, whichever ends first. --transport
// runs another version of transport.ts (e.g. `git show HEAD~3:typescript/src/core/transport.ts`).
//
// Each case is one generated HTTP/1.1 response (well-formed or broken on purpose, in one of the
// CLASSES below), cut at random points into socket writes. A raw TCP server on 127.0.0.1 writes
// those bytes, then closes, to (a) a brainline Call (transport.ts bundled by esbuild) and (b) an
// http.request. Both must give the same status, headers (lower-case names, a repeated header's
// values joined with ", ", as Reply exposes them) and body bytes, or both must fail. Anything else
// is a disagreement, unless one of the EXCEPTIONS below (each naming its RFC section) allows it.
// Cases come from --seed and their index alone: `--seed S --only I` replays one.
import { randomInt } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
/** transport.ts's MAX_HEAD_BYTES and Node's default --max-http-header-size. */
const HEAD_LIMIT = 16 * 1024;
/** A side that has not settled this long after the server closed is a hang. */
const HANG_MS = 5000;

// ---------------------------------------------------------------------------------------------
// Seeded randomness: a case is a function of (seed, index).

function mulberry32(state) {
  let a = state >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Rng {
  constructor(seed, index) {
    this.next = mulberry32(
      Math.imul(seed ^ 0x5bd1e995, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b),
    );
  }
  int(n) {
    return Math.floor(this.next() * n);
  }
  range(lo, hi) {
    return lo + this.int(hi - lo + 1);
  }
  chance(p) {
    return this.next() < p;
  }
  pick(items) {
    return items[this.int(items.length)];
  }
  /** `n` bytes (as a latin1 string) drawn from `alphabet`, or any byte. */
  bytes(n, alphabet) {
    let out = "";
    for (let i = 0; i < n; i++) {
      out += alphabet ? alphabet[this.int(alphabet.length)] : String.fromCharCode(this.int(256));
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// The generator. Responses are latin1 strings (one char per byte) until they are written.

const TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const VCHAR = Array.from({ length: 94 }, (_, i) => String.fromCharCode(0x21 + i)).join("");
const CTL = `${Array.from({ length: 32 }, (_, i) => String.fromCharCode(i)).join("")}\x7f`;
const NOT_TCHAR = `"(),/:;<=>?@[\\]{} \t\x00\x01\x0b\x7f\x80\xe9\xff`;
// biome-ignore format: a table
const NAMES = [
  "X-A", "x-b", "Server", "Date", "Content-Type", "Cache-Control", "Set-Cookie", "Via", "Link",
];

function headerName(rng) {
  return rng.chance(0.7) ? rng.pick(NAMES) : rng.bytes(rng.range(1, 12), TCHAR);
}

/** A valid field value: VCHAR and obs-text with inner SP/HTAB. */
function headerValue(rng) {
  const n = rng.range(0, 24);
  let value = "";
  for (let i = 0; i < n; i++) {
    const r = rng.next();
    if (r < 0.8) value += rng.pick(VCHAR);
    else if (r < 0.9) value += rng.pick([" ", "\t"]);
    else value += String.fromCharCode(rng.range(0x80, 0xff));
  }
  return value.replace(/^[ \t]+|[ \t]+$/g, "");
}

function body(rng) {
  const size = rng.pick([
    0,
    1,
    2,
    3,
    7,
    16,
    64,
    200,
    1000,
    5000,
    rng.range(0, 300),
    rng.range(0, 3000),
  ]);
  if (rng.chance(0.3)) return rng.bytes(size); // any bytes
  // Text that looks like framing: CRLFs, chunk lines, a second response.
  let out = "";
  while (out.length < size) {
    out += rng.pick([
      "data: x\n\n",
      "\r\n",
      "0\r\n\r\n",
      "HTTP/1.1 200 OK\r\n",
      rng.bytes(8, VCHAR),
    ]);
  }
  return out.slice(0, size);
}

function hex(rng, n) {
  const text = n.toString(16);
  const cased = rng.chance(0.5) ? text.toUpperCase() : text;
  return rng.chance(0.1) ? "0".repeat(rng.range(1, 4)) + cased : cased;
}

/** A valid chunk extension, with optional BWS around ";" and "=". */
function chunkExt(rng) {
  let ext = "";
  for (let i = rng.range(1, 2); i > 0; i--) {
    const bws = () => (rng.chance(0.2) ? rng.pick([" ", "\t", "  "]) : "");
    ext += `${bws()};${bws()}${rng.bytes(rng.range(1, 6), TCHAR)}`;
    if (rng.chance(0.6)) {
      const value = rng.chance(0.6)
        ? rng.bytes(rng.range(1, 6), TCHAR)
        : `"${rng.bytes(rng.range(0, 6), "ab ;=\t")}"`;
      ext += `${bws()}=${bws()}${value}`;
    }
  }
  return ext;
}

/** `data` as chunks, each `[size line, data]`, the last chunk and trailers separate. */
function chunks(rng, data, extChance) {
  const out = [];
  let at = 0;
  while (at < data.length) {
    const n = Math.min(data.length - at, rng.pick([1, 2, 5, 16, 100, rng.range(1, 4000)]));
    out.push([hex(rng, n) + (rng.chance(extChance) ? chunkExt(rng) : ""), data.slice(at, at + n)]);
    at += n;
  }
  return out;
}

function encodeChunks(list, last, trailers) {
  let out = "";
  for (const [line, data] of list) out += `${line}\r\n${data}\r\n`;
  return `${out}${last}\r\n${trailers.map((t) => `${t}\r\n`).join("")}\r\n`;
}

/** A response as parts a class can change before they are joined. */
function base(rng) {
  const headers = [];
  for (let i = rng.range(0, 4); i > 0; i--) headers.push(`${headerName(rng)}: ${headerValue(rng)}`);
  return {
    interim: [],
    status: "HTTP/1.1 200 OK",
    headers,
    framing: rng.pick(["length", "length", "chunked", "chunked", "close"]),
    body: body(rng),
    chunkExtChance: 0.05,
    last: "0",
    trailers: [],
    after: "",
  };
}

function render(r) {
  const headers = [...r.headers];
  let payload = r.body;
  if (r.framing === "length") headers.push(`Content-Length: ${r.body.length}`);
  if (r.framing === "chunked") {
    headers.push("Transfer-Encoding: chunked");
    payload = encodeChunks(chunks(r.rng, r.body, r.chunkExtChance), r.last, r.trailers);
  }
  if (r.framing === "raw") payload = r.raw; // a class wrote the framing itself
  const head = [r.status, ...headers].map((line) => `${line}\r\n`).join("");
  return `${r.interim.join("")}${head}\r\n${payload}${r.after}`;
}

// biome-ignore format: a table
const STATUS_LINES = [
  "HTTP/1.1 200 OK", "HTTP/1.1 200", "HTTP/1.1 200 ", "HTTP/1.0 200 OK", "HTTP/1.1 200  OK",
  "HTTP/1.1  200 OK", "HTTP/1.1 200\tOK", "HTTP/1.1\t200 OK", "http/1.1 200 OK", "HTTP/1.2 200 OK",
  "HTTP/1.9 200 OK", "HTTP/2.0 200 OK", "HTTP/2 200 OK", "HTTP/0.9 200 OK", "HTTP/1.1 20 OK",
  "HTTP/1.1 2000 OK", "HTTP/1.1 099 X", "HTTP/1.1 000 X", "HTTP/1.1 600 X", "HTTP/1.1 999 X",
  "HTTP/1.1 2x0 OK", "HTTP/1.1 -20 OK", "HTTP/11 200 OK", "HTTP/1.10 200 OK", "HTTP/1.1 200 O\0K",
  "HTTP/1.1 200 O\x01K", "HTTP/1.1 200 O\x7fK", "HTTP/1.1 200 \xe9t\xe9", "HTTP/1.1 200 a\tb",
  " HTTP/1.1 200 OK", "HTTP/1.1 200 OK ", "HTTPS/1.1 200 OK", "ICY 200 OK", "",
  "HTTP/1.1 404 Not Found", "HTTP/1.1 500 Internal Server Error", "HTTP/1.1 201 Created",
  "HTTP/1.1 299 X", "HTTP/1.1 200 OK\r", "HTTP/1.1 200 O\rK", "HTTP/1.1 20\x000 OK",
  "HTTP/1.1 200 OK\r\rX-A: 1",
];

// biome-ignore format: a table
const BAD_EXTENSIONS = [
  ";", "; ", ";=x", ";a=", ';a="x', ";a b", ";a\rb", ";a\x00", ";a\x01", ";\xe9", ';a="\\""',
  ';a="\x7f"', "x", " x",
];
/** Field lines that are not (as a trailer, or in an interim head). */
const BAD_FIELDS = [
  "Nonsense",
  " fold",
  "X-A : 1",
  "X-A: \x00",
  "X-A: a\x01b",
  ": x",
  "X A: 1",
  "X-A:\x7f",
];
// biome-ignore format: a table
const CODINGS = [
  "gzip", "identity", "chunked, gzip", "gzip, chunked", "Chunked", "CHUNKED", " chunked ",
  "chunked;q=1", "chunked , ", ", chunked", "chunked, chunked", "", "x-custom", "chunkedx",
  "chunked\t", "deflate, chunked", "\xa0chunked", "chunked\x0b",
];

/** Each class makes one kind of response from a valid base. */
const CLASSES = {
  "content-length": (_rng, r) => {
    r.framing = "length";
  },
  chunked: (rng, r) => {
    r.framing = "chunked";
    if (rng.chance(0.3)) r.last = rng.pick(["0", "00", "000", "0000000000000000000"]);
  },
  "chunk-extensions": (rng, r) => {
    r.framing = "chunked";
    r.chunkExtChance = 0.8;
    if (rng.chance(0.5)) r.last = `0${chunkExt(rng)}`;
    if (rng.chance(0.4)) {
      // A broken extension on the last chunk line or on one of its own.
      const bad = rng.pick(BAD_EXTENSIONS);
      if (rng.chance(0.5)) r.last = `0${bad}`;
      else {
        r.framing = "raw";
        r.headers.push("Transfer-Encoding: chunked");
        r.raw = `2${bad}\r\nok\r\n0\r\n\r\n`;
      }
    }
  },
  trailers: (rng, r) => {
    r.framing = "chunked";
    for (let i = rng.range(1, 3); i > 0; i--)
      r.trailers.push(`${headerName(rng)}: ${headerValue(rng)}`);
    if (rng.chance(0.4)) {
      r.trailers.push(rng.pick(BAD_FIELDS));
    }
  },
  "close-delimited": (rng, r) => {
    r.framing = "close";
    if (rng.chance(0.3)) r.headers.push("Connection: close");
  },
  interim: (rng, r) => {
    for (let i = rng.range(1, 3); i > 0; i--) {
      const code = rng.pick(["100 Continue", "103 Early Hints", "102 Processing", "100", "199 X"]);
      const extra = rng.chance(0.5) ? `Link: </${rng.bytes(4, TCHAR)}>; rel=preload\r\n` : "";
      const length = rng.chance(0.2) ? "Content-Length: 5\r\n" : "";
      const bad = rng.chance(0.15) ? `${rng.pick(BAD_FIELDS)}\r\n` : "";
      r.interim.push(`HTTP/1.1 ${code}\r\n${extra}${length}${bad}\r\n`);
    }
  },
  "status-line": (rng, r) => {
    r.status = rng.pick(STATUS_LINES);
  },
  "header-name": (rng, r) => {
    const name =
      rng.bytes(rng.range(0, 3), TCHAR) + rng.pick(NOT_TCHAR) + rng.bytes(rng.range(0, 3), TCHAR);
    r.headers.splice(rng.int(r.headers.length + 1), 0, `${name}: ${headerValue(rng)}`);
  },
  "header-value": (rng, r) => {
    const odd = rng.pick([...CTL, "\xa0", "\x85", "\xff", " ", "\t", "\r"]);
    const v = headerValue(rng);
    const at = rng.int(v.length + 1);
    // biome-ignore format: a table
    const value = rng.pick([
      `${v.slice(0, at)}${odd}${v.slice(at)}`, `${odd}${v}`, `${v}${odd}`, `${odd}`, `  ${v}  `,
      `\t${v}\t`,
    ]);
    r.headers.splice(
      rng.int(r.headers.length + 1),
      0,
      `${headerName(rng)}:${rng.pick(["", " ", "\t"])}${value}`,
    );
  },
  "line-ends": (rng, r) => {
    r.framing = rng.pick(["length", "chunked"]);
    r.after = "";
    r.breakLine = rng.pick(["\n", "\r", "", "\r\r\n", "\n\r", "\r\n\r\n"]);
  },
  "space-before-colon": (rng, r) => {
    const name = rng.pick(["Content-Length", "Transfer-Encoding", "X-A"]);
    const value =
      name === "Content-Length"
        ? `${r.body.length}`
        : name === "Transfer-Encoding"
          ? "chunked"
          : "1";
    r.headers.push(`${name}${rng.pick([" ", "\t", "  "])}: ${value}`);
  },
  "obs-fold": (rng, r) => {
    const more = rng.chance(0.8) ? headerValue(rng) || "x" : "";
    const fold = `\r\n${rng.pick([" ", "\t", "  ", " \t"])}${more}`;
    if (rng.chance(0.3)) {
      r.framing = "raw";
      r.raw = r.body;
      r.headers.push(`Content-Length:${rng.pick(["", " "])}${fold}${r.body.length}`);
      r.headers.push("Connection: close");
    } else if (rng.chance(0.2) || r.headers.length === 0) {
      r.headers.unshift(`${fold.slice(2)}`); // a fold right after the status line
    } else {
      const at = rng.int(r.headers.length);
      r.headers[at] += fold;
    }
  },
  "content-length-duplicate": (rng, r) => {
    r.framing = "raw";
    r.raw = r.body;
    const n = r.body.length;
    const other = n + rng.pick([1, -1, 10]);
    const shape = rng.pick([
      "equal-lines",
      "equal-list",
      "conflict-lines",
      "conflict-list",
      "equal-list-ows",
    ]);
    if (shape === "equal-lines") r.headers.push(`Content-Length: ${n}`, `Content-Length: ${n}`);
    if (shape === "equal-list") r.headers.push(`Content-Length: ${n},${n}`);
    if (shape === "equal-list-ows") r.headers.push(`Content-Length: ${n} , ${n}, ${n}`);
    if (shape === "conflict-lines")
      r.headers.push(`Content-Length: ${n}`, `Content-Length: ${other}`);
    if (shape === "conflict-list") r.headers.push(`Content-Length: ${n}, ${other}`);
  },
  "content-length-value": (rng, r) => {
    r.framing = "raw";
    r.raw = r.body;
    const n = r.body.length;
    // biome-ignore format: a table
    r.headers.push(`Content-Length: ${rng.pick([
      `+${n}`, `-${n}`, `0x${n.toString(16)}`, `${n} `, ` ${n}`, `\t${n}\t`, "", `${n}.0`, `${n}a`,
      `00${n}`, `${"0".repeat(15)}${n}`, "1".repeat(16), "9".repeat(20), "18446744073709551616",
      `${n} ${n}`, `${n};`, `${n}\x00`,
    ])}`);
  },
  "cl-te": (rng, r) => {
    r.framing = "raw";
    const coding = rng.pick(["chunked", "chunked", "gzip, chunked", "identity", "gzip"]);
    const te = `Transfer-Encoding: ${coding}`;
    const cl = `Content-Length: ${rng.pick([0, 2, 5, 100])}`;
    r.headers.push(...(rng.chance(0.5) ? [cl, te] : [te, cl]));
    r.raw = "2\r\nok\r\n0\r\n\r\n";
  },
  "transfer-coding": (rng, r) => {
    r.framing = "raw";
    const value = rng.pick(CODINGS);
    const lines = rng.chance(0.25)
      ? ["Transfer-Encoding: gzip", `Transfer-Encoding: ${value}`]
      : [`Transfer-Encoding: ${value}`];
    r.headers.push(...lines);
    r.raw = rng.chance(0.5) ? encodeChunks(chunks(rng, r.body, 0), "0", []) : r.body;
  },
  "chunk-size": (rng, r) => {
    r.framing = "raw";
    r.headers.push("Transfer-Encoding: chunked");
    const data = r.body.slice(0, 40) || "ok";
    const n = data.length.toString(16);
    // biome-ignore format: a table
    const line = rng.pick([
      n.toUpperCase(), n, `${"0".repeat(rng.range(1, 20))}${n}`, ` ${n}`, `${n} `, `${n}\t`,
      `${n} ;a`, `\t${n}`, `${n} x`, `+${n}`, `-${n}`, `0x${n}`, "", `${n}g`,
      "f".repeat(rng.range(12, 20)), "1".repeat(rng.range(12, 17)), "10000000000000000",
      "ffffffffffffffff1", `${n}\x00`, `${n}\r`, `${n}\x0b`,
    ]);
    r.raw = `${line}\r\n${data}\r\n0\r\n\r\n`;
  },
  "no-body-status": (rng, r) => {
    r.status = rng.pick([
      "HTTP/1.1 204 No Content",
      "HTTP/1.1 304 Not Modified",
      "HTTP/1.1 200 OK",
    ]);
    if (r.status.includes("200")) r.method = "HEAD";
    r.framing = "raw";
    const framing = rng.pick(["none", "length", "zero", "chunked"]);
    if (framing === "length") r.headers.push(`Content-Length: ${r.body.length || 5}`);
    if (framing === "zero") r.headers.push("Content-Length: 0");
    if (framing === "chunked") r.headers.push("Transfer-Encoding: chunked");
    r.raw = rng.chance(0.5) ? "" : r.body || "hello";
  },
  "large-head": (rng, r) => {
    // A head whose size lands near the 16 KiB limit, in one header or in many.
    const target = HEAD_LIMIT + rng.range(-300, 300);
    const fixed = render({
      ...r,
      body: "",
      framing: r.framing === "chunked" ? "length" : r.framing,
    }).length;
    let left = target - fixed;
    if (rng.chance(0.5)) {
      r.headers.push(`X-Pad: ${"z".repeat(Math.max(0, left - 9))}`);
    } else {
      while (left > 12) {
        const n = Math.min(left - 10, rng.range(1, 200));
        r.headers.push(`X-P: ${"y".repeat(n)}`);
        left -= n + 7;
      }
    }
  },
  "garbage-after": (rng, r) => {
    r.framing = rng.pick(["length", "chunked"]);
    r.after = rng.pick([
      "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
      "x",
      "\r\n",
      rng.bytes(rng.range(1, 50)),
    ]);
  },
  mutation: (rng, r) => {
    r.mutate = rng.range(1, 3);
  },
};

/** Case `index` of `seed`: its class, method, response bytes (latin1) and cut points. */
export function generate(seed, index) {
  const rng = new Rng(seed, index);
  const names = Object.keys(CLASSES);
  const cls = names[index % names.length]; // every class in every run of at least that many cases
  const r = base(rng);
  r.rng = rng;
  r.method = rng.chance(0.8) ? "POST" : "GET";
  CLASSES[cls](rng, r);
  let bytes = render(r);
  if (r.breakLine !== undefined) {
    // Replace one CRLF of the head (status line, a header, or the blank line) with something else.
    const head = bytes.indexOf("\r\n\r\n") + 4;
    const ends = [];
    for (let at = bytes.indexOf("\r\n"); at !== -1 && at < head; at = bytes.indexOf("\r\n", at + 2))
      ends.push(at);
    const at = rng.pick(ends);
    bytes = bytes.slice(0, at) + r.breakLine + bytes.slice(at + 2);
  }
  for (let i = r.mutate ?? 0; i > 0; i--) {
    const at = rng.int(bytes.length + 1);
    const byte = rng.chance(0.5)
      ? rng.pick(["\r", "\n", "\0", " ", ":", "\t", "0", "a", ";", ","])
      : rng.bytes(1);
    const op = rng.int(3);
    if (op === 0) bytes = bytes.slice(0, at) + byte + bytes.slice(at + 1);
    else if (op === 1) bytes = bytes.slice(0, at) + byte + bytes.slice(at);
    else bytes = bytes.slice(0, at) + bytes.slice(at + 1);
  }
  return { index, cls, method: r.method, bytes, cuts: cuts(rng, bytes.length) };
}

/** Where the bytes are cut into socket writes: none, a few random points, or many. */
function cuts(rng, length) {
  const n = rng.pick([0, 1, 2, 3, 5, 8, Math.min(length, 40)]);
  const at = new Set();
  for (let i = 0; i < n && length > 1; i++) at.add(rng.range(1, length - 1));
  return [...at].sort((a, b) => a - b);
}

// ---------------------------------------------------------------------------------------------
// The two clients and the server.

/** A server on 127.0.0.1 that answers a request for /case/N with case N's bytes, then closes. */
class Server {
  constructor() {
    this.cases = new Map();
    this.closed = new Map();
    this.server = net.createServer((socket) => this.serve(socket));
  }

  async start() {
    await new Promise((ok) => this.server.listen(0, "127.0.0.1", ok));
    this.port = this.server.address().port;
  }

  stop() {
    return new Promise((ok) => this.server.close(ok));
  }

  /** Resolves when the connection that served `path` has closed at the server. */
  closedFor(path) {
    return this.closing(path).promise;
  }

  closing(path) {
    let entry = this.closed.get(path);
    if (entry === undefined) {
      entry = {};
      entry.promise = new Promise((ok) => {
        entry.resolve = ok;
      });
      this.closed.set(path, entry);
    }
    return entry;
  }

  serve(socket) {
    socket.setNoDelay(true);
    socket.on("error", () => {});
    let buffered = Buffer.alloc(0);
    let answered = false;
    socket.on("data", (data) => {
      if (answered) return;
      buffered = Buffer.concat([buffered, data]);
      const end = buffered.indexOf("\r\n\r\n");
      if (end === -1) return;
      const head = buffered.subarray(0, end).toString("latin1");
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      if (buffered.length < end + 4 + length) return;
      answered = true;
      const path = head.split(" ")[1];
      socket.on("close", () => this.closing(path).resolve());
      void this.answer(socket, this.cases.get(path));
    });
  }

  async answer(socket, c) {
    const bytes = Buffer.from(c.bytes, "latin1");
    let from = 0;
    for (const at of c.cuts) {
      socket.write(bytes.subarray(from, at));
      from = at;
      await new Promise((ok) => setTimeout(ok, 1)); // its own read at the client
    }
    socket.end(bytes.subarray(from));
    // A client that keeps a closed connection open is a hang, reported by the caller.
    setTimeout(() => socket.destroy(), HANG_MS * 2).unref();
  }
}

/** Lower-case names, repeated headers' values joined with ", " (what Reply holds). */
function joinRaw(raw) {
  const map = new Map();
  for (let i = 0; i < raw.length; i += 2) {
    const key = raw[i].toLowerCase();
    const before = map.get(key);
    map.set(key, before === undefined ? raw[i + 1] : `${before}, ${raw[i + 1]}`);
  }
  return map;
}

/** The answer through node:http; `reads.count` counts its socket reads. */
function viaNode(port, path, method, reads) {
  return new Promise((settle) => {
    let done = false;
    const finish = (outcome) => {
      if (!done) {
        done = true;
        settle(outcome);
      }
    };
    const payload = method === "POST" ? Buffer.from("{}") : undefined;
    const headers = payload ? { "Content-Length": String(payload.length) } : {};
    const req = http.request({ host: "127.0.0.1", port, path, method, agent: false, headers });
    req.on("socket", (socket) => socket.on("data", () => (reads.count += 1)));
    let res;
    req.on("error", (err) => {
      // Bytes after a complete response fail the socket, not the response: its "end" follows.
      if (res?.complete) return;
      finish({ ok: false, error: `${err.code ?? ""} ${err.message}` });
    });
    req.on("response", (response) => {
      res = response;
      const pieces = [];
      res.on("data", (piece) => pieces.push(piece));
      res.on("end", () => {
        finish({
          ok: true,
          status: res.statusCode,
          headers: joinRaw(res.rawHeaders),
          body: Buffer.concat(pieces),
        });
      });
      res.on("error", (err) => finish({ ok: false, error: `${err.code ?? ""} ${err.message}` }));
      res.on("close", () => {
        if (!res.complete) finish({ ok: false, error: "closed before the end" });
      });
    });
    req.end(payload);
  });
}

async function viaBrainline(transport, port, path, method) {
  const { Call, Target, ProtocolError } = transport;
  const payload = method === "POST" ? Buffer.from("{}") : undefined;
  try {
    const call = new Call(
      await Target.of(`http://127.0.0.1:${port}${path}`),
      method,
      [],
      payload,
      5000,
    );
    const reply = await call.reply;
    const pieces = [];
    if (reply.body !== undefined) {
      for (
        let piece = await reply.body.read();
        piece !== undefined;
        piece = await reply.body.read()
      ) {
        pieces.push(Buffer.from(piece));
      }
    }
    // Reply keeps its headers private; this reads the same map header(name) answers from.
    return { ok: true, status: reply.status, headers: reply.headers, body: Buffer.concat(pieces) };
  } catch (err) {
    if (err instanceof ProtocolError) return { ok: false, error: `protocol: ${err.message}` };
    if (err?.code === "ECONNRESET") return { ok: false, error: "lost" };
    return { ok: false, untyped: true, error: `${err?.name}: ${err?.message}\n${err?.stack}` };
  }
}

function timeout(ms, what) {
  let timer;
  const promise = new Promise((ok) => {
    timer = setTimeout(
      () => ok({ ok: false, hang: true, error: `${what}: no outcome in ${ms} ms` }),
      ms,
    );
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

/** Both outcomes of case `c`, through `server`. */
async function runCase(transport, server, c) {
  const path = (side) => `/case/${c.index}/${side}`;
  server.cases.set(path("b"), c);
  server.cases.set(path("n"), c);
  const limit = timeout(HANG_MS, "hang");
  const reads = { count: 0 };
  const [b, n] = await Promise.all([
    Promise.race([viaBrainline(transport, server.port, path("b"), c.method), limit.promise]),
    Promise.race([viaNode(server.port, path("n"), c.method, reads), limit.promise]),
  ]);
  // The next case starts when both connections are gone: none is left in brainline's pool.
  const gone = timeout(HANG_MS, "the connection stayed open");
  const [left] = await Promise.all(
    ["b", "n"].map((side) => Promise.race([server.closedFor(path(side)), gone.promise])),
  );
  limit.cancel();
  gone.cancel();
  for (const side of ["b", "n"]) {
    server.cases.delete(path(side));
    server.closed.delete(path(side));
  }
  if (left?.hang) b.kept = true;
  return { b, n, reads: reads.count };
}

// ---------------------------------------------------------------------------------------------
// The comparison.

/** The size of each head (interim ones too) as sent, without its blank line. */
function headSizes(bytes) {
  let at = 0;
  const sizes = [];
  for (;;) {
    const end = bytes.indexOf("\r\n\r\n", at);
    if (end === -1) return sizes;
    sizes.push(end - at);
    const head = bytes.slice(at, end);
    if (!/^HTTP\/1\.[01] 1\d\d/.test(head) || head.startsWith("HTTP/1.1 101")) return sizes;
    at = end + 4;
  }
}

/** The field lines of every head in `bytes` (interim ones too), as sent. */
function fieldLines(bytes) {
  const lines = [];
  let at = 0;
  for (;;) {
    const end = bytes.indexOf("\r\n\r\n", at);
    if (end === -1) return lines;
    const head = bytes.slice(at, end).split("\r\n");
    lines.push(...head.slice(1));
    if (!/^HTTP\/1\.[01] 1\d\d/.test(head[0]) || head[0].startsWith("HTTP/1.1 101")) return lines;
    at = end + 4;
  }
}

/**
 * Why a case may end differently in the two clients, or undefined. Each exception is a place where
 * RFC 9112 / RFC 9110 leave a choice, or where llhttp departs from them, and brainline did not
 * follow llhttp on purpose. Each is narrowed to the bytes that make it (not to a class's name).
 */
function exception(c, b, n) {
  const lines = fieldLines(c.bytes);
  // Limits are the implementation's (RFC 9110 §5.4: a recipient may refuse fields "larger than it
  // wishes to process"). Both take 16 KiB, but transport.ts counts the head as sent and Node
  // counts only the reason phrase, names and values: a head over 16 KiB as sent may be under.
  if (
    !b.ok &&
    n.ok &&
    b.error === "protocol: response head too large" &&
    headSizes(c.bytes).some((size) => size > HEAD_LIMIT)
  ) {
    return "a head over 16 KiB as sent, under it as Node counts (RFC 9110 §5.4)";
  }
  // RFC 9110 §8.6: a Content-Length that is a list of one repeated value "MAY" be taken as that
  // value. brainline does (as h11, its Python side, does); llhttp refuses a repeated header.
  const lengths = lines
    .filter((line) => /^content-length:/i.test(line))
    .flatMap((line) => line.slice(15).split(","))
    .map((value) => value.replace(/^[ \t]+|[ \t]+$/g, ""));
  if (b.ok && !n.ok && lengths.length > 1 && new Set(lengths).size === 1) {
    return "Content-Length as a list of one value (RFC 9110 §8.6)";
  }
  // OWS is SP or HTAB (RFC 9110 §5.6.3) and no part of a field value (§5.5). llhttp keeps a
  // trailing HTAB in these two: "chunked\t" is not chunked to it, "5\t" no length.
  if (lines.some((line) => /^(content-length|transfer-encoding):.*\t$/i.test(line))) {
    return "a trailing HTAB after Content-Length or Transfer-Encoding (RFC 9110 §5.5)";
  }
  // A chunk extension is ignored (RFC 9112 §7.1.1: a recipient MUST ignore unrecognized ones):
  // brainline refuses only control bytes in one. llhttp also checks its grammar, and refuses the
  // BWS the grammar allows around ";" and "=".
  if (b.ok && !n.ok && /chunk (size|extensions)/.test(n.error)) {
    return "the content of a chunk extension, BWS on a chunk line (RFC 9112 §7.1.1)";
  }
  // RFC 9112 §5.2: a user agent MUST replace an obsolete line fold with SP; llhttp refuses it.
  if (
    b.ok &&
    !n.ok &&
    /whitespace after header value|Invalid header value char/.test(n.error) &&
    /\r\n[^\r\n:]+:[^\r\n]*\r\n[ \t]/.test(c.bytes)
  ) {
    return "an obsolete line fold (RFC 9112 §5.2)";
  }
  // What comes first must be an HTTP/1.x status line, ended by CRLF (RFC 9112 §4). llhttp also
  // skips empty lines before it (§2.2 asks that of a server before a request line), takes
  // HTTP/0.9 and HTTP/2.0, and ends the line at CR CR (a bare CR is invalid there, §2.2).
  const first = c.bytes.slice(0, c.bytes.indexOf("\n") + 1);
  if (
    !b.ok &&
    n.ok &&
    b.error === "protocol: bad status line" &&
    (!/^HTTP\/1\./.test(first) || /\r\r/.test(first))
  ) {
    return "no HTTP/1.x status line and CRLF first (RFC 9112 §2.2, §2.3, §4)";
  }
  return undefined;
}

function same(a, b) {
  if (a.status !== b.status || !a.body.equals(b.body) || a.headers.size !== b.headers.size)
    return false;
  for (const [key, value] of a.headers) if (b.headers.get(key) !== value) return false;
  return true;
}

/** The verdict on a case's two outcomes: agree, excepted (and why), or disagree (and how). */
export function judge(c, { b, n }) {
  if (b.untyped) return { verdict: "disagree", why: "brainline threw an untyped error" };
  if (b.hang || n.hang) return { verdict: "disagree", why: "a side hung" };
  if (b.kept) return { verdict: "disagree", why: "brainline kept a closed connection open" };
  if (b.ok && n.ok && same(b, n)) return { verdict: "agree" };
  if (!b.ok && !n.ok) return { verdict: "agree" };
  const why = exception(c, b, n);
  if (why !== undefined) return { verdict: "excepted", why };
  if (b.ok && n.ok) return { verdict: "disagree", why: "both accepted, differently" };
  return {
    verdict: "disagree",
    why: b.ok ? "brainline accepted, llhttp refused" : "llhttp accepted, brainline refused",
  };
}

// ---------------------------------------------------------------------------------------------
// The driver.

/** transport.ts (or another version of it) bundled by esbuild from typescript/node_modules. */
export async function loadTransport(source = join(ROOT, "typescript/src/core/transport.ts")) {
  const require = createRequire(join(ROOT, "typescript", "package.json"));
  const esbuild = require("esbuild");
  const dir = mkdtempSync(join(tmpdir(), "brainline-http-diff-"));
  try {
    const outfile = join(dir, "transport.mjs");
    await esbuild.build({
      stdin: {
        contents: readFileSync(source, "utf8"),
        loader: "ts",
        resolveDir: join(ROOT, "typescript/src/core"), // its imports resolve as from the repo
        sourcefile: source,
      },
      bundle: true,
      format: "esm",
      platform: "node",
      logLevel: "warning",
      outfile,
    });
    return await import(pathToFileURL(outfile).href);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function show(outcome) {
  if (!outcome.ok) return { error: outcome.error };
  return {
    status: outcome.status,
    headers: Object.fromEntries(outcome.headers),
    body: JSON.stringify(outcome.body.toString("latin1")).slice(0, 400),
  };
}

/** Runs cases [0, cases) of `seed` (or only `only`) until `seconds` pass; returns the summary. */
export async function run({
  seed,
  cases,
  seconds,
  only,
  bytes,
  method = "POST",
  workers = 4,
  verbose = false,
  log = console.log,
  transport: source,
}) {
  const transport = await loadTransport(source);
  const started = performance.now();
  const deadline = started + seconds * 1000;
  const indexes =
    only !== undefined || bytes !== undefined
      ? [only ?? 0]
      : Array.from({ length: cases }, (_, i) => i);
  const summary = {
    seed,
    cases: 0,
    seconds: 0,
    reads: 0,
    classes: {},
    excepted: {},
    disagreements: [],
  };
  let next = 0;
  // One server per worker: its own port is its own origin, so its own slot in the pool.
  const worker = async () => {
    const server = new Server();
    await server.start();
    try {
      while (next < indexes.length && performance.now() < deadline) {
        const c =
          bytes === undefined
            ? generate(seed, indexes[next++])
            : { index: indexes[next++], cls: "given", method, bytes, cuts: [] };
        const outcome = await runCase(transport, server, c);
        const { verdict, why } = judge(c, outcome);
        // accepted / refused: by both; excepted: one refused, by an exception below.
        summary.classes[c.cls] ??= { cases: 0, accepted: 0, refused: 0, excepted: 0 };
        const tally = summary.classes[c.cls];
        tally.cases += 1;
        if (verdict === "agree") tally[outcome.n.ok ? "accepted" : "refused"] += 1;
        if (verdict === "excepted") tally.excepted += 1;
        summary.reads += outcome.reads;
        summary.cases += 1;
        if (verdict === "excepted") summary.excepted[why] = (summary.excepted[why] ?? 0) + 1;
        if (verbose || verdict === "disagree") {
          const report = {
            seed,
            case: c.index,
            class: c.cls,
            method: c.method,
            why,
            cuts: c.cuts,
            bytes: JSON.stringify(c.bytes.length > 2000 ? `${c.bytes.slice(0, 2000)}...` : c.bytes),
            brainline: show(outcome.b),
            llhttp: show(outcome.n),
          };
          if (verdict === "disagree") summary.disagreements.push(report);
          log(`${verdict === "disagree" ? "DISAGREE" : verdict}: ${JSON.stringify(report)}`);
        }
      }
    } finally {
      await server.stop();
    }
  };
  await Promise.all(Array.from({ length: workers }, worker));
  summary.seconds = Math.round((performance.now() - started) / 100) / 10;
  return summary;
}

function parseArgs(argv) {
  const args = { seed: undefined, cases: 20_000, seconds: 60, workers: 4, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s); // --seconds 600 or --seconds=600
    const value = () => inline ?? argv[++i];
    if (flag === "--seed") args.seed = Number(value()) >>> 0;
    else if (flag === "--cases") args.cases = Number(value());
    else if (flag === "--seconds") args.seconds = Number(value());
    else if (flag === "--only") args.only = Number(value());
    else if (flag === "--bytes")
      args.bytes = JSON.parse(value()); // one response, as a JSON string
    else if (flag === "--method") args.method = value();
    else if (flag === "--transport")
      args.transport = value(); // another transport.ts to try
    else if (flag === "--workers") args.workers = Number(value());
    else if (flag === "--json") args.json = value();
    else if (flag === "--verbose") args.verbose = true;
    else throw new Error(`unknown argument ${flag}`);
  }
  args.seed ??= randomInt(2 ** 31);
  return args;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = parseArgs(process.argv.slice(2));
  console.log(`http_diff: seed ${args.seed} (replay one case: --seed ${args.seed} --only N)`);
  const summary = await run(args);
  const { disagreements, ...counts } = summary;
  console.log(JSON.stringify(counts, null, 1));
  if (args.json) writeFileSync(args.json, JSON.stringify(summary, null, 1));
  const { cases, seconds, seed } = summary;
  const found = disagreements.length;
  console.log(`http_diff: ${cases} cases in ${seconds} s, ${found} disagreements (seed ${seed})`);
  process.exitCode = disagreements.length > 0 ? 1 : 0;
}
