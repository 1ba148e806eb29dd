import { CALLER_HASH_HEX_LENGTH, CALLER_HASH_PREFIX } from "../generated/constants.js";
import type { LLMConfig } from "../generated/options.js";

/** What a session-key factory learns about the call. The raw caller never goes on the wire. */
export interface SessionContext {
  readonly callId: string | undefined;
  readonly caller: string | undefined;
  readonly callee: string | undefined;
  /** hashCaller(caller): first 16 hex characters of sha256(caller), undefined without a caller. */
  readonly callerHash: string | undefined;
}

/** Each context's raw caller, kept off the context itself. */
const callers = new WeakMap<object, string | undefined>();

/**
 * The context stream() hands a session-key factory. `caller` is a getter over a WeakMap, so
 * JSON.stringify, util.inspect (even with showHidden), loggers that copy own fields, spreading and
 * structuredClone never show the number, as Python leaves it out of the context's repr.
 */
class CallContext implements SessionContext {
  readonly callerHash: string | undefined;

  constructor(
    readonly callId: string | undefined,
    caller: string | undefined,
    readonly callee: string | undefined,
  ) {
    callers.set(this, caller);
    this.callerHash = hashCaller(caller);
  }

  get caller(): string | undefined {
    return callers.get(this);
  }
}

/** The SessionContext of one call: its callerHash is hashCaller(caller). */
export function sessionContext(
  callId: string | undefined,
  caller: string | undefined,
  callee: string | undefined,
): SessionContext {
  return new CallContext(callId, caller, callee);
}

/** The first CALLER_HASH_HEX_LENGTH hex characters of sha256(UTF-8 caller); undefined when empty. */
export function hashCaller(caller: string | null | undefined): string | undefined {
  if (!caller) return undefined;
  return sha256Hex(caller).slice(0, CALLER_HASH_HEX_LENGTH);
}

// SHA-256 (FIPS 180-4) in plain JavaScript, synchronous: node:crypto is not there in browsers or
// in Workers without nodejs_compat, and WebCrypto's digest is asynchronous. A caller number is a
// few dozen bytes: this costs microseconds once per turn.
const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const H0 = [
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

const rotr = (x: number, n: number): number => (x >>> n) | (x << (32 - n));

/** sha256 of the UTF-8 bytes of `text`, as 64 lower-case hex characters. */
export function sha256Hex(text: string): string {
  const bytes = new TextEncoder().encode(text);
  const blocks = new Uint8Array(((bytes.length + 72) >>> 6) << 6); // the message, 0x80, its length
  blocks.set(bytes);
  blocks[bytes.length] = 0x80;
  const view = new DataView(blocks.buffer);
  const bits = bytes.length * 8;
  view.setUint32(blocks.length - 8, Math.floor(bits / 2 ** 32));
  view.setUint32(blocks.length - 4, bits >>> 0);
  const h = Uint32Array.from(H0);
  const w = new Uint32Array(64);
  for (let at = 0; at < blocks.length; at += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(at + i * 4);
    for (let i = 16; i < 64; i++) {
      const x = w[i - 15] as number;
      const y = w[i - 2] as number;
      const s0 = rotr(x, 7) ^ rotr(x, 18) ^ (x >>> 3);
      const s1 = rotr(y, 17) ^ rotr(y, 19) ^ (y >>> 10);
      w[i] = (w[i - 16] as number) + s0 + (w[i - 7] as number) + s1;
    }
    let [a, b, c, d, e, f, g, k] = h as unknown as number[];
    for (let i = 0; i < 64; i++) {
      const t1 =
        (k as number) +
        (rotr(e as number, 6) ^ rotr(e as number, 11) ^ rotr(e as number, 25)) +
        (((e as number) & (f as number)) ^ (~(e as number) & (g as number))) +
        (K[i] as number) +
        (w[i] as number);
      const t2 =
        (rotr(a as number, 2) ^ rotr(a as number, 13) ^ rotr(a as number, 22)) +
        (((a as number) & (b as number)) ^
          ((a as number) & (c as number)) ^
          ((b as number) & (c as number)));
      k = g;
      g = f;
      f = e;
      e = ((d as number) + t1) | 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) | 0;
    }
    const next = [a, b, c, d, e, f, g, k] as number[];
    for (let i = 0; i < 8; i++) h[i] = (h[i] as number) + (next[i] as number);
  }
  let hex = "";
  for (let i = 0; i < 8; i++) hex += (h[i] as number).toString(16).padStart(8, "0");
  return hex;
}

/**
 * The memory-scope key: the factory's result when a factory is set (a falsy result means none),
 * else CALLER_HASH_PREFIX + callerHash when sessionKeyFrom is "caller_hash" and there is a caller,
 * else the static sessionKey.
 */
export function resolveSessionKey(config: LLMConfig, ctx: SessionContext): string | undefined {
  if (config.sessionKeyFactory) return config.sessionKeyFactory(ctx) || undefined;
  if (config.sessionKeyFrom === "caller_hash") {
    // Without a caller there is no key: the static key is not a fallback.
    return ctx.callerHash ? CALLER_HASH_PREFIX + ctx.callerHash : undefined;
  }
  return config.sessionKey || undefined;
}
