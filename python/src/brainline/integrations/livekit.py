"""brainline as a LiveKit Agents LLM: `LLM(llm=OllamaLLM(model="llama3.2"))`.

Needs `livekit-agents>=1.8,<2` (`pip install "brainline[livekit]"`). A thin translation, mirrored
by typescript/src/integrations/livekit.ts: LiveKit's chat context and tools in, brainline's
stream() events out as LiveKit ChatChunks, brainline's errors as LiveKit's API errors. HTTP, SSE,
timeouts, retries before the first byte and cancellation are the engine's (docs/runtime.md);
LiveKit's LLMStream keeps its own retries (conn_options.max_retry) and metrics.
Anchor: livekit-plugins-openai's llm.py and livekit.agents.inference.llm.
"""

from __future__ import annotations

import json
import uuid
from contextlib import aclosing
from typing import Any

from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectionError,
    APIConnectOptions,
    APIStatusError,
    APITimeoutError,
    NotGivenOr,
)
from livekit.agents import llm as lk
from livekit.agents.types import NOT_GIVEN

from .._core import errors as brainline_errors
from .._core.errors import make_error
from .._core.events import ToolCallEvent, assemble_tool_calls
from ._errors import is_permanent
from ._provider import Provider

__all__ = ["LLM", "LLMStream", "livekit_error"]


class LLM(lk.LLM[Any]):
    """A brainline provider as a LiveKit `llm.LLM`, usable wherever LiveKit takes an LLM (an
    AgentSession, a FallbackAdapter).

    Args:
        llm: the brainline provider (or FallbackLLM) that streams the turns.
        call_id: the call's id, for the provider's session headers (one LLM per AgentSession).
        caller: the caller's number: hashed for the memory-scope header, never sent or logged raw.
        callee: the number called.

    Raises:
        ConfigError: `invalid_secret_type` when `llm` has no stream() (the value is not echoed).
    """

    def __init__(
        self,
        *,
        llm: Provider,
        call_id: str | None = None,
        caller: str | None = None,
        callee: str | None = None,
    ) -> None:
        if not callable(getattr(llm, "stream", None)):
            raise make_error(
                "invalid_secret_type", option="llm", expected="a brainline provider or FallbackLLM"
            )
        super().__init__()
        self._llm = llm
        self._session = {"call_id": call_id, "caller": caller, "callee": callee}
        self._label = "brainline.LLM"

    @property
    def llm(self) -> Provider:
        """The brainline provider this LLM streams from."""
        return self._llm

    @property
    def model(self) -> str:
        """The provider's model; a FallbackLLM's first endpoint's."""
        source: Any = self._llm
        config = getattr(source, "config", None)
        model = getattr(config, "model", None)
        if model is None and getattr(source, "llms", None):
            model = getattr(source.llms[0].config, "model", None)
        return model if isinstance(model, str) and model else "unknown"

    @property
    def provider(self) -> str:
        key = getattr(self._llm, "provider_key", None)
        return key if isinstance(key, str) and key else "brainline"

    def chat(
        self,
        *,
        chat_ctx: lk.ChatContext,
        tools: list[lk.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[lk.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> LLMStream:
        """One turn as a LiveKit LLMStream. `parallel_tool_calls`, `tool_choice` and
        `extra_kwargs` are not per-call options of brainline: set them on the provider
        (`extra_body`) instead."""
        return LLMStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)

    async def _prewarm_impl(self) -> None:
        """LiveKit's prewarm(): the provider's warmup() (GET {base_url}/models; never raises)."""
        await self._llm.warmup()

    async def aclose(self) -> None:
        """Also closes the provider: its running turns end, its idle connections close."""
        await super().aclose()
        await self._llm.aclose()


class LLMStream(lk.LLMStream):
    """One turn: brainline's events as ChatChunks. Text as it arrives; tool calls complete, all at
    once, when the turn ends; usage last. Reasoning (`<think>` included), progress and route
    events never reach LiveKit, so they are never spoken. aclose() cancels the turn: the
    connection closes at once."""

    _llm: LLM

    async def _run(self) -> None:
        chunk_id = f"brainline-{uuid.uuid4()}"
        # Once text or a tool call went out, LiveKit must not retry this turn (it would be heard
        # twice): the error says retryable=False.
        sent = False
        calls: list[ToolCallEvent] = []

        def flush_calls() -> None:
            nonlocal sent
            if not calls:
                return
            tool_calls = [
                lk.FunctionToolCall(
                    call_id=call.id or f"call_{uuid.uuid4()}",
                    name=call.name or "",
                    arguments=call.arguments,
                )
                for call in assemble_tool_calls(calls)
            ]
            calls.clear()
            sent = True
            delta = lk.ChoiceDelta(role="assistant", tool_calls=tool_calls)
            self._event_ch.send_nowait(lk.ChatChunk(id=chunk_id, delta=delta))

        try:
            messages, _ = self._chat_ctx.to_provider_format("openai")
            tools = lk.ToolContext(self._tools).parse_function_tools("openai", strict=False)
            stream = self._llm.llm.stream(messages, tools or None, **self._llm._session)
            async with aclosing(stream) as events:
                async for event in events:
                    kind = event["type"]
                    if kind == "text":
                        sent = True
                        delta = lk.ChoiceDelta(role="assistant", content=event["content"])
                        self._event_ch.send_nowait(lk.ChatChunk(id=chunk_id, delta=delta))
                    elif kind == "tool_call":
                        calls.append(event)
                    elif kind == "usage":
                        flush_calls()
                        prompt = event["input_tokens"] + event["cache_read_tokens"]
                        usage = lk.CompletionUsage(
                            completion_tokens=event["output_tokens"],
                            prompt_tokens=prompt,
                            prompt_cached_tokens=event["cache_read_tokens"],
                            total_tokens=prompt + event["output_tokens"],
                        )
                        self._event_ch.send_nowait(lk.ChatChunk(id=chunk_id, usage=usage))
                    elif kind == "finish":
                        flush_calls()
        except brainline_errors.BrainlineError as exc:
            mapped = livekit_error(exc, sent=sent)
            if mapped is exc:
                raise
            raise mapped from exc


def livekit_error(error: brainline_errors.BrainlineError, *, sent: bool) -> Exception:
    """A brainline error as LiveKit's: APITimeoutError, APIStatusError or APIConnectionError (a
    connection error, a stream that broke, every endpoint of a FallbackLLM failed), retryable
    unless something was sent or the error is permanent. Anything else (a ConfigError) is not an
    API error: it is returned as it is, and LiveKit reports it as unrecoverable without a retry.
    """
    retryable = not sent and not is_permanent(error)
    message = error.message
    if isinstance(error, brainline_errors.APITimeoutError):
        return APITimeoutError(message, retryable=retryable)
    if isinstance(error, brainline_errors.APIStatusError):
        request_id = getattr(error, "request_id", None)
        return APIStatusError(
            message,
            status_code=error.status or -1,
            request_id=request_id if isinstance(request_id, str) else None,
            body=_json_object(error.body),
            retryable=retryable,
        )
    if isinstance(
        error,
        (
            brainline_errors.APIConnectionError,
            brainline_errors.StreamError,
            brainline_errors.AllEndpointsFailedError,
        ),
    ):
        return APIConnectionError(message, retryable=retryable)
    return error


def _json_object(body: str) -> object | None:
    """The error body as LiveKit keeps it (an object or None): the JSON object brainline kept."""
    if not body.startswith("{"):
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
