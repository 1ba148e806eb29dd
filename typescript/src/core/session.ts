import { createHash } from "node:crypto";
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
  return createHash("sha256").update(caller, "utf8").digest("hex").slice(0, CALLER_HASH_HEX_LENGTH);
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
