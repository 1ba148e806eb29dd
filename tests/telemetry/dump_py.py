"""Run tests/telemetry/turns.json through the Python package with telemetry and content capture on,
with the OpenTelemetry SDK's in-memory exporters, and print the spans and metric points as JSON.

dump_ts.mjs does the same in TypeScript; test_otel_parity.py compares the two. A process of its
own: OpenTelemetry's global providers can be set once per process.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from brainline.testing import MockServer

TURNS = json.loads((Path(__file__).parent / "turns.json").read_text(encoding="utf-8"))

spans = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(tracer_provider)
reader = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))


def _value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _spans() -> list[dict[str, Any]]:
    out = []
    for span in spans.get_finished_spans():
        out.append(
            {
                "name": span.name,
                "kind": span.kind.name,
                "status": span.status.status_code.name,
                "status_message": span.status.description,
                "duration_ms": (span.end_time - span.start_time) / 1e6,
                "attributes": {k: _value(v) for k, v in span.attributes.items()},
            }
        )
    spans.clear()
    return out


def _points() -> list[dict[str, Any]]:
    out = []
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    out.append(
                        {
                            "name": metric.name,
                            "unit": metric.unit,
                            "attributes": dict(point.attributes),
                            "count": point.count,
                            "sum": point.sum,
                            "bounds": list(point.explicit_bounds),
                        }
                    )
    return out


async def run(turn: dict[str, Any]) -> dict[str, Any]:
    module = importlib.import_module(f"brainline.{turn['provider']}")
    async with MockServer(turn["script"]) as url:
        llm = module.LLM(
            base_url=url,
            model="parity-model",
            api_key=TURNS["api_key"],
            session_key_header="X-Memory-Scope",
            session_key=TURNS["session_key"],
            telemetry=True,
            capture_message_content=True,
            **turn["options"],
        )
        cancel = asyncio.Event()
        error = None
        seen = 0
        try:
            async for _ in llm.stream(
                turn["messages"], cancel_event=cancel, call_id="call-1", caller=TURNS["caller"]
            ):
                seen += 1
                if seen == turn.get("cancel_after_events"):
                    cancel.set()
        except Exception as exc:
            error = getattr(exc, "code", type(exc).__name__)
        await llm.aclose()
    return {"id": turn["id"], "error": error, "spans": _spans(), "metrics": _points()}


async def main() -> None:
    out = [await run(turn) for turn in TURNS["turns"]]
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    asyncio.run(main())
