"""What OpenTelemetry costs a turn, in both languages (issue 16; part of `nox -s bench`).

Per language, in a fresh process against the bench server (server.py): the same turns with
telemetry off (the default) and on (the OpenTelemetry SDK's tracer and meter providers, spans to a
SimpleSpanProcessor whose exporter drops them, metrics aggregated by an in-memory reader; content
capture off), interleaved, ROUNDS rounds each; the figure is the median per-turn time. Off is the
figure every other section measures; on minus off is what telemetry costs.

    python tests/bench/telemetry.py [--rounds 5] [--quick]   (starts its own bench server)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
HEADING = "## Telemetry: OpenTelemetry on beside off"
MESSAGES = [{"role": "user", "content": "Hi"}]
# (figure, scenario path, turns per round): a one-chunk turn and a 200-chunk stream.
FIGURES = (("one-chunk turn", "burst/1", 200), ("200-chunk stream", "burst/200", 40))
QUICK_TURNS = {"burst/1": 50, "burst/200": 10}


# -- the Python side, in its own process (global providers are set once per process) --------------


async def _python_side(root: str, rounds: int, quick: bool) -> dict[str, Any]:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    import brainline

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    out: dict[str, Any] = {}
    for figure, scenario, turns in FIGURES:
        turns = QUICK_TURNS[scenario] if quick else turns
        llms = {
            mode: brainline.CustomLLM(
                base_url=f"{root}/{scenario}", model="bench", telemetry=mode == "on"
            )
            for mode in ("off", "on")
        }
        times: dict[str, list[float]] = {"off": [], "on": []}
        for llm in llms.values():  # warm: connection, imports, instruments
            async for _ in llm.stream(MESSAGES):
                pass
        for _ in range(rounds):
            for mode, llm in llms.items():
                start = time.perf_counter()
                for _ in range(turns):
                    async for _ in llm.stream(MESSAGES):
                        pass
                times[mode].append((time.perf_counter() - start) / turns)
        for llm in llms.values():
            await llm.aclose()
        out[figure] = {mode: statistics.median(v) for mode, v in times.items()}
    spans_seen = reader.get_metrics_data() is not None
    assert spans_seen, "telemetry on recorded no metrics"
    return out


# -- both languages ---------------------------------------------------------------------------------


def _child(argv: list[str]) -> dict[str, Any]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("BRAINLINE_TELEMETRY", "OTEL_"))
    }
    if "BRAINLINE_DIST" in os.environ:
        env["BRAINLINE_DIST"] = os.environ["BRAINLINE_DIST"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1200, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:2]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run(root: str, rounds: int, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """{"py": {figure: {"off": s, "on": s}}, "node": {...}}: median seconds per turn."""
    log("telemetry: python")
    flags = ["--quick"] if quick else []
    py = _child([sys.executable, __file__, "--child", root, "--rounds", str(rounds), *flags])
    log("telemetry: node")
    node = _child(["node", str(HERE / "telemetry.mjs"), root, str(rounds), "1" if quick else "0"])
    return {"py": py, "node": node}


def report(results: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The Markdown section; no target, the figures are reported."""
    lines: list[str] = []
    add = lines.append
    add(HEADING)
    add("")
    add(
        "`python tests/bench/telemetry.py` (also part of `nox -s bench`): the same turns with the"
        " `telemetry` option off (the default) and on, against the bench server, in a fresh"
        " process per language with the OpenTelemetry SDK's tracer and meter providers installed"
        " (spans through a SimpleSpanProcessor to an exporter that drops them, metrics into an"
        " in-memory reader; content capture off). Median time per turn. Off is what every other"
        " section measures: it costs one check per turn; on adds one span and three histogram"
        " points per turn, made when the turn ends, and a check per chunk until the response id"
        " and model are seen."
    )
    add("")
    add("| language | figure | off | on | on - off per turn |")
    add("|---|---|---|---|---|")
    for lang, name in (("py", "Python"), ("node", "Node")):
        for figure, v in results[lang].items():
            off, on = v["off"], v["on"]
            add(
                f"| {name} | {figure} | {off * 1e6:,.0f} µs | {on * 1e6:,.0f} µs |"
                f" {(on - off) * 1e6:+,.0f} µs ({(on / off - 1) * 100:+.0f}%) |"
            )
    add("")
    return lines, []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", metavar="ROOT", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_python_side(args.child, args.rounds, args.quick))))
        return
    server = subprocess.Popen(
        [sys.executable, str(HERE / "server.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    try:
        port = int(server.stdout.readline())
        results = run(f"http://127.0.0.1:{port}", args.rounds, args.quick, print)
    finally:
        server.stdin.close()
        server.wait(10)
    print("\n".join(report(results)[0]))


if __name__ == "__main__":
    main()
