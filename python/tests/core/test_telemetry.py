"""OpenTelemetry GenAI spans and metrics (telemetry.py), with the SDK's in-memory exporters.

tests/telemetry/test_otel_parity.py runs the same turns in both languages and compares them; these
tests pin the values per turn and what a comparison cannot see: off by default and free of the
import, the env vars, the span's parent and times, content capture off, the API missing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the test dependency group installs it")

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import brainline
from brainline._core import telemetry
from brainline._core.client import BaseLLM
from brainline.testing import MockServer

from .conftest import make_config

MESSAGES = [{"role": "user", "content": "Hi"}]
KEY = "sk-telemetry-unit-0001"

# The global providers can be set once per process: this module's, for all its tests.
SPANS = InMemorySpanExporter()
READER = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
_tracer_provider = TracerProvider()
_tracer_provider.add_span_processor(SimpleSpanProcessor(SPANS))


@pytest.fixture(autouse=True)
def providers(monkeypatch: pytest.MonkeyPatch) -> Any:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(_tracer_provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))
    monkeypatch.delenv("BRAINLINE_TELEMETRY", raising=False)
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    SPANS.clear()
    READER.get_metrics_data()  # drop what earlier tests recorded
    yield
    SPANS.clear()


def points() -> list[tuple[str, dict[str, Any], int, float]]:
    out = []
    data = READER.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "brainline"
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    out.append((metric.name, dict(point.attributes), point.count, point.sum))
    return sorted(out, key=lambda p: (p[0], json.dumps(p[1], sort_keys=True)))


def only_span() -> ReadableSpan:
    spans = SPANS.get_finished_spans()
    assert len(spans) == 1
    return spans[0]


async def run(script: Any, cancel_after: int | None = None, **options: Any) -> list[Any]:
    events: list[Any] = []
    async with MockServer(script) as url:
        llm = BaseLLM(make_config(base_url=url, api_key=KEY, **options))
        cancel = asyncio.Event()
        try:
            async for event in llm.stream(MESSAGES, cancel_event=cancel):
                events.append(event)
                if len(events) == cancel_after:
                    cancel.set()
        finally:
            await llm.aclose()
    return events


def test_telemetry_on_reads_the_option_then_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert telemetry.telemetry_on(None) is False
    for value, on in (("1", True), ("true", True), (" TRUE ", True), ("0", False), ("yes", False)):
        monkeypatch.setenv("BRAINLINE_TELEMETRY", value)
        assert telemetry.telemetry_on(None) is on, value
    assert telemetry.telemetry_on(False) is False
    monkeypatch.setenv("BRAINLINE_TELEMETRY", "0")
    assert telemetry.telemetry_on(True) is True


def test_capture_on_reads_the_option_then_the_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    env = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
    assert telemetry.capture_on(None) is False
    for value, on in (("true", True), ("span_only", True), ("SPAN_AND_EVENT", True),
                      ("event_only", False), ("false", False), ("1", True)):  # fmt: skip
        monkeypatch.setenv(env, value)
        assert telemetry.capture_on(None) is on, value
    assert telemetry.capture_on(False) is False


def test_off_by_default_and_import_brainline_never_loads_opentelemetry() -> None:
    assert BaseLLM(make_config())._telemetry is None
    code = (
        "import sys, asyncio, brainline\n"
        "from brainline.testing import MockServer\n"
        "async def main():\n"
        "    async with MockServer({'text': ['hi']}) as url:\n"
        "        llm = brainline.CustomLLM(base_url=url, model='m')\n"
        "        [e async for e in llm.stream([{'role': 'user', 'content': 'x'}])]\n"
        "        await llm.aclose()\n"
        "asyncio.run(main())\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'loaded'\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


async def test_off_records_nothing() -> None:
    await run({"text": ["Hi"]})
    assert SPANS.get_finished_spans() == ()
    assert points() == []


async def test_the_env_var_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINLINE_TELEMETRY", "1")
    await run({"text": ["Hi"]})
    assert only_span().name == "chat test-model"


async def test_a_finished_turn() -> None:
    script = {
        "id": "chatcmpl-7",
        "model": "served-model",
        "headers": {"x-request-id": "req-7"},
        "text": ["Hel", "lo"],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2,
                  "prompt_tokens_details": {"cached_tokens": 6}},
    }  # fmt: skip
    events = await run(script, telemetry=True, temperature=0.2, max_tokens=5, stop="\n")
    record = events[-1]["metrics"]
    span = only_span()
    assert span.name == "chat test-model"
    assert span.kind == trace.SpanKind.CLIENT
    assert span.status.status_code == trace.StatusCode.UNSET
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "brainline"
    attributes = dict(span.attributes or {})
    port = attributes.pop("server.port")
    assert isinstance(port, int) and port > 0
    ttfc = attributes.pop("gen_ai.response.time_to_first_chunk")
    assert ttfc == record["first_progress_ms"] / 1000
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai_compatible",
        "gen_ai.request.model": "test-model",
        "server.address": "127.0.0.1",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 5,
        "gen_ai.request.stop_sequences": ("\n",),
        "gen_ai.request.stream": True,
        "gen_ai.response.id": "chatcmpl-7",
        "gen_ai.response.model": "served-model",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 10,  # cached tokens included, as the convention counts
        "gen_ai.usage.output_tokens": 2,
        "gen_ai.usage.cache_read.input_tokens": 6,
        "brainline.turn.attempts": 1,
        "brainline.request_id": "req-7",
    }
    assert record["input_tokens"] == 4  # the record keeps brainline's meaning: uncached
    assert span.end_time is not None and span.start_time is not None
    assert (span.end_time - span.start_time) / 1e6 == pytest.approx(record["duration_ms"], abs=0.01)
    base = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai_compatible",
        "gen_ai.request.model": "test-model",
        "gen_ai.response.model": "served-model",
        "server.address": "127.0.0.1",
        "server.port": port,
    }
    duration = record["duration_ms"] / 1000
    assert points() == [
        ("gen_ai.client.operation.duration", base, 1, duration),
        ("gen_ai.client.operation.time_to_first_chunk", base, 1, ttfc),
        ("gen_ai.client.token.usage", {**base, "gen_ai.token.type": "input"}, 1, 10),
        ("gen_ai.client.token.usage", {**base, "gen_ai.token.type": "output"}, 1, 2),
    ]


async def test_a_failed_turn_has_an_error_status_and_type() -> None:
    script = {"status": 401, "json": {"error": {"message": "no"}}}
    with pytest.raises(brainline.APIStatusError):
        await run(script, telemetry=True)
    span = only_span()
    assert span.status.status_code == trace.StatusCode.ERROR
    assert span.status.description == "http_status"
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == "http_status"
    assert "gen_ai.response.finish_reasons" not in attributes
    assert "brainline.turn.cancelled" not in attributes
    [(name, point_attributes, count, _)] = points()
    assert name == "gen_ai.client.operation.duration" and count == 1
    assert point_attributes["error.type"] == "http_status"


async def test_a_cancelled_turn_ends_without_an_error() -> None:
    await run({"text": ["Once ", "upon"], "stall": 1}, cancel_after=1, telemetry=True)
    span = only_span()
    assert span.status.status_code == trace.StatusCode.UNSET
    attributes = dict(span.attributes or {})
    assert attributes["brainline.turn.cancelled"] is True
    assert "error.type" not in attributes
    assert "gen_ai.response.finish_reasons" not in attributes
    durations = [p for p in points() if p[0] == "gen_ai.client.operation.duration"]
    assert [p[1]["brainline.turn.cancelled"] for p in durations] == [True]


async def test_a_retried_turn_is_one_span_counting_its_attempts() -> None:
    script = [
        {"status": 503, "headers": {"retry-after-ms": "0"}, "json": {"error": {}}},
        {"text": ["ok"]},
    ]
    await run(script, telemetry=True, max_retries=1)
    attributes = dict(only_span().attributes or {})
    assert attributes["brainline.turn.attempts"] == 2
    assert "error.type" not in attributes


async def test_the_span_is_a_child_of_the_span_current_at_the_start() -> None:
    # The turn starts inside the caller's span and ends after it: the parent is the one current
    # at the start.
    tracer = trace.get_tracer("test")
    async with MockServer({"text": ["Hi", "!"]}) as url:
        llm = BaseLLM(make_config(base_url=url, telemetry=True))
        with tracer.start_as_current_span("pipeline") as parent:
            stream = llm.stream(MESSAGES)
            await anext(stream)
        [event async for event in stream]
        await llm.aclose()
    spans = {span.name: span for span in SPANS.get_finished_spans()}
    child = spans["chat test-model"]
    assert child.parent is not None
    assert child.parent.span_id == parent.get_span_context().span_id
    assert child.context is not None
    assert child.context.trace_id == parent.get_span_context().trace_id


async def test_content_is_recorded_only_when_captured() -> None:
    script = {"reasoning": ["hm"], "text": ["Hi"],
              "tool_calls": [{"id": "c1", "name": "f", "arguments": ["{\"a\":", "1}"]}]}  # fmt: skip
    await run(script, telemetry=True)
    attributes = dict(only_span().attributes or {})
    assert "gen_ai.input.messages" not in attributes
    assert "gen_ai.output.messages" not in attributes
    SPANS.clear()
    await run(script, telemetry=True, capture_message_content=True)
    attributes = dict(only_span().attributes or {})
    assert json.loads(str(attributes["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "Hi"}]}
    ]
    assert json.loads(str(attributes["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [
                {"type": "reasoning", "content": "hm"},
                {"type": "text", "content": "Hi"},
                {"type": "tool_call", "id": "c1", "name": "f", "arguments": '{"a":1}'},
            ],
            "finish_reason": "tool_calls",
        }
    ]


async def test_a_preset_names_its_well_known_provider() -> None:
    async with MockServer({"text": ["Hi"]}) as url:
        llm = brainline.MistralLLM(base_url=url, model="m", api_key=KEY, telemetry=True)
        [event async for event in llm.stream(MESSAGES)]
        await llm.aclose()
    assert dict(only_span().attributes or {})["gen_ai.provider.name"] == "mistral_ai"


async def test_without_the_api_telemetry_stays_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(telemetry, "_api", None)
    monkeypatch.setattr(telemetry, "_missing", False)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # import raises ImportError
    with caplog.at_level(logging.WARNING, logger="brainline"):
        llm = BaseLLM(make_config(telemetry=True))
        BaseLLM(make_config(telemetry=True))
    assert llm._telemetry is None
    warnings = [r for r in caplog.records if "opentelemetry-api is not installed" in r.message]
    assert len(warnings) == 1


async def test_a_failing_exporter_never_breaks_the_turn(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: Any) -> Any:
        raise RuntimeError("exporter down")

    monkeypatch.setattr(telemetry._Api, "tracer", broken)
    with caplog.at_level(logging.WARNING, logger="brainline"):
        events = await run({"text": ["Hi"]}, telemetry=True)
    assert [e["type"] for e in events] == ["text", "finish"]
    assert any("telemetry failed: RuntimeError" in r.message for r in caplog.records)
