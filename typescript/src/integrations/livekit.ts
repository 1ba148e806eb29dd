// brainline/livekit: a brainline provider as a LiveKit Agents (Node, @livekit/agents >= 1.9) LLM.
//
// A thin translation, mirrored by Python's brainline.integrations.livekit: LiveKit's chat context
// and tools in, brainline's stream() events out as LiveKit ChatChunks, brainline's errors as
// LiveKit's API errors. HTTP, SSE, timeouts, retries before the first byte and cancellation are
// the engine's; LiveKit's LLMStream keeps its own retries (connOptions.maxRetry) and metrics.
// Anchor: livekit/agents-js plugins/openai/src/llm.ts (and agents/src/inference/llm.ts).
// This is the only module that imports @livekit/agents (an optional peer dependency).

import { randomUUID } from "node:crypto";
import {
  type APIConnectOptions,
  APIConnectionError,
  APIStatusError,
  APITimeoutError,
  DEFAULT_API_CONNECT_OPTIONS,
  llm,
} from "@livekit/agents";
import type { StreamOptions } from "../core/client.js";
import { makeError } from "../core/errors.js";
import { type Event, type ToolCallEvent, assembleToolCalls } from "../core/events.js";

/** What the adapter needs of a brainline LLM: any provider class, or a FallbackLLM. */
export interface BrainlineProvider {
  stream(
    messages: readonly object[],
    tools?: readonly object[] | null,
    options?: StreamOptions,
  ): AsyncIterable<Event>;
  warmup?(): Promise<void>;
  close?(): Promise<void>;
}

/** Options of `new LLM(...)`. */
export interface LLMOptions {
  /** The brainline provider (or FallbackLLM) that streams the turns. */
  readonly llm: BrainlineProvider;
  /** The call's id, for the provider's session headers (one LLM per AgentSession). */
  readonly callId?: string | undefined;
  /** The caller's number: hashed for the memory-scope header, never sent or logged raw. */
  readonly caller?: string | undefined;
  readonly callee?: string | undefined;
}

/**
 * A brainline provider as a LiveKit `llm.LLM`: `new LLM({ llm: new OllamaLLM({...}) })`, usable
 * wherever LiveKit takes an LLM (an AgentSession, a FallbackAdapter).
 *
 * @throws {ConfigError} `invalid_secret_type` when `llm` has no stream() (the value is not echoed).
 */
export class LLM extends llm.LLM {
  readonly #llm: BrainlineProvider;
  readonly #session: StreamOptions;

  constructor(options: LLMOptions) {
    super();
    const provider: unknown = options?.llm;
    if (
      typeof provider !== "object" ||
      provider === null ||
      typeof (provider as BrainlineProvider).stream !== "function"
    ) {
      throw makeError("invalid_secret_type", {
        option: "llm",
        expected: "a brainline provider or FallbackLLM",
      });
    }
    this.#llm = provider as BrainlineProvider;
    const { callId, caller, callee } = options;
    this.#session = { callId, caller, callee };
  }

  /** The brainline provider this LLM streams from. */
  get llm(): BrainlineProvider {
    return this.#llm;
  }

  label(): string {
    return "brainline.LLM";
  }

  /** The provider's model; a FallbackLLM's first endpoint's. */
  override get model(): string {
    type Source = { config?: { model?: unknown }; llms?: readonly Source[] };
    const source = this.#llm as Source;
    const model = source.config?.model ?? source.llms?.[0]?.config?.model;
    return typeof model === "string" && model !== "" ? model : "unknown";
  }

  override get provider(): string {
    const key = (this.#llm as { providerKey?: unknown }).providerKey;
    return typeof key === "string" && key !== "" ? key : "brainline";
  }

  /**
   * One turn as a LiveKit LLMStream. `parallelToolCalls`, `toolChoice` and `extraKwargs` are not
   * per-call options of brainline: set them on the provider (`extraBody`) instead.
   */
  chat({
    chatCtx,
    toolCtx,
    connOptions = DEFAULT_API_CONNECT_OPTIONS,
  }: {
    chatCtx: llm.ChatContext;
    toolCtx?: llm.ToolContextLike;
    connOptions?: APIConnectOptions;
    parallelToolCalls?: boolean;
    toolChoice?: llm.ToolChoice;
    extraKwargs?: Record<string, unknown>;
  }): LLMStream {
    return new LLMStream(this, { chatCtx, toolCtx, connOptions }, this.#llm, this.#session);
  }

  /** LiveKit's prewarm(): the provider's warmup() (GET {baseUrl}/models; never throws). */
  protected override async _prewarmImpl(_signal: AbortSignal): Promise<void> {
    await this.#llm.warmup?.();
  }

  /** Also closes the provider: its running turns end, its idle connections close. */
  override async aclose(): Promise<void> {
    await super.aclose();
    await this.#llm.close?.();
  }
}

/**
 * One turn: brainline's events as ChatChunks. Text as it arrives; tool calls complete, all at once,
 * when the turn ends; usage last. Reasoning (`<think>` included) and progress events never reach
 * LiveKit, so they are never spoken. close() aborts the turn: the connection closes at once.
 */
export class LLMStream extends llm.LLMStream {
  readonly #llm: BrainlineProvider;
  readonly #session: StreamOptions;

  constructor(
    owner: LLM,
    options: {
      chatCtx: llm.ChatContext;
      toolCtx?: llm.ToolContextLike | undefined;
      connOptions: APIConnectOptions;
    },
    provider: BrainlineProvider,
    session: StreamOptions,
  ) {
    super(owner, options);
    this.#llm = provider;
    this.#session = session;
  }

  protected async run(): Promise<void> {
    const id = `brainline-${randomUUID()}`;
    const signal = this.abortController.signal;
    // Once text or a tool call went out, LiveKit must not retry this turn (it would be heard twice).
    let sent = false;
    const calls: ToolCallEvent[] = [];
    const flushCalls = () => {
      if (calls.length === 0) return;
      const toolCalls = assembleToolCalls(calls).map((call) =>
        llm.FunctionCall.create({
          callId: call.id ?? `call_${randomUUID()}`,
          name: call.name ?? "",
          args: call.arguments,
        }),
      );
      calls.length = 0;
      sent = true;
      this.queue.put({ id, delta: { role: "assistant", toolCalls } });
    };
    try {
      const messages = (await this.chatCtx.toProviderFormat("openai")) as object[];
      const tools = openaiTools(this.toolCtx);
      const options: StreamOptions = { ...this.#session, signal };
      for await (const event of this.#llm.stream(messages, tools, options)) {
        switch (event.type) {
          case "text":
            sent = true;
            this.queue.put({ id, delta: { role: "assistant", content: event.content } });
            break;
          case "tool_call":
            calls.push(event);
            break;
          case "usage": {
            flushCalls();
            const prompt = event.input_tokens + event.cache_read_tokens;
            this.queue.put({
              id,
              usage: {
                completionTokens: event.output_tokens,
                promptTokens: prompt,
                promptCachedTokens: event.cache_read_tokens,
                totalTokens: prompt + event.output_tokens,
              },
            });
            break;
          }
          case "finish":
            flushCalls();
            break;
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      throw liveKitError(err, sent);
    }
  }
}

/** LiveKit's function tools in OpenAI's format, sorted by name; null when there are none. */
function openaiTools(toolCtx: llm.ToolContext | undefined): object[] | null {
  if (toolCtx === undefined) return null;
  const tools = llm.sortedToolEntries(toolCtx).map(([name, tool]) => {
    const { $schema: _, ...parameters } = llm.toJsonSchema(tool.parameters, true, false) as Record<
      string,
      unknown
    >;
    return { type: "function", function: { name, description: tool.description, parameters } };
  });
  return tools.length > 0 ? tools : null;
}

/**
 * A brainline error as LiveKit's: APITimeoutError, APIStatusError or APIConnectionError (a
 * connection error, a stream that broke, every endpoint of a FallbackLLM failed), retryable unless
 * something was sent or the error is permanent. Classes are told by `name`: this bundle has its own
 * copy of brainline's runtime, and a user may load brainline's ESM and CommonJS builds side by
 * side. Anything else (a ConfigError) is not an API error: LiveKit reports it as unrecoverable and
 * does not retry it.
 */
function liveKitError(err: unknown, sent: boolean): unknown {
  if (!(err instanceof Error)) return err;
  const message = err.message;
  const retryable = !sent && !isPermanent(err);
  let mapped: Error;
  switch (err.name) {
    case "APITimeoutError":
      mapped = new APITimeoutError({ message, options: { retryable } });
      break;
    case "APIStatusError": {
      const { status, body, requestId } = err as Error & {
        status?: unknown;
        body?: unknown;
        requestId?: unknown;
      };
      mapped = new APIStatusError({
        message,
        options: {
          statusCode: typeof status === "number" ? status : -1,
          body: jsonObject(body),
          requestId: typeof requestId === "string" ? requestId : null,
          retryable,
        },
      });
      break;
    }
    case "APIConnectionError":
    case "StreamError":
    case "AllEndpointsFailedError":
      mapped = new APIConnectionError({ message, options: { retryable } });
      break;
    default:
      return err;
  }
  Object.defineProperty(mapped, "cause", { value: err, configurable: true, writable: true });
  return mapped;
}

/**
 * Whether the same request would fail the same way again (the rule of every adapter, Python's
 * brainline/integrations/_errors.py): a ConfigError, a 4xx status other than 408 and 429, a
 * FallbackLLM whose endpoints all failed so. Everything else (408, 429, 5xx, timeouts, connection
 * errors, a stream that broke) is worth a retry.
 */
function isPermanent(err: Error): boolean {
  switch (err.name) {
    case "ConfigError":
      return true;
    case "APIStatusError": {
      const status = (err as Error & { status?: unknown }).status;
      return (
        typeof status === "number" && status >= 400 && status < 500 && ![408, 429].includes(status)
      );
    }
    case "AllEndpointsFailedError": {
      const errors = (err as Error & { errors?: unknown }).errors;
      return (
        Array.isArray(errors) &&
        errors.length > 0 &&
        errors.every((each) => each instanceof Error && isPermanent(each))
      );
    }
    default:
      return false;
  }
}

/** The error body as LiveKit keeps it (an object or null): the JSON object brainline kept, if any. */
function jsonObject(body: unknown): object | null {
  if (typeof body !== "string" || !body.startsWith("{")) return null;
  try {
    const value: unknown = JSON.parse(body);
    return typeof value === "object" && value !== null ? value : null;
  } catch {
    return null;
  }
}
