"""A brainline provider is a getpatter (0.7.0) LLMProvider as it is: it runs inside getpatter's own
LLMLoop with its DefaultToolExecutor, against brainline's mock server on 127.0.0.1. Nothing of
getpatter is mocked; brainline's extra events (reasoning, finish, route) and arguments trip none of
it, so there is no brainline.integrations.patter."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

# getpatter reports usage telemetry by default; tests talk to 127.0.0.1 only.
os.environ["PATTER_TELEMETRY_DISABLED"] = "1"
os.environ["DO_NOT_TRACK"] = "1"

from getpatter.services.llm_loop import DefaultToolExecutor, LLMLoop, LLMProvider
from getpatter.services.metrics import CallMetricsAccumulator

from brainline import FallbackLLM, HermesLLM, OpenAICompatibleLLM
from brainline.testing import MockServer

CALL = {"call_id": "call-42", "caller": "+15551234567", "callee": "+15557654321"}


def _llm(url: str, **options: Any) -> OpenAICompatibleLLM:
    return OpenAICompatibleLLM(base_url=url, model="mock-model", max_retries=0, **options)


def _loop(provider: Any, tools: list[dict[str, Any]] | None = None, **kwargs: Any) -> LLMLoop:
    return LLMLoop(
        openai_key="",
        model="mock-model",
        system_prompt="Be brief.",
        tools=tools,
        tool_executor=DefaultToolExecutor(),
        llm_provider=provider,
        disable_phone_preamble=True,
        **kwargs,
    )


async def _run(loop: LLMLoop, text: str, **kwargs: Any) -> list[str]:
    return [token async for token in loop.run(text, [], dict(CALL), **kwargs)]


def test_a_brainline_provider_satisfies_the_protocol() -> None:
    assert isinstance(_llm("http://127.0.0.1:9/v1"), LLMProvider)


async def test_text_streams_and_usage_reaches_getpatters_metrics() -> None:
    script = {
        "reasoning": ["never spoken"],
        "text": ["Sunny", " and warm."],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3},
    }
    server = MockServer(script)
    metrics = CallMetricsAccumulator("call-42", "pipeline", "twilio", llm_provider="custom")
    async with server as url:
        tokens = await _run(_loop(_llm(url), metrics=metrics), "Weather?")
    assert tokens == ["Sunny", " and warm."]
    assert (metrics._llm_total_input_tokens, metrics._llm_total_output_tokens) == (12, 3)
    [request] = server.requests
    assert request.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
    ]


async def test_the_call_context_reaches_the_session_headers_without_the_raw_caller() -> None:
    server = MockServer({"text": ["ok"]})
    async with server as url:
        llm = HermesLLM(api_key="k", base_url=url, max_retries=0, session_key_from="caller_hash")
        await _run(_loop(llm), "Hi")
    [request] = server.requests
    config = llm.config
    assert request.header(config.session_id_header) == f"{config.session_id_prefix}call-42"
    assert request.header(config.session_key_header)
    assert CALL["caller"] not in repr(request.headers) + request.body.decode()


async def test_a_tool_call_runs_through_the_default_tool_executor_and_the_follow_up() -> None:
    seen: list[tuple[dict[str, Any], str]] = []

    async def get_weather(arguments: dict[str, Any], call_context: dict[str, Any]) -> dict:
        seen.append((arguments, call_context["call_id"]))
        return {"forecast": "sunny"}

    tool = {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "handler": get_weather,
    }
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
        tokens = await _run(_loop(_llm(url), tools=[tool]), "Weather in Rome?")
    assert seen == [({"city": "Rome"}, "call-42")]
    assert tokens == ["It is sunny in Rome."]
    first, follow_up = server.requests
    assert first.json["tools"][0]["function"]["name"] == "get_weather"
    call, result = follow_up.json["messages"][-2:]
    assert call["tool_calls"][0]["id"] == "call_1"
    assert call["tool_calls"][0]["function"]["arguments"] == '{"city":"Rome"}'
    assert result["tool_call_id"] == "call_1"
    assert json.loads(result["content"]) == {"forecast": "sunny"}


async def test_barge_in_ends_the_turn_and_closes_the_connection() -> None:
    server = MockServer({"text": ["Once upon", " a time"], "stall": 1})
    async with server as url:
        cancel = asyncio.Event()
        tokens: list[str] = []

        async def consume() -> None:
            async for token in _loop(_llm(url, timeout=5)).run(
                "Story?", [], dict(CALL), cancel_event=cancel
            ):
                tokens.append(token)
                cancel.set()  # the caller starts talking after the first words
                fired_at.append(asyncio.get_running_loop().time())

        fired_at: list[float] = []
        await asyncio.wait_for(consume(), 5)
        closed = await server.wait_for_async(lambda: server.requests[-1].client_closed, 1.0)
        request = server.requests[-1]
    assert tokens == ["Once upon"]
    assert closed, "the server never saw the connection close"
    assert request.closed_at - fired_at[0] < 1.0


async def test_a_fallback_llm_runs_in_the_loop_too() -> None:
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
        fallback = FallbackLLM([_llm(f"{root}/dead/v1"), _llm(f"{root}/live/v1")])
        tokens = await _run(_loop(fallback), "Hi")
    assert tokens == ["From", " the backup."]
