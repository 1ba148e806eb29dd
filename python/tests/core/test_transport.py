"""BaseLLM's transport options against MockServer on 127.0.0.1: retries within the latency budget,
the first-token / idle / total clocks on one timer, dialect fallbacks and extra_body / extra_query.

The parity cases (tests/parity/cases/retry_*, transport_*, dialect_*) pin the transcripts; these
tests measure what a transcript cannot: elapsed time, timers and the one shared httpx client.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from brainline._core import client as client_module
from brainline._core.client import BaseLLM, _query_string, _retry_after
from brainline._core.errors import APIConnectionError, APIStatusError, APITimeoutError
from brainline._core.events import Event
from brainline.testing import MockServer

from .conftest import make_config

MESSAGES = [{"role": "user", "content": "Hi"}]
CHUNK = 'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'


def make_llm(url: str, **overrides: Any) -> BaseLLM:
    return BaseLLM(make_config(base_url=url, **overrides))


async def collect(stream: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in stream]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- retries -----------------------------------------------------------------------------------


async def test_refused_connection_is_retried_after_the_backoff() -> None:
    port = free_port()
    server = MockServer({"text": ["Hello"]}, port=port)
    llm = make_llm(f"http://127.0.0.1:{port}/v1", max_retries=1)

    async def start_late() -> None:
        await asyncio.sleep(0.05)  # the first attempt is refused; the retry waits 0.2 s
        await server.start()

    starter = asyncio.ensure_future(start_late())
    started = time.monotonic()
    try:
        events = await collect(llm.stream(MESSAGES))
        elapsed = time.monotonic() - started
    finally:
        await starter
        await llm.aclose()
        await server.stop()
    assert [e["type"] for e in events] == ["text", "finish"]
    assert len(server.requests) == 1
    assert 0.15 <= elapsed < 1.5  # the backoff, not the reference system's 1.4 s


async def test_refused_connection_without_retries_fails_at_once() -> None:
    port = free_port()
    llm = make_llm(f"http://127.0.0.1:{port}/v1", max_retries=0)
    started = time.monotonic()
    with pytest.raises(APIConnectionError):
        await collect(llm.stream(MESSAGES))
    assert time.monotonic() - started < 0.15
    await llm.aclose()


async def test_retry_after_beyond_the_budget_fails_fast() -> None:
    script = [
        {"status": 429, "headers": {"Retry-After": "2"}, "json": {"error": {"message": "slow"}}},
        {"text": ["Hello"]},
    ]
    async with MockServer(script) as url:
        llm = make_llm(url, max_retries=1, retry_budget=1.5)
        started = time.monotonic()
        with pytest.raises(APIStatusError) as info:
            await collect(llm.stream(MESSAGES))
        elapsed = time.monotonic() - started
        await llm.aclose()
    # The reference system waited 4 s of silence here; a voice turn must fail now.
    assert elapsed < 0.5
    assert info.value.status == 429 and info.value.retry_after == 2


async def test_waits_add_up_within_the_budget_and_share_one_client() -> None:
    busy = {"status": 503, "headers": {"retry-after-ms": "200"}, "json": {"error": {}}}
    async with MockServer([busy, busy, {"text": ["Hello"]}]) as url:
        llm = make_llm(url, max_retries=3, retry_budget=0.5)
        started = time.monotonic()
        events = await collect(llm.stream(MESSAGES))
        elapsed = time.monotonic() - started
        first_client = llm._client
        await collect(llm.stream(MESSAGES))
        assert llm._client is first_client  # one httpx.AsyncClient per instance
        await llm.aclose()
    assert [e["type"] for e in events] == ["text", "finish"]
    assert 0.35 <= elapsed < 1.5


async def test_budget_cuts_the_backoff() -> None:
    async with MockServer([{"status": 502, "body": "bad"}, {"text": ["Hi"]}]) as url:
        llm = make_llm(url, max_retries=1, retry_budget=0.0)
        started = time.monotonic()
        events = await collect(llm.stream(MESSAGES))
        elapsed = time.monotonic() - started
        await llm.aclose()
    assert [e["type"] for e in events] == ["text", "finish"]
    assert elapsed < 0.15  # no waiting left: retried at once


async def test_cancel_during_the_retry_wait_ends_quietly_at_once() -> None:
    script = [{"status": 503, "headers": {"Retry-After": "1.5"}, "body": "x"}, {"text": ["Hi"]}]
    async with MockServer(script) as server_url:
        llm = make_llm(server_url, max_retries=1)
        cancel = asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, cancel.set)
        started = time.monotonic()
        events = await collect(llm.stream(MESSAGES, cancel_event=cancel))
        elapsed = time.monotonic() - started
        await llm.aclose()
    assert events == []
    assert elapsed < 0.6


def test_retry_after_headers() -> None:
    assert _retry_after("2") == 2.0
    assert _retry_after("1.5") == 1.5
    assert _retry_after("2", "250") == 0.25  # retry-after-ms wins
    assert _retry_after(None, "100") == 0.1
    assert _retry_after(None, "soon") is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


# -- the clocks --------------------------------------------------------------------------------


async def test_total_timeout_bounds_the_retry_wait() -> None:
    script = [{"status": 503, "headers": {"Retry-After": "1.5"}, "body": "x"}, {"text": ["Hi"]}]
    async with MockServer(script) as url:
        llm = make_llm(url, max_retries=1, total_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(APITimeoutError) as info:
            await collect(llm.stream(MESSAGES))
        elapsed = time.monotonic() - started
        await llm.aclose()
    assert info.value.code == "total_timeout"
    assert 0.25 <= elapsed < 1.0


async def test_first_token_clock_ignores_keepalives_and_trickling_bytes() -> None:
    pieces = [": keepalive\n\n", 'data: {"choices":[{"index":0,"delta":{"content":"']
    pieces += ["x"] * 40
    async with MockServer({"sse": pieces, "delay_ms": 50}) as url:
        llm = make_llm(url, timeout=5.0, first_token_timeout=0.4)
        started = time.monotonic()
        with pytest.raises(APITimeoutError) as info:
            await collect(llm.stream(MESSAGES))
        elapsed = time.monotonic() - started
        await llm.aclose()
    assert info.value.code == "first_token_timeout"
    assert str(info.value) == f"no first token from {url}/chat/completions within 0.4 s"
    assert 0.35 <= elapsed < 1.5


async def test_time_the_consumer_holds_an_event_does_not_count() -> None:
    # The caller takes 0.5 s over each event while the server streams one every 0.1 s: the idle
    # clock (0.3 s) counts only the waits for the network, so the turn completes.
    pieces = [CHUNK] * 4 + ["data: [DONE]\n\n"]
    async with MockServer({"sse": pieces, "delay_ms": 100}) as url:
        llm = make_llm(url, timeout=5.0, idle_timeout=0.3, first_token_timeout=0.3)
        seen: list[Event] = []
        async for event in llm.stream(MESSAGES):
            seen.append(event)
            await asyncio.sleep(0.5)
        await llm.aclose()
    assert [e["type"] for e in seen] == ["text"] * 4 + ["finish"]


async def test_the_idle_clock_runs_again_once_the_consumer_asks_for_more() -> None:
    # Two events in one read, then silence: the caller's 0.5 s over each does not count, the
    # wait after them does: idle_timeout about 0.3 s after the caller asked for the next event.
    both = {"concat": [CHUNK, CHUNK]}
    async with MockServer({"sse": [both, ": keepalive\n\n"], "delay_ms": 50, "stall": 2}) as url:
        llm = make_llm(url, timeout=5.0, idle_timeout=0.3)
        seen: list[Event] = []
        asked_at = 0.0
        with pytest.raises(APITimeoutError) as info:
            async for event in llm.stream(MESSAGES):
                seen.append(event)
                await asyncio.sleep(0.5)
                asked_at = time.monotonic()
        waited = time.monotonic() - asked_at
        await llm.aclose()
    assert info.value.code == "idle_timeout"
    assert [e["type"] for e in seen] == ["text", "text"]
    assert 0.2 <= waited < 0.8


async def test_unset_progress_clocks_take_timeout() -> None:
    # Keep-alives every 0.1 s and never a token: with only `timeout` set (1 s), the first-token
    # clock ends the turn at timeout + PROGRESS_CLOCK_GRACE, naming `timeout`.
    async with MockServer({"sse": [": keepalive\n\n"] * 60, "delay_ms": 100}) as url:
        llm = make_llm(url, timeout=1.0)
        started = time.monotonic()
        with pytest.raises(APITimeoutError) as info:
            await collect(llm.stream(MESSAGES))
        elapsed = time.monotonic() - started
        await llm.aclose()
    assert info.value.code == "first_token_timeout"
    assert str(info.value) == f"no first token from {url}/chat/completions within 1 s"
    assert 1.2 <= elapsed < 2.0


async def test_one_timer_per_turn_not_one_per_read(monkeypatch: pytest.MonkeyPatch) -> None:
    armed = 0
    real_arm = client_module._Deadline._arm

    def counting_arm(self: Any) -> None:
        nonlocal armed
        real_arm(self)
        if self.handle is not None:
            armed += 1

    monkeypatch.setattr(client_module._Deadline, "_arm", counting_arm)
    pieces = [CHUNK] * 300 + ["data: [DONE]\n\n"]
    async with MockServer({"sse": pieces}) as url:
        llm = make_llm(url, first_token_timeout=5.0, idle_timeout=5.0, total_timeout=10.0)
        events = await collect(llm.stream(MESSAGES))
        await llm.aclose()
    assert len(events) == 301
    assert armed <= 3  # armed once at the start; 300 progress chunks move the deadline only


async def test_no_clock_outlives_the_turn() -> None:
    async with MockServer({"text": ["a"], "stall": 1}) as url:
        llm = make_llm(url, timeout=5.0, idle_timeout=0.2, total_timeout=3.0)
        loop = asyncio.get_running_loop()
        with pytest.raises(APITimeoutError):
            await collect(llm.stream(MESSAGES))
        stream = llm.stream(MESSAGES)
        await anext(stream)
        await stream.aclose()  # the caller stops early: the timer goes with the turn
        await asyncio.sleep(0.4)
        await llm.aclose()
    timers = [h for h in getattr(loop, "_scheduled", []) if not h.cancelled()]
    assert not any("_Deadline" in repr(h) for h in timers)


# -- dialects ----------------------------------------------------------------------------------


async def test_dialect_choice_is_per_instance() -> None:
    rejected = {"status": 400, "json": {"error": {"message": "Unknown field: stream_options"}}}
    server = MockServer([rejected, {"text": ["a"]}, {"text": ["b"]}, {"text": ["c"]}])
    url = await server.start()
    try:
        first = make_llm(url)
        await collect(first.stream(MESSAGES))
        await collect(first.stream(MESSAGES))
        second = make_llm(url)
        await collect(second.stream(MESSAGES))
        await first.aclose()
        await second.aclose()
    finally:
        await server.stop()
    sent = ["stream_options" in request.json for request in server.requests]
    assert sent == [True, False, False, True]


def test_query_string_encoding() -> None:
    assert _query_string(None) == ""
    assert _query_string({}) == ""
    assert _query_string({"a b": "é/&=~*+!'()"}) == "?a%20b=%C3%A9%2F%26%3D~%2A%2B%21%27%28%29"
