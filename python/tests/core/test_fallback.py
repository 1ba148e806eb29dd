"""FallbackLLM against loopback MockServer routes: order, failover, hedging, cooldown, barge-in, the
route event, AllEndpointsFailedError, and clean-up (no connection or task left behind).
typescript/test/core/fallback.test.ts holds the same tests."""

from __future__ import annotations

import asyncio
import copy
import pickle
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from brainline import (
    AllEndpointsFailedError,
    APIStatusError,
    ConfigError,
    CustomLLM,
    FallbackLLM,
    StreamError,
)
from brainline._core import fallback as fallback_module
from brainline._core.events import Event
from brainline.testing import MockServer

MESSAGES = [{"role": "user", "content": "hi"}]
KEY = "sk-fallback-secret-1"
OK = {"text": ["Hel", "lo"]}
CLOSE_WITHIN = 1.0


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def endpoint(url: str, name: str, **options: Any) -> CustomLLM:
    options.setdefault("max_retries", 0)
    return CustomLLM(base_url=f"{url.removesuffix('/v1')}/{name}/v1", model=name, **options)


async def collect(stream: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in stream]


def texts(events: list[Event]) -> str:
    return "".join(e["content"] for e in events if e["type"] == "text")  # type: ignore[typeddict-item]


@pytest.fixture
async def server() -> AsyncIterator[MockServer]:
    server = MockServer({"responses": [{"status": 404, "json": {"error": "no route"}}]})
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def others_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


# -- construction -----------------------------------------------------------------------------


def test_defaults_come_from_the_spec() -> None:
    llm = FallbackLLM([CustomLLM(base_url="http://127.0.0.1:9/v1", model="m")])
    assert llm.config.hedge_after is None
    assert llm.config.cooldown == 30


@pytest.mark.parametrize("llms", [[], None, "x", [object()], ()])
def test_llms_must_be_a_non_empty_list_of_providers(llms: Any) -> None:
    with pytest.raises(ConfigError) as info:
        FallbackLLM(llms)
    assert info.value.code == "invalid_llms"


def test_a_fallback_is_not_an_endpoint() -> None:
    inner = FallbackLLM([CustomLLM(base_url="http://127.0.0.1:9/v1", model="m")])
    with pytest.raises(ConfigError) as info:
        FallbackLLM([inner])  # type: ignore[list-item]
    assert info.value.code == "invalid_llms"


@pytest.mark.parametrize(
    ("options", "code", "message"),
    [
        ({"hedge_after": -1}, "below_minimum", "hedge_after must be >= 0, got -1"),
        ({"hedge_after": "1"}, "invalid_type", 'hedge_after must be a number, got "1"'),
        ({"cooldown": -0.5}, "below_minimum", "cooldown must be >= 0, got -0.5"),
        ({"cooldown": True}, "invalid_type", "cooldown must be a number, got true"),
    ],
)
def test_options_are_checked(options: dict[str, Any], code: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        FallbackLLM([CustomLLM(base_url="http://127.0.0.1:9/v1", model="m")], **options)
    assert info.value.code == code
    assert str(info.value) == message


def test_an_unknown_option_is_a_type_error() -> None:
    # Python's own TypeError; TypeScript raises ConfigError unknown_option (docs/runtime.md)
    with pytest.raises(TypeError, match="unexpected keyword argument 'hedgeAfter'"):
        FallbackLLM([CustomLLM(base_url="http://127.0.0.1:9/v1", model="m")], hedgeAfter=0.3)  # type: ignore[call-arg]


def test_none_means_the_default_cooldown() -> None:
    llm = FallbackLLM(
        [CustomLLM(base_url="http://127.0.0.1:9/v1", model="m")],
        cooldown=None,  # type: ignore[arg-type]
    )
    assert llm.config.cooldown == 30


def test_repr_shows_providers_and_models_never_keys() -> None:
    llm = FallbackLLM(
        [
            CustomLLM(base_url="http://127.0.0.1:9/v1", model="a", api_key=KEY),
            CustomLLM(base_url="http://127.0.0.1:9/v1", model="b", session_key=KEY),
        ],
        hedge_after=0.3,
    )
    text = repr(llm)
    assert text == "FallbackLLM([custom:a, custom:b], hedge_after=0.3, cooldown=30)"
    assert KEY not in str(llm)


@pytest.mark.parametrize("how", [pickle.dumps, copy.copy, copy.deepcopy])
def test_pickle_and_copy_are_refused(how: Any) -> None:
    llm = FallbackLLM([CustomLLM(base_url="http://127.0.0.1:9/v1", model="a", api_key=KEY)])
    with pytest.raises(TypeError):
        how(llm)


# -- turns ------------------------------------------------------------------------------------


async def test_primary_answers_with_a_route_event_first(server: MockServer) -> None:
    server.add_route("/a/", OK)
    llm = FallbackLLM([endpoint(server.url, "a"), endpoint(server.url, "b")])
    events = await collect(llm.stream(MESSAGES))
    assert events[0] == {
        "type": "route",
        "endpoint": 0,
        "provider": "custom",
        "reason": "primary",
        "failed": [],
    }
    assert texts(events) == "Hello"
    assert events[-1]["type"] == "finish" and events[-1]["reason"] == "stop"
    assert server.requests_under("/b/") == []
    await llm.aclose()


async def test_refused_primary_fails_over_at_once(server: MockServer) -> None:
    server.add_route("/b/", OK)
    # the primary would retry a refused connect after a backoff: inside a FallbackLLM it does not
    primary = CustomLLM(base_url=closed_url(), model="a", max_retries=3, retry_budget=5)
    llm = FallbackLLM([primary, endpoint(server.url, "b")])
    started = time.monotonic()
    events = await collect(llm.stream(MESSAGES))
    assert time.monotonic() - started < 0.5  # its own retries would wait 0.2 + 0.4 + 0.8 s
    assert events[0] == {
        "type": "route",
        "endpoint": 1,
        "provider": "custom",
        "reason": "failover",
        "failed": [{"endpoint": 0, "code": "connection_error"}],
    }
    assert texts(events) == "Hello"
    await llm.aclose()


async def test_the_last_endpoint_keeps_its_own_retries(server: MockServer) -> None:
    server.add_route("/b/", [{"status": 503, "json": {"error": "busy"}}, OK])
    last = endpoint(server.url, "b", max_retries=1, retry_budget=1)
    llm = FallbackLLM([CustomLLM(base_url=closed_url(), model="a"), last])
    events = await collect(llm.stream(MESSAGES))
    assert texts(events) == "Hello"
    assert len(server.requests_under("/b/")) == 2
    await llm.aclose()


async def test_a_waiting_retry_becomes_a_failover(server: MockServer) -> None:
    server.add_route("/a/", {"status": 503, "json": {"error": "busy"}})
    server.add_route("/b/", OK)
    primary = endpoint(server.url, "a", max_retries=2, retry_budget=5)
    llm = FallbackLLM([primary, endpoint(server.url, "b")])
    events = await collect(llm.stream(MESSAGES))
    assert events[0]["failed"] == [{"endpoint": 0, "code": "http_status"}]  # type: ignore[typeddict-item]
    assert len(server.requests_under("/a/")) == 1
    await llm.aclose()


async def test_all_failed_carries_each_error_in_order(server: MockServer) -> None:
    server.add_route("/b/", {"status": 500, "json": {"error": {"message": "boom"}}})
    llm = FallbackLLM([CustomLLM(base_url=closed_url(), model="a"), endpoint(server.url, "b")])
    with pytest.raises(AllEndpointsFailedError) as info:
        await collect(llm.stream(MESSAGES))
    err = info.value
    assert err.code == "all_endpoints_failed"
    assert str(err) == "every endpoint failed: connection_error, http_status"
    assert [e.code for e in err.errors] == ["connection_error", "http_status"]
    assert isinstance(err.errors[1], APIStatusError) and err.errors[1].status == 500
    await llm.aclose()


async def test_call_arguments_are_checked_before_any_attempt(server: MockServer) -> None:
    server.add_route("/a/", OK)
    llm = FallbackLLM([endpoint(server.url, "a")])
    with pytest.raises(ConfigError) as info:
        await collect(llm.stream([]))
    assert info.value.code == "invalid_messages"
    with pytest.raises(ConfigError):
        await collect(llm.stream(MESSAGES, call_id="a\r\nb"))
    assert server.requests == []


async def test_hedge_wins_over_a_silent_primary_and_closes_it(server: MockServer) -> None:
    server.add_route("/a/", {"text": ["late"], "stall": "headers"})
    server.add_route("/b/", {"text": ["Hel", "lo"], "stall": 1})
    llm = FallbackLLM([endpoint(server.url, "a"), endpoint(server.url, "b")], hedge_after=0.1)
    started = time.monotonic()
    events: list[Event] = []
    stream = llm.stream(MESSAGES)
    async for event in stream:
        events.append(event)
        if event["type"] == "text":
            break  # the hedge still streams (held open here): the primary must be closed already
    assert time.monotonic() - started < 1.0
    assert events[0]["reason"] == "hedge"  # type: ignore[typeddict-item]
    primary = server.requests_under("/a/")[0]
    assert await server.wait_for_async(lambda: primary.client_closed, timeout=CLOSE_WITHIN)
    await stream.aclose()  # type: ignore[attr-defined]
    await llm.aclose()


async def test_keep_alives_do_not_hold_off_the_hedge(server: MockServer) -> None:
    server.add_route(
        "/a/", {"sse": [": keepalive\n\n"] * 50, "delay_ms": 20, "transfer": "chunked"}
    )
    server.add_route("/b/", OK)
    llm = FallbackLLM([endpoint(server.url, "a"), endpoint(server.url, "b")], hedge_after=0.1)
    events = await collect(llm.stream(MESSAGES))
    assert events[0]["reason"] == "hedge"  # type: ignore[typeddict-item]
    assert texts(events) == "Hello"
    await llm.aclose()


async def test_primary_can_still_win_after_the_hedge_started(server: MockServer) -> None:
    server.add_route("/a/", {"text": ["first", "!"], "delay_before_headers_ms": 200, "stall": 1})
    server.add_route("/b/", {"text": ["second"], "stall": "headers"})
    llm = FallbackLLM([endpoint(server.url, "a"), endpoint(server.url, "b")], hedge_after=0.05)
    events: list[Event] = []
    stream = llm.stream(MESSAGES)
    async for event in stream:
        events.append(event)
        if event["type"] == "text":
            break  # the primary still streams (held open here): the hedge must be closed already
    assert events[0]["reason"] == "primary"  # type: ignore[typeddict-item]
    assert texts(events) == "first"
    hedge = server.requests_under("/b/")[0]
    assert await server.wait_for_async(lambda: hedge.client_closed, timeout=CLOSE_WITHIN)
    await stream.aclose()  # type: ignore[attr-defined]
    await llm.aclose()


async def test_at_most_one_hedge_per_turn(server: MockServer) -> None:
    server.add_route("/a/", {"text": ["a"], "delay_before_headers_ms": 300})
    server.add_route("/b/", {"text": ["b"], "stall": "headers"})
    server.add_route("/c/", OK)
    llm = FallbackLLM(
        [endpoint(server.url, n) for n in "abc"],
        hedge_after=0.05,
    )
    events = await collect(llm.stream(MESSAGES))
    assert texts(events) == "a"
    assert server.requests_under("/c/") == []
    await llm.aclose()


async def test_an_error_after_the_first_event_is_not_a_switch(server: MockServer) -> None:
    server.add_route("/a/", {"text": ["Hel", "lo"], "drop_after": 1})
    server.add_route("/b/", OK)
    llm = FallbackLLM([endpoint(server.url, "a"), endpoint(server.url, "b")])
    events: list[Event] = []
    with pytest.raises(StreamError) as info:
        async for event in llm.stream(MESSAGES):
            events.append(event)
    assert info.value.code == "interrupted"
    assert info.value.partial_text == "Hel"
    assert texts(events) == "Hel"
    assert server.requests_under("/b/") == []
    await llm.aclose()


async def test_an_empty_answer_is_an_answer(server: MockServer) -> None:
    server.add_route("/a/", {"text": []})
    server.add_route("/b/", OK)
    llm = FallbackLLM([endpoint(server.url, "a"), endpoint(server.url, "b")], hedge_after=0.5)
    events = await collect(llm.stream(MESSAGES))
    assert [e["type"] for e in events] == ["route", "finish"]
    assert server.requests_under("/b/") == []
    await llm.aclose()


async def test_cooldown_skips_then_retries_a_failed_endpoint(server: MockServer) -> None:
    server.add_route("/a/", [{"status": 503, "json": {"error": "busy"}}, OK])
    server.add_route("/b/", OK)
    llm = FallbackLLM([endpoint(server.url, "a"), endpoint(server.url, "b")], cooldown=0.3)
    first = await collect(llm.stream(MESSAGES))
    second = await collect(llm.stream(MESSAGES))
    await asyncio.sleep(0.35)
    third = await collect(llm.stream(MESSAGES))
    assert (first[0]["endpoint"], first[0]["reason"]) == (1, "failover")  # type: ignore[typeddict-item]
    assert (second[0]["endpoint"], second[0]["reason"]) == (1, "primary")  # type: ignore[typeddict-item]
    assert (third[0]["endpoint"], third[0]["reason"]) == (0, "primary")  # type: ignore[typeddict-item]
    assert len(server.requests_under("/a/")) == 2
    await llm.aclose()


async def test_when_every_endpoint_cools_down_all_are_tried(server: MockServer) -> None:
    server.add_route("/a/", [{"status": 503, "json": {}}, OK])
    server.add_route("/b/", {"status": 503, "json": {}})
    llm = FallbackLLM([endpoint(server.url, "a"), endpoint(server.url, "b")])
    with pytest.raises(AllEndpointsFailedError):
        await collect(llm.stream(MESSAGES))
    events = await collect(llm.stream(MESSAGES))
    assert events[0]["endpoint"] == 0  # type: ignore[typeddict-item]
    assert texts(events) == "Hello"
    await llm.aclose()


async def test_a_client_error_does_not_cool_down(server: MockServer) -> None:
    server.add_route("/a/", [{"status": 400, "json": {"error": "bad"}}, OK])
    server.add_route("/b/", OK)
    llm = FallbackLLM([endpoint(server.url, "a"), endpoint(server.url, "b")])
    await collect(llm.stream(MESSAGES))
    events = await collect(llm.stream(MESSAGES))
    assert events[0]["endpoint"] == 0  # type: ignore[typeddict-item]
    await llm.aclose()


async def test_barge_in_during_the_race_closes_every_connection(server: MockServer) -> None:
    server.add_route("/a/", {"text": ["x"], "stall": "headers"})
    server.add_route("/b/", {"text": ["y"], "stall": "headers"})
    llm = FallbackLLM([endpoint(server.url, "a"), endpoint(server.url, "b")], hedge_after=0.05)
    cancel = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, cancel.set)
    before = others_tasks()
    started = time.monotonic()
    events = await collect(llm.stream(MESSAGES, cancel_event=cancel))
    assert events == []
    assert time.monotonic() - started < 0.5
    assert await server.wait_for_async(
        lambda: len(server.requests) == 2 and all(r.client_closed for r in server.requests),
        timeout=CLOSE_WITHIN,
    )
    await asyncio.sleep(0)
    assert others_tasks() <= before
    await llm.aclose()


async def test_barge_in_after_the_winner_started(server: MockServer) -> None:
    server.add_route("/a/", {"text": ["Hel", "lo"], "stall": 1})
    llm = FallbackLLM([endpoint(server.url, "a"), endpoint(server.url, "b")])
    cancel = asyncio.Event()
    events: list[Event] = []
    async for event in llm.stream(MESSAGES, cancel_event=cancel):
        events.append(event)
        if event["type"] == "text":
            cancel.set()
    assert [e["type"] for e in events] == ["route", "text"]
    request = server.requests_under("/a/")[0]
    assert await server.wait_for_async(lambda: request.client_closed, timeout=CLOSE_WITHIN)
    await llm.aclose()


async def test_breaking_out_leaves_no_task_or_connection(server: MockServer) -> None:
    server.add_route("/a/", {"text": ["x", "y"], "delay_before_headers_ms": 150, "stall": 1})
    server.add_route("/b/", {"text": ["Hel", "lo"], "stall": 1})
    llm = FallbackLLM([endpoint(server.url, "a"), endpoint(server.url, "b")], hedge_after=0.05)
    before = others_tasks()
    stream = llm.stream(MESSAGES)
    async for event in stream:
        if event["type"] == "text":
            break
    await stream.aclose()  # type: ignore[attr-defined]
    assert await server.wait_for_async(
        lambda: all(r.client_closed for r in server.requests), timeout=CLOSE_WITHIN
    )
    await asyncio.sleep(0)
    assert others_tasks() <= before
    await llm.aclose()


async def test_a_tool_call_is_progress(server: MockServer) -> None:
    call = {"id": "c1", "name": "lookup", "arguments": '{"q":1}'}
    server.add_route("/a/", {"tool_calls": [call]})
    llm = FallbackLLM([endpoint(server.url, "a"), endpoint(server.url, "b")], hedge_after=0.5)
    turn = await llm.complete(MESSAGES, [{"type": "function", "function": {"name": "lookup"}}])
    assert turn.finish_reason == "tool_calls"
    assert [c.name for c in turn.tool_calls] == ["lookup"]
    await llm.aclose()


async def test_progress_events_are_held_until_the_attempt_wins(server: MockServer) -> None:
    progress = {"event": "hermes.tool.progress", "data": {"tool": "x"}}
    server.add_route(
        "/a/",
        {"sse": [progress], "transfer": "chunked", "stall": 1},
    )
    server.add_route("/b/", OK)
    llm = FallbackLLM([endpoint(server.url, "a"), endpoint(server.url, "b")], hedge_after=0.1)
    events = await collect(llm.stream(MESSAGES))
    assert [e["type"] for e in events if e["type"] == "progress"] == []
    assert events[0]["endpoint"] == 1  # type: ignore[typeddict-item]
    await llm.aclose()


async def test_each_endpoint_sends_its_own_session_headers(server: MockServer) -> None:
    server.add_route("/a/", {"status": 503, "json": {}})
    server.add_route("/b/", OK)
    a = endpoint(server.url, "a", session_id_header="X-A", session_id_prefix="a-")
    b = endpoint(server.url, "b", session_id_header="X-B", session_id_prefix="b-")
    llm = FallbackLLM([a, b])
    await collect(llm.stream(MESSAGES, call_id="c1"))
    assert server.requests_under("/a/")[0].header("x-a") == "a-c1"
    assert server.requests_under("/b/")[0].header("x-b") == "b-c1"
    assert server.requests_under("/b/")[0].header("x-a") is None
    await llm.aclose()


async def test_complete_ignores_the_route_event(server: MockServer) -> None:
    server.add_route("/a/", OK)
    async with FallbackLLM([endpoint(server.url, "a")]) as llm:
        turn = await llm.complete(MESSAGES)
    assert (turn.text, turn.finish_reason) == ("Hello", "stop")


async def test_warmup_warms_every_endpoint_and_never_raises(server: MockServer) -> None:
    llm = FallbackLLM([endpoint(server.url, "a"), CustomLLM(base_url=closed_url(), model="b")])
    await llm.warmup()
    assert [r.path for r in server.requests] == ["/a/v1/models"]
    await llm.aclose()


def test_the_module_exports_only_fallback() -> None:
    assert fallback_module.__all__ == ["FallbackLLM"]


async def test_cancelling_the_task_during_the_race_closes_every_attempt(server: MockServer) -> None:
    server.add_route("/a/", {"text": ["x"], "stall": "headers"})
    server.add_route("/b/", {"text": ["y"], "stall": "headers"})
    llm = FallbackLLM([endpoint(server.url, "a"), endpoint(server.url, "b")], hedge_after=0.05)
    before = others_tasks()
    task = asyncio.ensure_future(collect(llm.stream(MESSAGES)))
    assert await server.wait_for_async(lambda: len(server.requests) == 2, timeout=CLOSE_WITHIN)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1.0)
    assert await server.wait_for_async(
        lambda: all(r.client_closed for r in server.requests), timeout=CLOSE_WITHIN
    )
    await asyncio.sleep(0)
    assert others_tasks() <= before
    await llm.aclose()
