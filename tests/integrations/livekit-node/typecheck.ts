// Compiled (never run) by `npm run typecheck` against the real @livekit/agents types: brainline's
// declarations for brainline/livekit must fit where LiveKit takes an LLM. The package itself is
// built against a small local declaration of @livekit/agents (typescript/src/integrations/
// livekit-agents.d.ts); this is where a drift between the two would show.
import { type APIConnectOptions, llm, voice } from "@livekit/agents";
import { CustomLLM } from "brainline";
import { type BrainlineProvider, LLM, type LLMOptions, type LLMStream } from "brainline/livekit";

const provider: BrainlineProvider = new CustomLLM({ baseUrl: "http://127.0.0.1:9/v1", model: "m" });
const options: LLMOptions = { llm: provider, callId: "room-1" };
const brainline = new LLM(options);

const asLiveKit: llm.LLM = brainline;
const fallback = new llm.FallbackAdapter({ llms: [brainline, asLiveKit] });
const connOptions: APIConnectOptions = { maxRetry: 0, retryIntervalMs: 0, timeoutMs: 1000 };
const stream: llm.LLMStream = brainline.chat({
  chatCtx: llm.ChatContext.empty(),
  toolCtx: {},
  connOptions,
  toolChoice: "auto",
  parallelToolCalls: true,
});
const ours: LLMStream = brainline.chat({ chatCtx: llm.ChatContext.empty() });
const collected: Promise<llm.CollectedResponse> = ours.collect();
const chunk: Promise<IteratorResult<llm.ChatChunk>> = stream.next();
const session = new voice.AgentSession({ llm: brainline });

export { chunk, collected, fallback, session };
