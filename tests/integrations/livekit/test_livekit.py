"""brainline.integrations.livekit.LLM inside real LiveKit Agents (livekit-agents), against
brainline's mock server on 127.0.0.1. Nothing of LiveKit is mocked."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
from livekit.agents import (
    Agent,
    AgentSession,
    APIConnectionError,
    APIConnectOptions,
    APIStatusError,
    APITimeoutError,
    function_tool,
    llm,
)
from livekit.agents.metrics import LLMMetrics

from brainline import ConfigError, FallbackLLM, OpenAICompatibleLLM
from brainline.integrations.livekit import LLM
from brainline.testing import MockServer

NO_RETRY = APIConnectOptions(max_retry=0)


def _brain(url: str, **options: Any) -> LLM:
    return LLM(llm=OpenAICompatibleLLM(base_url=url, model="mock-model", max_retries=0, **options))


def _context(text: str = "What is the weather in Rome?") -> llm.ChatContext:
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="system", content="Be brief.")
    ctx.add_message(role="user", content=text)
    return ctx


def _closed_url() -> str:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"data": {"id": "c", "object": "chat.completion.chunk", "choices": [choice]}}


@function_tool
async def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: the city
    """
    return f"sunny in {city}"


async def test_chat_streams_text_as_it_arrives() -> None:
    server = MockServer({"text": ["Sunny", " and", " warm."]})
    async with server as url:
        brain = _brain(url)
        chunks = [chunk async for chunk in brain.chat(chat_ctx=_context(), conn_options=NO_RETRY)]
        await brain.aclose()
    assert [c.delta.content for c in chunks if c.delta] == ["Sunny", " and", " warm."]
    assert all(c.delta.role == "assistant" for c in chunks if c.delta)
    [request] = server.requests
    assert request.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the weather in Rome?"},
    ]
    assert "tools" not in request.json
    assert brain.model == "mock-model"
    assert brain.provider == "openai_compatible"


async def test_parallel_tool_calls_in_one_chunk_come_out_complete() -> None:
    calls = [
        {"index": i, "id": f"call_{i}", "type": "function", "function": {"name": "get_weather"}}
        for i in range(3)
    ]
    args = [
        {"index": i, "function": {"arguments": json.dumps({"city": city})}}
        for i, city in enumerate(["Rome", "Oslo", "Lima"])
    ]
    turn = [_chunk({"role": "assistant", "tool_calls": calls}), _chunk({"tool_calls": args})]
    turn += [_chunk({}, "tool_calls"), "data: [DONE]\n\n"]
    server = MockServer({"sse": turn})
    async with server as url:
        brain = _brain(url)
        stream = brain.chat(chat_ctx=_context(), tools=[get_weather], conn_options=NO_RETRY)
        response = await stream.collect()
    assert [(c.call_id, c.name, json.loads(c.arguments)) for c in response.tool_calls] == [
        ("call_0", "get_weather", {"city": "Rome"}),
        ("call_1", "get_weather", {"city": "Oslo"}),
        ("call_2", "get_weather", {"city": "Lima"}),
    ]
    [tool] = server.requests[0].json["tools"]
    assert tool["function"]["name"] == "get_weather"
    assert tool["function"]["parameters"]["properties"]["city"]["type"] == "string"


async def test_an_agent_runs_the_tool_and_the_follow_up_turn_carries_its_result() -> None:
    script = [
        {
            "tool_calls": [
                {"id": "call_1", "name": "get_weather", "arguments": ['{"city"', ':"Rome"}']}
            ]
        },
        {"text": ["It is sunny in Rome."]},
    ]
    server = MockServer(script)
    async with server as url:
        brain = _brain(url)
        agent = Agent(instructions="Be brief.", tools=[get_weather])
        async with AgentSession(llm=brain) as session:
            await session.start(agent)
            result = await session.run(user_input="What is the weather in Rome?")
        await brain.aclose()
    result.expect.next_event().is_function_call(name="get_weather", arguments={"city": "Rome"})
    result.expect.next_event().is_function_call_output(output="sunny in Rome")
    result.expect.next_event().is_message(role="assistant")
    prewarm, first, follow_up = server.requests  # AgentSession prewarms: the provider's warmup()
    assert (prewarm.method, prewarm.path) == ("GET", "/v1/models")
    assert first.json["tools"][0]["function"]["name"] == "get_weather"
    call, output = follow_up.json["messages"][-2:]
    assert call["tool_calls"][0]["id"] == "call_1"
    assert output == {"role": "tool", "tool_call_id": "call_1", "content": "sunny in Rome"}


async def test_usage_and_livekit_metrics() -> None:
    script = {
        "text": ["Hi", " there"],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }
    metrics: list[LLMMetrics] = []
    async with MockServer(script) as url:
        brain = _brain(url)
        brain.on("metrics_collected", metrics.append)
        stream = brain.chat(chat_ctx=_context(), conn_options=NO_RETRY)
        response = await stream.collect()
        await asyncio.sleep(0)  # the metrics task reports after the last chunk
    assert response.text == "Hi there"
    usage = response.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 3, 15)
    assert usage.prompt_cached_tokens == 4
    [metric] = metrics
    assert metric.ttft > 0
    assert metric.completion_tokens == 3
    assert metric.tokens_per_second > 0


async def test_reasoning_never_reaches_livekit() -> None:
    script = {"reasoning": ["secret plan"], "text": ["<think>more plan</think>", "Sunny."]}
    async with MockServer(script) as url:
        response = await _brain(url).chat(chat_ctx=_context(), conn_options=NO_RETRY).collect()
    assert response.text == "Sunny."


async def test_aclose_cancels_the_turn_and_closes_the_connection() -> None:
    server = MockServer({"text": ["Once upon", " a time"], "stall": 1})
    async with server as url:
        stream = _brain(url, timeout=5).chat(chat_ctx=_context(), conn_options=NO_RETRY)
        first = await asyncio.wait_for(anext(stream), 5)
        assert first.delta is not None and first.delta.content == "Once upon"
        closed_at = asyncio.get_running_loop().time()
        await asyncio.wait_for(stream.aclose(), 5)
        closed = await server.wait_for_async(lambda: server.requests[-1].client_closed, 1.0)
        request = server.requests[-1]
    assert closed, "the server never saw the connection close"
    assert request.closed_at - closed_at < 1.0


async def test_a_dead_endpoint_fails_over_under_livekits_fallback_adapter() -> None:
    async with MockServer({"text": ["From", " the backup."]}) as url:
        dead, live = _brain(_closed_url()), _brain(url)
        adapter = llm.FallbackAdapter([dead, live])
        changes: list[tuple[LLM, bool]] = []
        adapter.on("llm_availability_changed", lambda ev: changes.append((ev.llm, ev.available)))
        response = await adapter.chat(chat_ctx=_context()).collect()
        await adapter.aclose()
    assert response.text == "From the backup."
    assert changes[0] == (dead, False)


async def test_a_fallback_llm_works_as_the_llm() -> None:
    async with MockServer({"text": ["From", " the backup."]}) as url:
        fallback = FallbackLLM(
            [
                OpenAICompatibleLLM(base_url=_closed_url(), model="a", max_retries=0),
                OpenAICompatibleLLM(base_url=url, model="b", max_retries=0),
            ]
        )
        brain = LLM(llm=fallback)
        response = await brain.chat(chat_ctx=_context(), conn_options=NO_RETRY).collect()
    assert response.text == "From the backup."
    assert brain.model == "a"


async def _failure(script: Any, **options: Any) -> BaseException:
    async with MockServer(script) as url:
        stream = _brain(url, **options).chat(chat_ctx=_context(), conn_options=NO_RETRY)
        with pytest.raises(Exception) as caught:
            await asyncio.wait_for(stream.collect(), 10)
    return caught.value


async def test_a_401_is_a_status_error_never_retried() -> None:
    error = await _failure({"status": 401, "json": {"error": {"message": "bad key"}}})
    assert isinstance(error, APIStatusError)
    assert (error.status_code, error.retryable) == (401, False)
    assert error.body == {"error": {"message": "bad key"}}


async def test_a_503_and_a_429_are_retryable() -> None:
    for status in (503, 429):
        error = await _failure({"status": status, "json": {"error": {"message": "busy"}}})
        assert isinstance(error, APIStatusError)
        assert (error.status_code, error.retryable) == (status, True)


async def test_a_refused_connection_is_a_retryable_connection_error() -> None:
    stream = _brain(_closed_url()).chat(chat_ctx=_context(), conn_options=NO_RETRY)
    with pytest.raises(APIConnectionError) as caught:
        await stream.collect()
    assert caught.value.retryable
    assert not isinstance(caught.value, APITimeoutError)


async def test_a_silent_server_is_a_retryable_timeout() -> None:
    error = await _failure({"text": ["never"], "stall": "headers"}, first_token_timeout=0.3)
    assert isinstance(error, APITimeoutError)
    assert error.retryable


async def test_an_error_after_text_went_out_is_not_retryable() -> None:
    turn = [_chunk({"role": "assistant", "content": "Sunny"}), {"event": "error", "data": "boom"}]
    error = await _failure({"sse": turn})
    assert isinstance(error, APIConnectionError)
    assert not error.retryable


async def test_livekit_retries_a_retryable_failure_through_brainline() -> None:
    server = MockServer([{"status": 503, "json": {"error": {"message": "busy"}}}, {"text": ["ok"]}])
    async with server as url:
        retry = APIConnectOptions(max_retry=1, retry_interval=0.01)
        response = await _brain(url).chat(chat_ctx=_context(), conn_options=retry).collect()
    assert response.text == "ok"
    assert len(server.requests) == 2


def test_llm_must_be_a_brainline_provider() -> None:
    with pytest.raises(ConfigError) as caught:
        LLM(llm="sk-not-a-provider")  # type: ignore[arg-type]
    assert caught.value.code == "invalid_secret_type"
    assert "sk-not-a-provider" not in str(caught.value)
