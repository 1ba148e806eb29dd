"""Adapters that make a brainline provider the LLM of a voice framework.

Each adapter lives in its own module and imports its framework there only, so `import brainline`
(and `import brainline.integrations`) never loads a framework:

- `brainline.integrations.pipecat`: `BrainlineLLMService`, a Pipecat `LLMService`
  (`pip install "brainline[pipecat]"`).
- `brainline.integrations.livekit`: `LLM`, a LiveKit Agents `llm.LLM`
  (`pip install "brainline[livekit]"`).

getpatter needs no adapter: a brainline provider (or FallbackLLM) already is a getpatter
`LLMProvider` and runs in its `LLMLoop` as it is (tests/integrations/patter).

The adapters translate and nothing more: requests, streaming, timeouts, retries and cancellation
are brainline's own (docs/runtime.md), the same under every framework.
"""
