// brainline: stream any OpenAI-compatible /chat/completions endpoint into a voice or agent pipeline.
// The provider classes are generated from spec/ (docs/reference/providers.md); the runtime that
// streams, decodes and cancels is in ./core. This module only re-exports the public surface.

export { BaseLLM, type StreamOptions } from "./core/client.js";
export {
  APIConnectionError,
  APIStatusError,
  APITimeoutError,
  AllEndpointsFailedError,
  BrainlineError,
  ConfigError,
  StreamError,
} from "./core/errors.js";
export {
  assembleToolCalls,
  type Event,
  type FinishEvent,
  type ProgressEvent,
  type ReasoningEvent,
  type RouteEvent,
  type RouteFailure,
  type RouteReason,
  type TextEvent,
  type ToolCall,
  type ToolCallEvent,
  type Turn,
  type Usage,
  type UsageEvent,
} from "./core/events.js";
export { FallbackLLM } from "./core/fallback.js";
export { hashCaller, type SessionContext } from "./core/session.js";
export * from "./generated/index.js";
export type { FallbackConfig, FallbackOptions } from "./generated/fallback.js";
