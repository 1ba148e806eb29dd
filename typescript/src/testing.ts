// brainline/testing: brainline's scripted OpenAI-compatible mock server, in TypeScript, in-process
// (src/testing/server.ts, the mirror of Python's brainline.testing.MockServer: one script format,
// docs/testing.md). No Python needed. Kept out of the main entry so `import "brainline"` stays small.

import type { MockRecords } from "./testing/server.js";
import { MockServer } from "./testing/server.js";

export { compileScript, ScriptError } from "./testing/script.js";
export {
  ConnectionRecord,
  MockServer,
  type MockRecords,
  type MockServerOptions as MockServerConstructorOptions,
  RecordedRequest,
} from "./testing/server.js";

/** Options of startMockServer(). */
export interface MockServerOptions {
  /** The script (docs/testing.md); default: a short demo turn. */
  readonly script?: unknown;
  /** Port on 127.0.0.1; 0 (default) picks a free one. */
  readonly port?: number;
  /** @deprecated Ignored: the server runs in-process, in TypeScript. */
  readonly python?: string;
  /** @deprecated Ignored: the server starts in-process. */
  readonly startTimeoutMs?: number;
}

/** A running mock server: its base URL, its records and its control functions. */
export interface MockServerHandle {
  /** `http://127.0.0.1:PORT/v1` */
  readonly url: string;
  /** The server itself, for its typed records (`requests`, `connections`, `waitFor`...). */
  readonly server: MockServer;
  /** What the server recorded, as `GET /__mock/requests` returns it (Python's field names). */
  requests(prefix?: string): Promise<MockRecords>;
  setScript(script: unknown): Promise<void>;
  addRoute(prefix: string, responses: unknown): Promise<void>;
  reset(): Promise<void>;
  /** Stop the server and close its connections. */
  close(): Promise<void>;
}

/** Raised when the server cannot start (a bad script, a port in use...). */
export class MockServerUnavailableError extends Error {
  readonly code = "mock_server_unavailable";
  constructor(detail: string) {
    super(`the mock server cannot start: ${detail}`);
    this.name = "MockServerUnavailableError";
  }
}

/** Start a mock server; resolves once it listens. Always `await handle.close()` afterwards. */
export async function startMockServer(options: MockServerOptions = {}): Promise<MockServerHandle> {
  const server = new MockServer(options.script, { port: options.port ?? 0 });
  let url: string;
  try {
    url = await server.start();
  } catch (err) {
    throw new MockServerUnavailableError((err as Error).message);
  }
  return {
    url,
    server,
    requests: async (prefix?: string) => server.snapshot(prefix),
    setScript: async (script) => server.setScript(script),
    addRoute: async (prefix, responses) => server.addRoute(prefix, responses),
    reset: async () => server.reset(),
    close: () => server.stop(),
  };
}
