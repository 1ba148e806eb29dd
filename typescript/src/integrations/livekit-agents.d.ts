// The part of @livekit/agents 1.9 that brainline/livekit uses, declared here so that the package's
// own toolchain (tsc, tsup's .d.ts build) needs no @livekit/agents install: it is an optional peer
// dependency, installed only in tests/integrations/livekit-node/. The built .d.ts keeps
// `import ... from "@livekit/agents"`, so users type-check against the real package, and that
// folder's `typecheck` step compiles a consumer against the real types to catch any drift here.

declare module "@livekit/agents" {
  export interface APIConnectOptions {
    maxRetry: number;
    retryIntervalMs: number;
    timeoutMs: number;
  }
  export const DEFAULT_API_CONNECT_OPTIONS: APIConnectOptions;

  interface APIErrorOptions {
    body?: object | null;
    retryable?: boolean;
  }
  export class APIError extends Error {
    readonly body: object | null;
    readonly retryable: boolean;
    constructor(message: string, options?: APIErrorOptions);
  }
  export class APIStatusError extends APIError {
    readonly statusCode: number;
    readonly requestId: string | null;
    constructor(args: {
      message?: string;
      options?: APIErrorOptions & { statusCode?: number; requestId?: string | null };
    });
  }
  export class APIConnectionError extends APIError {
    constructor(args: { message?: string; options?: APIErrorOptions });
  }
  export class APITimeoutError extends APIConnectionError {
    constructor(args: { message?: string; options?: APIErrorOptions });
  }

  export namespace llm {
    type ChatRole = "developer" | "system" | "user" | "assistant";
    type ToolChoice =
      | "auto"
      | "none"
      | "required"
      | { type: "function"; function: { name: string } };

    class FunctionCall {
      callId: string;
      args: string;
      name: string;
      static create(params: {
        callId: string;
        name: string;
        args: string;
        id?: string;
        createdAt?: number;
        extra?: Record<string, unknown>;
      }): FunctionCall;
    }

    class ChatContext {
      toProviderFormat(format: "openai", injectDummyUserMessage?: boolean): Promise<unknown>;
    }

    interface FunctionTool {
      name: string;
      description: string;
      parameters: unknown;
    }
    class ToolContext {
      get functionTools(): Record<string, FunctionTool>;
    }
    type ToolContextLike = ToolContext | readonly unknown[] | { readonly [name: string]: unknown };
    function toToolContext(input: ToolContextLike | undefined): ToolContext | undefined;
    function sortedToolEntries(toolCtx: ToolContext): Array<[string, FunctionTool]>;
    function toJsonSchema(schema: unknown, isOpenai?: boolean, strict?: boolean): object;

    interface ChoiceDelta {
      role: ChatRole;
      content?: string;
      toolCalls?: FunctionCall[];
      extra?: Record<string, unknown>;
    }
    interface CompletionUsage {
      completionTokens: number;
      promptTokens: number;
      promptCachedTokens: number;
      cacheCreationTokens?: number;
      totalTokens: number;
      serviceTier?: string;
    }
    interface ChatChunk {
      id: string;
      delta?: ChoiceDelta;
      usage?: CompletionUsage;
    }

    interface ChatOptions {
      chatCtx: ChatContext;
      toolCtx?: ToolContextLike;
      connOptions?: APIConnectOptions;
      parallelToolCalls?: boolean;
      toolChoice?: ToolChoice;
      extraKwargs?: Record<string, unknown>;
    }

    abstract class LLM {
      constructor();
      abstract label(): string;
      get model(): string;
      get provider(): string;
      abstract chat(options: ChatOptions): LLMStream;
      prewarm(): void;
      protected _prewarmImpl(signal: AbortSignal): Promise<void>;
      aclose(): Promise<void>;
      on(event: string, listener: (...args: unknown[]) => void): this;
      emit(event: string, ...args: unknown[]): boolean;
    }

    abstract class LLMStream implements AsyncIterableIterator<ChatChunk> {
      protected queue: { put(item: ChatChunk): void };
      protected closed: boolean;
      protected abortController: AbortController;
      constructor(
        llm: LLM,
        options: {
          chatCtx: ChatContext;
          toolCtx?: ToolContextLike;
          connOptions: APIConnectOptions;
        },
      );
      protected abstract run(): Promise<void>;
      get toolCtx(): ToolContext | undefined;
      get chatCtx(): ChatContext;
      get connOptions(): APIConnectOptions;
      next(): Promise<IteratorResult<ChatChunk>>;
      close(): void;
      [Symbol.asyncIterator](): LLMStream;
    }
  }
}
