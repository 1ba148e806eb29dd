// Debug logs; python/src/brainline/_core/log.py mirrors them. BRAINLINE_LOG=debug|info|warning|off
// (spec constant LOG_ENV) sets the level (default: warning); lines go to stderr unless a logger is
// given. Lines name the method, the URL without its query, statuses, request ids, attempts and
// times: never a header, a key, a session key or a caller.

import { LOG_ENV } from "../generated/constants.js";
import { readEnv } from "./validate.js";

/** Where log lines go: console-like (pino, winston and console all fit). */
export interface Logger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
}

const DEBUG = 10;
const INFO = 20;
const WARNING = 30;
const LEVELS: Readonly<Record<string, number>> = {
  debug: DEBUG,
  info: INFO,
  warning: WARNING,
  off: 100,
};

const STDERR: Logger = {
  debug: (message) => console.error(`[brainline debug] ${message}`),
  info: (message) => console.error(`[brainline info] ${message}`),
  warn: (message) => console.error(`[brainline warning] ${message}`),
};

/** A level and a logger; the `*On` flags make a disabled line cost one check. */
export class Log {
  readonly debugOn: boolean;
  readonly infoOn: boolean;
  private readonly warnOn: boolean;

  constructor(
    level: number,
    private readonly sink: Logger = STDERR,
  ) {
    this.debugOn = level <= DEBUG;
    this.infoOn = level <= INFO;
    this.warnOn = level <= WARNING;
  }

  debug(message: string): void {
    if (this.debugOn) this.sink.debug(message);
  }

  info(message: string): void {
    if (this.infoOn) this.sink.info(message);
  }

  warn(message: string): void {
    if (this.warnOn) this.sink.warn(message);
  }
}

function envLevel(): number {
  const value = readEnv(LOG_ENV)?.trim().toLowerCase() ?? "";
  return LEVELS[value] ?? WARNING;
}

let fromEnv: Log | undefined;

/** The process's log as BRAINLINE_LOG says (read once, by the first client). */
export function envLog(): Log {
  fromEnv ??= new Log(envLevel());
  return fromEnv;
}

/** A client's log: its `logLevel` and `logger` options, BRAINLINE_LOG and stderr for what is unset. */
export function logFor(level: string | undefined, logger: Logger | undefined): Log {
  if (level === undefined && logger === undefined) return envLog();
  return new Log(level === undefined ? envLevel() : (LEVELS[level] ?? WARNING), logger);
}

function value(v: unknown): string {
  if (v === null || v === undefined) return "-";
  return String(v);
}

/** `turn finished provider=... duration_ms=...`: one line per turn, the same in both languages. */
export function outcomeLine(record: object): string {
  const fields = record as Readonly<Record<string, unknown>>;
  const outcome =
    fields.error_code !== null ? "failed" : fields.cancelled === true ? "cancelled" : "finished";
  const pairs = Object.entries(fields).map(([key, v]) => `${key}=${value(v)}`);
  return `turn ${outcome} ${pairs.join(" ")}`;
}
