"""The per-turn metrics record: one per turn whatever its end, on_metrics failures contained.

The parity cases (tests/parity/cases/metrics_*) pin the records' keys and values; these tests
cover what a transcript cannot: a callback that raises, a caller that stops early, the order of
the moments, and that one record object reaches both the callback and the finish event.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from brainline._core.client import BaseLLM
from brainline._core.metrics import METRICS_KEYS, TurnMeter, TurnMetrics, request_id_of
from brainline.testing import MockServer

from .conftest import make_config

MESSAGES = [{"role": "user", "content": "Hi"}]


def make_llm(url: str, sink: list[TurnMetrics], **overrides: Any) -> BaseLLM:
    return BaseLLM(make_config(base_url=url, on_metrics=sink.append, **overrides))


async def test_one_record_reaches_the_callback_and_the_finish_event() -> None:
    sink: list[TurnMetrics] = []
    script = {"reasoning": ["hmm"], "text": ["Hel", "lo"], "delay_ms": 30}
    async with MockServer(script) as url:
        llm = make_llm(url, sink)
        events = [event async for event in llm.stream(MESSAGES)]
        await llm.aclose()
    finish = events[-1]
    assert finish["type"] == "finish"
    assert sink == [finish["metrics"]] and sink[0] is finish["metrics"]
    record = sink[0]
    assert tuple(record) == METRICS_KEYS
    assert record["headers_ms"] is not None and record["first_progress_ms"] is not None
    assert record["first_text_ms"] is not None
    # Reasoning came first (progress), the text 30 ms later, the end after both.
    assert record["headers_ms"] <= record["first_progress_ms"] < record["first_text_ms"]
    assert record["first_text_ms"] - record["first_progress_ms"] >= 20
    assert record["first_text_ms"] <= record["duration_ms"]


async def test_a_callback_that_raises_is_logged_and_the_turn_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(record: TurnMetrics) -> None:
        raise RuntimeError("exporter down")

    async with MockServer({"text": ["Hi"]}) as url:
        llm = BaseLLM(make_config(base_url=url, on_metrics=broken))
        with caplog.at_level(logging.WARNING, logger="brainline"):
            events = [event async for event in llm.stream(MESSAGES)]
        await llm.aclose()
    assert [e["type"] for e in events] == ["text", "finish"]
    assert any("on_metrics raised RuntimeError" in r.getMessage() for r in caplog.records)


async def test_a_caller_that_stops_early_gives_a_cancelled_record() -> None:
    sink: list[TurnMetrics] = []
    async with MockServer({"text": ["a", "b", "c"], "delay_ms": 50}) as url:
        llm = make_llm(url, sink)
        stream = llm.stream(MESSAGES)
        async for _ in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]
        await llm.aclose()
    assert len(sink) == 1
    assert sink[0]["cancelled"] is True and sink[0]["error_code"] is None
    assert sink[0]["finish_reason"] is None and sink[0]["chunks"] == 1


async def test_a_turn_cancelled_before_it_starts_gives_a_record_without_a_request() -> None:
    sink: list[TurnMetrics] = []
    async with MockServer({"text": ["a"]}) as url:
        llm = make_llm(url, sink)
        cancel = asyncio.Event()
        cancel.set()
        assert [e async for e in llm.stream(MESSAGES, cancel_event=cancel)] == []
        await llm.aclose()
    assert len(sink) == 1
    assert sink[0]["cancelled"] is True and sink[0]["attempts"] == 0
    assert sink[0]["headers_ms"] is None


def test_the_record_is_built_once() -> None:
    calls: list[TurnMetrics] = []
    meter = TurnMeter("custom", "m", calls.append)
    first = meter.finish(finish_reason="stop")
    assert meter.finish(error_code="interrupted") is first
    assert len(calls) == 1 and first["error_code"] is None


def test_request_id_headers_in_order() -> None:
    assert request_id_of({"request-id": "b", "x-request-id": "a"}) == "a"
    assert request_id_of({"x-litellm-call-id": "c"}) == "c"
    assert request_id_of({"x-request-id": ""}) is None
    assert request_id_of({}) is None


# -- FallbackLLM -------------------------------------------------------------------------------


def _closed_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


async def test_a_fallback_turn_has_one_record_naming_the_winner() -> None:
    from brainline import CustomLLM, FallbackLLM

    turn: list[TurnMetrics] = []
    own: list[TurnMetrics] = []
    async with MockServer({"text": ["Hi"], "headers": {"x-request-id": "r-b"}}) as url:
        primary = CustomLLM(base_url=_closed_url(), model="a", max_retries=0)
        backup = CustomLLM(base_url=url, model="b", on_metrics=own.append)
        llm = FallbackLLM([primary, backup], on_metrics=turn.append)
        events = [event async for event in llm.stream(MESSAGES)]
        await llm.aclose()
    assert len(turn) == 1 and events[-1]["metrics"] is turn[0]  # type: ignore[typeddict-item]
    record = turn[0]
    assert (record["provider"], record["model"], record["endpoint"]) == ("custom", "b", 1)
    assert record["attempts"] == 2  # the refused primary, then the backup
    assert record["request_id"] == "r-b" and record["finish_reason"] == "stop"
    assert record["error_code"] is None and record["cancelled"] is False
    # The backup's own callback still gets its own record, times from its own start.
    assert len(own) == 1 and own[0]["endpoint"] == 0 and own[0]["attempts"] == 1
    assert own[0]["first_text_ms"] is not None and record["first_text_ms"] is not None
    assert own[0]["first_text_ms"] <= record["first_text_ms"]


async def test_a_hedged_fallback_turn_counts_both_attempts() -> None:
    from brainline import CustomLLM, FallbackLLM

    turn: list[TurnMetrics] = []
    server = MockServer({"routes": {"/a/": {"text": ["slow"], "stall": 0}, "/b/": {"text": ["B"]}}})
    url = await server.start()
    try:
        base = url.removesuffix("/v1")
        primary = CustomLLM(base_url=f"{base}/a/v1", model="a")
        backup = CustomLLM(base_url=f"{base}/b/v1", model="b")
        llm = FallbackLLM([primary, backup], hedge_after=0.1, on_metrics=turn.append)
        texts = [e["content"] async for e in llm.stream(MESSAGES) if e["type"] == "text"]
        await llm.aclose()
    finally:
        await server.stop()
    assert texts == ["B"]
    assert len(turn) == 1
    assert turn[0]["endpoint"] == 1 and turn[0]["attempts"] == 2
    assert turn[0]["first_text_ms"] is not None and turn[0]["first_text_ms"] >= 100


async def test_an_all_failed_fallback_turn_has_one_failed_record() -> None:
    from brainline import AllEndpointsFailedError, CustomLLM, FallbackLLM

    turn: list[TurnMetrics] = []
    async with MockServer({"status": 500, "json": {"error": {"message": "down"}}}) as url:
        llms = [CustomLLM(base_url=url, model=m, max_retries=0) for m in ("a", "b")]
        llm = FallbackLLM(llms, on_metrics=turn.append)
        with pytest.raises(AllEndpointsFailedError):
            async for _ in llm.stream(MESSAGES):
                pass
        await llm.aclose()
    assert len(turn) == 1
    record = turn[0]
    assert record["error_code"] == "all_endpoints_failed" and record["cancelled"] is False
    assert record["endpoint"] == 1 and record["attempts"] == 2
    assert record["finish_reason"] is None
