"""brainline as a Pipecat LLM service: `BrainlineLLMService(llm=HermesLLM(...), call_id=...)`.

Needs `pipecat-ai>=1.14,<2` (`pip install "brainline[pipecat]"`). The service is a thin
translation of Pipecat's LLM frame contract (the one `BaseOpenAILLMService` follows) onto
brainline's events: the request body comes from the context through Pipecat's own OpenAI adapter;
text goes through `_push_llm_text` (TTFB / TTFAT metrics, turn filters), reasoning becomes
`LLMThought*` frames (never spoken), tool calls are assembled by brainline and run through
`run_function_calls`, usage becomes one `LLMTokenUsage`. Streaming, timeouts, retries and the
closing of the connection on an interruption are brainline's own (docs/runtime.md).
"""

from __future__ import annotations

import json
from contextlib import aclosing
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    FunctionCallFromLLM,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMThoughtEndFrame,
    LLMThoughtStartFrame,
    LLMThoughtTextFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings
from pipecat.utils.errors import ErrorCategory
from pipecat.utils.types import is_given

from .._core.errors import (
    AllEndpointsFailedError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    BrainlineError,
    ConfigError,
)
from .._core.events import Event, ToolCallEvent, UsageEvent, assemble_tool_calls
from ._errors import is_permanent
from ._provider import Provider

__all__ = ["BrainlineLLMService", "error_category"]


def error_category(error: BrainlineError) -> ErrorCategory:
    """Pipecat's category for a brainline error.

    401 / 403 are authentication / authorization and other 4xx but 408 / 429 an invalid request
    (permanent: Pipecat stops giving the service work); 429 is a rate limit, 5xx a server error,
    408, timeouts and lost connections are connectivity (transient).
    """
    if isinstance(error, ConfigError):
        return ErrorCategory.INVALID_REQUEST
    if isinstance(error, APIStatusError):
        if error.status == 401:
            return ErrorCategory.AUTHENTICATION
        if error.status == 403:
            return ErrorCategory.AUTHORIZATION
        if error.status == 429:
            return ErrorCategory.RATE_LIMIT
        if error.status == 408:
            return ErrorCategory.CONNECTIVITY
        if is_permanent(error):
            return ErrorCategory.INVALID_REQUEST
        return ErrorCategory.SERVER
    if isinstance(error, AllEndpointsFailedError):
        categories = [error_category(each) for each in error.errors]
        transient = [c for c in categories if not c.is_permanent]
        return (transient or categories or [ErrorCategory.CONNECTIVITY])[0]
    if isinstance(error, (APIConnectionError, APITimeoutError)) or error.code == "interrupted":
        return ErrorCategory.CONNECTIVITY
    return ErrorCategory.SERVER  # StreamError: the server failed mid-answer


def _token_usage(event: UsageEvent) -> LLMTokenUsage:
    # brainline's input_tokens excludes the cached ones; Pipecat's prompt_tokens includes them.
    prompt = event["input_tokens"] + event["cache_read_tokens"]
    return LLMTokenUsage(
        prompt_tokens=prompt,
        completion_tokens=event["output_tokens"],
        total_tokens=prompt + event["output_tokens"],
        cache_read_input_tokens=event["cache_read_tokens"],
    )


class BrainlineLLMService(LLMService):
    """A Pipecat LLM service whose completions are streamed by a brainline provider.

    Args:
        llm: the brainline provider (`HermesLLM(...)`, `OllamaLLM(...)`...) or a `FallbackLLM`.
            Its options (model, sampling, timeouts, retries, session headers) are the ones sent;
            Pipecat's sampling settings are not read.
        call_id, caller, callee: passed to every turn of this service (session id, memory scope;
            the raw caller never goes on the wire or into a log line).
        settings: Pipecat settings (e.g. `system_instruction`), applied over the defaults.
        **kwargs: Pipecat's `LLMService` arguments (`run_in_parallel`,
            `function_call_timeout_secs`...).
    """

    def __init__(
        self,
        *,
        llm: Provider,
        call_id: str | None = None,
        caller: str | None = None,
        callee: str | None = None,
        settings: LLMSettings | None = None,
        **kwargs: Any,
    ) -> None:
        config = getattr(llm, "config", None)
        defaults = LLMSettings(
            model=getattr(config, "model", None),
            system_instruction=None,
            temperature=None,
            max_tokens=None,
            top_p=None,
            top_k=None,
            frequency_penalty=None,
            presence_penalty=None,
            seed=None,
            filter_incomplete_user_turns=False,
            user_turn_completion_config=None,
        )
        if settings is not None:
            defaults.apply_update(settings)
        super().__init__(settings=defaults, **kwargs)
        self._llm = llm
        self._call_id = call_id
        self._caller = caller
        self._callee = callee

    @property
    def llm(self) -> Provider:
        """The brainline provider (or FallbackLLM) this service streams from."""
        return self._llm

    def can_generate_metrics(self) -> bool:
        return True

    async def _request(
        self, context: LLMContext, system_instruction: str | None
    ) -> tuple[list[Any], list[Any] | None]:
        params = await self.get_llm_adapter().get_llm_invocation_params(
            context, system_instruction=system_instruction, convert_developer_to_user=False
        )
        tools = params["tools"]
        # tool_choice has no brainline call argument: a provider's extra_body can carry it.
        return list(params["messages"]), (list(tools) if is_given(tools) and tools else None)

    def _system_instruction(self) -> str | None:
        value = self._settings.system_instruction
        return value if isinstance(value, str) else None

    async def run_inference(
        self,
        context: LLMContext,
        max_tokens: int | None = None,
        system_instruction: str | None = None,
        response_schema: dict[str, Any] | None = None,
    ) -> str | None:
        """One completion outside the pipeline (Pipecat's summaries, evals); no tools are run.

        `max_tokens` and `response_schema` are not sent: they are the brainline provider's
        options (`max_tokens`, `extra_body`).
        """
        self._check_response_schema(response_schema)
        messages, tools = await self._request(
            context, system_instruction or self._system_instruction()
        )
        turn = await self._llm.complete(
            messages, tools, call_id=self._call_id, caller=self._caller, callee=self._callee
        )
        return turn.text or None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        try:
            await self.push_frame(LLMFullResponseStartFrame())
            await self.start_processing_metrics()
            await self._process_context(frame.context)
        except BrainlineError as exc:
            if isinstance(exc, APITimeoutError):
                await self._call_event_handler("on_completion_timeout")
            await self.push_error(
                error_msg=f"brainline: {exc}", exception=exc, category=error_category(exc)
            )
        finally:
            await self.stop_processing_metrics()
            await self.push_frame(LLMFullResponseEndFrame())

    async def _process_context(self, context: LLMContext) -> None:
        messages, tools = await self._request(context, self._system_instruction())
        calls: list[ToolCallEvent] = []
        usage: UsageEvent | None = None
        thinking = False
        first = True
        await self.start_ttfb_metrics()
        # An interruption cancels this task: the CancelledError goes through the stream, which
        # closes its connection at once; aclosing() closes it on any other way out too.
        stream = self._llm.stream(
            messages, tools, call_id=self._call_id, caller=self._caller, callee=self._callee
        )
        try:
            async with aclosing(stream) as events:
                async for event in events:
                    kind = event["type"]
                    if first and kind in ("text", "reasoning", "tool_call"):
                        first = False
                        await self.stop_ttfb_metrics()
                    if thinking and kind != "reasoning":
                        thinking = False
                        await self.push_frame(LLMThoughtEndFrame())
                    if kind == "text":
                        await self._push_llm_text(event["content"])
                    elif kind == "reasoning":
                        if not thinking:
                            thinking = True
                            await self.push_frame(LLMThoughtStartFrame())
                        await self.push_frame(LLMThoughtTextFrame(text=event["content"]))
                    elif kind == "tool_call":
                        if not calls:
                            # A turn that only calls tools has no answer text: the call is
                            # the answer, as in Pipecat's own OpenAI service.
                            await self.stop_ttfat_metrics()
                        calls.append(event)
                    elif kind == "usage":
                        usage = event
                    else:
                        _log_other(event)
        finally:
            if thinking:
                await self.push_frame(LLMThoughtEndFrame())
            if usage is not None:  # reported even when the turn was interrupted
                await self.start_llm_usage_metrics(_token_usage(usage))
        if calls:
            await self.run_function_calls(self._function_calls(calls, context))

    def _function_calls(
        self, events: list[ToolCallEvent], context: LLMContext
    ) -> list[FunctionCallFromLLM]:
        calls = []
        for call in assemble_tool_calls(events):
            try:
                arguments = json.loads(call.arguments or "{}")
            except json.JSONDecodeError:
                arguments = None
            if not call.name or not isinstance(arguments, dict):
                logger.warning(f"{self}: skipping tool call {call.name!r}: arguments not an object")
                continue
            calls.append(
                FunctionCallFromLLM(
                    function_name=call.name,
                    tool_call_id=call.id or f"call_{call.index}",
                    arguments=arguments,
                    context=context,
                )
            )
        return calls


def _log_other(event: Event) -> None:
    if event["type"] == "route":
        logger.debug(f"brainline: answered by endpoint {event['endpoint']} ({event['reason']})")
