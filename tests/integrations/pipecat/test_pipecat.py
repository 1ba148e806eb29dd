"""BrainlineLLMService inside real Pipecat pipelines (pipecat.tests.utils.run_test), against
brainline's mock server on 127.0.0.1. Nothing of Pipecat is mocked."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    ErrorFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMServiceMetadataFrame,
    LLMTextFrame,
    LLMThoughtEndFrame,
    LLMThoughtStartFrame,
    LLMThoughtTextFrame,
    MetricsFrame,
    TextFrame,
)
from pipecat.metrics.metrics import LLMUsageMetricsData, TTFBMetricsData
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.services.llm_service import FunctionCallParams
from pipecat.services.settings import LLMSettings
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.utils.errors import ErrorCategory

from brainline import FallbackLLM, HermesLLM, OpenAICompatibleLLM
from brainline._core.errors import BrainlineError, make_error
from brainline.integrations.pipecat import BrainlineLLMService, error_category
from brainline.testing import MockServer

USER = [{"role": "user", "content": "What is the weather in Rome?"}]
WEATHER = FunctionSchema(
    name="get_weather",
    description="Weather in a city",
    properties={"city": {"type": "string"}},
    required=["city"],
)


def _llm(url: str, **options: Any) -> OpenAICompatibleLLM:
    return OpenAICompatibleLLM(base_url=url, model="mock-model", max_retries=0, **options)


def _texts(frames: Any) -> list[str]:
    """What a TTS service downstream would speak: every TextFrame (LLMTextFrame included)."""
    return [f.text for f in frames if isinstance(f, TextFrame)]


def _kinds(frames: Any) -> list[type]:
    """The frame types of the turn, without the metadata frame the service sends at start."""
    return [type(f) for f in frames if not isinstance(f, (LLMServiceMetadataFrame, MetricsFrame))]


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"data": {"id": "c", "object": "chat.completion.chunk", "choices": [choice]}}


def _tool_pipeline(service: BrainlineLLMService, context: LLMContext) -> Pipeline:
    # The assistant aggregator writes each call and result into the context and, after the
    # group's last result, sends the context back up to the service: the follow-up turn.
    return Pipeline([service, LLMContextAggregatorPair(context).assistant()])


async def test_a_text_turn_streams_in_order_through_the_text_path() -> None:
    server = MockServer({"text": ["Sunny", " and", " warm."]})
    async with server as url:
        service = BrainlineLLMService(
            llm=_llm(url), settings=LLMSettings(system_instruction="Be brief.")
        )
        down, up = await run_test(service, frames_to_send=[LLMContextFrame(LLMContext(USER))])
    assert _kinds(down) == [
        LLMFullResponseStartFrame,
        LLMTextFrame,
        LLMTextFrame,
        LLMTextFrame,
        LLMFullResponseEndFrame,
    ]
    assert _texts(down) == ["Sunny", " and", " warm."]
    assert [f for f in up if isinstance(f, ErrorFrame)] == []
    [request] = server.requests
    assert request.json["model"] == "mock-model"
    assert request.json["messages"] == [{"role": "system", "content": "Be brief."}, *USER]
    assert "tools" not in request.json


async def test_the_session_arguments_reach_the_wire() -> None:
    server = MockServer({"text": ["ok"]})
    async with server as url:
        llm = HermesLLM(api_key="k", base_url=url, max_retries=0, session_key_from="caller_hash")
        service = BrainlineLLMService(llm=llm, call_id="call-42", caller="+15551234567")
        await run_test(service, frames_to_send=[LLMContextFrame(LLMContext(USER))])
    [request] = server.requests
    config = llm.config
    assert request.header(config.session_id_header) == f"{config.session_id_prefix}call-42"
    assert request.header(config.session_key_header)
    assert "+15551234567" not in repr(request.headers) + request.body.decode()


async def test_a_tool_call_runs_the_registered_function_and_the_follow_up_carries_it() -> None:
    seen: list[dict[str, Any]] = []

    async def get_weather(params: FunctionCallParams) -> None:
        seen.append(dict(params.arguments))
        await params.result_callback({"forecast": "sunny, 24 C"})

    script = [
        {
            "tool_calls": [
                {"id": "call_1", "name": "get_weather", "arguments": ['{"city"', ':"Rome"}']}
            ]
        },
        {"text": ["It is sunny."]},
    ]
    server = MockServer(script)
    async with server as url:
        service = BrainlineLLMService(llm=_llm(url))
        service.register_function("get_weather", get_weather)
        context = LLMContext(list(USER), tools=ToolsSchema(standard_tools=[WEATHER]))
        await run_test(
            _tool_pipeline(service, context),
            frames_to_send=[LLMContextFrame(context), SleepFrame(0.5)],
        )
    assert seen == [{"city": "Rome"}]
    first, follow_up = server.requests
    [tool] = first.json["tools"]
    assert tool["function"]["name"] == "get_weather"
    assert tool["function"]["parameters"]["properties"] == {"city": {"type": "string"}}
    messages = follow_up.json["messages"]
    assert messages[-2]["tool_calls"][0]["id"] == "call_1"
    assert messages[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert messages[-1]["role"] == "tool"
    assert messages[-1]["tool_call_id"] == "call_1"
    assert json.loads(messages[-1]["content"]) == {"forecast": "sunny, 24 C"}
    # The follow-up's answer went through the aggregator into the context.
    assert context.get_messages()[-1] == {"role": "assistant", "content": "It is sunny."}


async def test_parallel_calls_in_one_chunk_with_the_id_apart_from_the_name_all_run() -> None:
    # Pipecat's own OpenAI path reads only tool_calls[0] of a chunk and keeps an id only when it
    # comes with the name (pipecat #4987); brainline assembles every call whole.
    both = [
        {"index": 0, "id": "call_a", "type": "function", "function": {"arguments": ""}},
        {"index": 1, "id": "call_b", "type": "function", "function": {"arguments": ""}},
    ]
    names = [
        {"index": 0, "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        {"index": 1, "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
    ]
    turn = [_chunk({"role": "assistant", "tool_calls": both}), _chunk({"tool_calls": names})]
    turn += [_chunk({}, "tool_calls"), "data: [DONE]\n\n"]
    seen: list[tuple[str, str]] = []

    async def get_weather(params: FunctionCallParams) -> None:
        seen.append((params.tool_call_id, params.arguments["city"]))
        await params.result_callback("sunny")

    server = MockServer([{"sse": turn}, {"text": ["Both sunny."]}])
    async with server as url:
        service = BrainlineLLMService(llm=_llm(url))
        service.register_function("get_weather", get_weather)
        context = LLMContext(list(USER), tools=ToolsSchema(standard_tools=[WEATHER]))
        await run_test(
            _tool_pipeline(service, context),
            frames_to_send=[LLMContextFrame(context), SleepFrame(0.5)],
        )
    assert sorted(seen) == [("call_a", "Rome"), ("call_b", "Oslo")]
    results = [m for m in server.requests[1].json["messages"] if m["role"] == "tool"]
    assert sorted(m["tool_call_id"] for m in results) == ["call_a", "call_b"]


async def test_reasoning_becomes_thought_frames_and_never_text() -> None:
    script = {
        "reasoning": ["The user wants", " the weather."],
        "text": ["<think>secret plan</think>", "Sunny."],
    }
    async with MockServer(script) as url:
        down, _ = await run_test(
            BrainlineLLMService(llm=_llm(url)),
            frames_to_send=[LLMContextFrame(LLMContext(USER))],
        )
    assert _kinds(down) == [
        LLMFullResponseStartFrame,
        LLMThoughtStartFrame,
        LLMThoughtTextFrame,
        LLMThoughtTextFrame,
        LLMThoughtTextFrame,
        LLMThoughtEndFrame,
        LLMTextFrame,
        LLMFullResponseEndFrame,
    ]
    assert _texts(down) == ["Sunny."]
    thoughts = [f.text for f in down if isinstance(f, LLMThoughtTextFrame)]
    assert thoughts == ["The user wants", " the weather.", "secret plan"]


async def test_usage_and_ttfb_are_reported_as_pipecat_metrics() -> None:
    script = {
        "text": ["Hi"],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }
    async with MockServer(script) as url:
        down, _ = await run_test(
            BrainlineLLMService(llm=_llm(url)),
            frames_to_send=[LLMContextFrame(LLMContext(USER))],
            pipeline_params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        )
    data = [d for f in down if isinstance(f, MetricsFrame) for d in f.data]
    [usage] = [d.value for d in data if isinstance(d, LLMUsageMetricsData)]
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 3, 15)
    assert usage.cache_read_input_tokens == 4
    assert any(isinstance(d, TTFBMetricsData) and d.value > 0 for d in data)


class _InterruptionClock(BaseObserver):
    """When the InterruptionFrame first moved through the pipeline (time.monotonic())."""

    at: float | None = None

    async def on_push_frame(self, data: FramePushed) -> None:
        if isinstance(data.frame, InterruptionFrame) and self.at is None:
            self.at = time.monotonic()


async def test_an_interruption_cancels_the_turn_and_closes_the_connection() -> None:
    # The server sends one chunk, then holds the connection open without a byte more.
    server = MockServer({"text": ["Once upon", " a time", " never heard"], "stall": 1})
    clock = _InterruptionClock()
    async with server as url:
        # The 3 s read timeout only bounds the test when the interruption fails to end the turn.
        service = BrainlineLLMService(llm=_llm(url, timeout=3))
        frames = [LLMContextFrame(LLMContext(USER)), SleepFrame(0.5), InterruptionFrame()]
        down, _ = await asyncio.wait_for(
            run_test(service, frames_to_send=frames, observers=[clock]), 10
        )
        closed = await server.wait_for_async(lambda: server.requests[-1].client_closed, 1.0)
        request = server.requests[-1]
    assert closed, "the server never saw the connection close"
    assert clock.at is not None
    assert request.closed_at - clock.at < 1.0
    assert _texts(down) == ["Once upon"]


async def test_a_401_is_a_permanent_authentication_error() -> None:
    script = {"status": 401, "json": {"error": {"message": "bad key"}}}
    async with MockServer(script) as url:
        service = BrainlineLLMService(llm=_llm(url, api_key="wrong"))
        down, up = await run_test(service, frames_to_send=[LLMContextFrame(LLMContext(USER))])
    assert _kinds(down) == [LLMFullResponseStartFrame, LLMFullResponseEndFrame]
    [error] = [f for f in up if isinstance(f, ErrorFrame)]
    assert error.category is ErrorCategory.AUTHENTICATION
    assert error.category.is_permanent
    assert "HTTP 401" in error.error
    assert "wrong" not in error.error
    assert not service.is_usable


async def test_a_503_is_a_transient_server_error() -> None:
    script = {"status": 503, "json": {"error": {"message": "overloaded"}}}
    async with MockServer(script) as url:
        service = BrainlineLLMService(llm=_llm(url))
        _, up = await run_test(service, frames_to_send=[LLMContextFrame(LLMContext(USER))])
    [error] = [f for f in up if isinstance(f, ErrorFrame)]
    assert error.category is ErrorCategory.SERVER
    assert service.is_usable


async def test_a_fallback_llm_works_as_the_llm() -> None:
    server = MockServer(
        {
            "routes": {
                "/dead/": {"status": 503, "json": {"error": {"message": "down"}}},
                "/live/": {"text": ["From", " the backup."]},
            }
        }
    )
    async with server as url:
        root = url.removesuffix("/v1")
        llm = FallbackLLM([_llm(f"{root}/dead/v1"), _llm(f"{root}/live/v1")])
        down, up = await run_test(
            BrainlineLLMService(llm=llm), frames_to_send=[LLMContextFrame(LLMContext(USER))]
        )
    assert _texts(down) == ["From", " the backup."]
    assert [f for f in up if isinstance(f, ErrorFrame)] == []
    assert [r.route for r in server.requests] == ["/dead/", "/live/"]


async def test_a_refused_connection_is_a_transient_connectivity_error() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    service = BrainlineLLMService(llm=_llm(f"http://127.0.0.1:{port}/v1"))
    _, up = await run_test(service, frames_to_send=[LLMContextFrame(LLMContext(USER))])
    [error] = [f for f in up if isinstance(f, ErrorFrame)]
    assert error.category is ErrorCategory.CONNECTIVITY
    assert service.is_usable


@pytest.mark.parametrize(
    ("error", "category"),
    [
        (make_error("http_status", status=401, url="u", detail="d"), ErrorCategory.AUTHENTICATION),
        (make_error("http_status", status=403, url="u", detail="d"), ErrorCategory.AUTHORIZATION),
        (make_error("http_status", status=402, url="u", detail="d"), ErrorCategory.INVALID_REQUEST),
        (make_error("http_status", status=404, url="u", detail="d"), ErrorCategory.INVALID_REQUEST),
        (make_error("http_status", status=408, url="u", detail="d"), ErrorCategory.CONNECTIVITY),
        (make_error("http_status", status=429, url="u", detail="d"), ErrorCategory.RATE_LIMIT),
        (make_error("http_status", status=502, url="u", detail="d"), ErrorCategory.SERVER),
        (make_error("invalid_messages"), ErrorCategory.INVALID_REQUEST),
        (make_error("connection_error", url="u"), ErrorCategory.CONNECTIVITY),
        (make_error("first_token_timeout", url="u", timeout=2), ErrorCategory.CONNECTIVITY),
        (make_error("interrupted"), ErrorCategory.CONNECTIVITY),
        (make_error("server_error", detail="d"), ErrorCategory.SERVER),
        (make_error("malformed", detail="d"), ErrorCategory.SERVER),
    ],
    ids=lambda value: getattr(value, "code", None) or getattr(value, "name", None),
)
def test_error_categories(error: BrainlineError, category: ErrorCategory) -> None:
    assert error_category(error) is category


def test_a_fallback_that_failed_everywhere_is_permanent_only_when_every_endpoint_was() -> None:
    unauthorized = make_error("http_status", status=401, url="u", detail="d")
    refused = make_error("connection_error", url="u")
    both = make_error("all_endpoints_failed", detail="d", errors=[unauthorized, refused])
    assert error_category(both) is ErrorCategory.CONNECTIVITY
    only_401 = make_error("all_endpoints_failed", detail="d", errors=[unauthorized])
    assert error_category(only_401) is ErrorCategory.AUTHENTICATION


async def test_run_inference_is_one_completion_outside_the_pipeline() -> None:
    server = MockServer({"reasoning": ["hm"], "text": ["A short", " summary."]})
    async with server as url:
        service = BrainlineLLMService(llm=_llm(url), call_id="c1")
        text = await service.run_inference(LLMContext(USER), system_instruction="Summarize.")
    assert text == "A short summary."
    [request] = server.requests
    assert request.json["messages"] == [{"role": "system", "content": "Summarize."}, *USER]
