"""OpenTelemetry parity: the turns of turns.json, run by both languages with telemetry and content
capture on, give spans and metric points with equal names, kinds, statuses and attributes (times
and the mock server's port excluded); and no exported attribute holds the API key, the session
key or the raw caller number.

dump_py.py and dump_ts.mjs each run in a process of their own (the global providers can be set
once per process); the TypeScript side drives the built package (cd typescript && npm run build).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the test dependency group installs it")

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
TURNS = json.loads((HERE / "turns.json").read_text(encoding="utf-8"))
TIMES = {"gen_ai.response.time_to_first_chunk"}
SECONDS = {"gen_ai.client.operation.duration", "gen_ai.client.operation.time_to_first_chunk"}
# What each turn must export in both languages (names only; the values are compared across).
EXPECTED_METRICS = {
    "finished": ["duration", "time_to_first_chunk", "token.usage", "token.usage"],
    "failed": ["duration"],
    "cancelled": ["duration", "time_to_first_chunk"],
    "retried": ["duration", "time_to_first_chunk", "token.usage", "token.usage"],
}


def _run(command: list[str]) -> str:
    # Only the turns' own options turn telemetry on: no BRAINLINE_* / OTEL_* from outside.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRAINLINE_", "OTEL_"))}
    process = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT, env=env
    )
    if process.returncode != 0:
        pytest.fail(f"{command[1]} exited {process.returncode}:\n{process.stderr[-4000:]}")
    return process.stdout


@pytest.fixture(scope="module")
def raw() -> dict[str, str]:
    node = shutil.which("node")
    entry = ROOT / "typescript" / "dist" / "index.js"
    if node is None or not entry.exists():
        missing = "node is not installed" if node is None else f"{entry} does not exist"
        if os.environ.get("BRAINLINE_PARITY_SKIP_TS") == "1":
            pytest.skip(missing)
        pytest.fail(missing)
    return {
        "python": _run([sys.executable, str(HERE / "dump_py.py")]),
        "typescript": _run([node, str(HERE / "dump_ts.mjs")]),
    }


def _normalized(text: str) -> dict[str, Any]:
    out = {}
    for turn in json.loads(text):
        spans = []
        for span in turn["spans"]:
            assert span["duration_ms"] > 0
            attributes = dict(span["attributes"])
            for key in TIMES & attributes.keys():
                attributes[key] = "TIME"
            attributes["server.port"] = "PORT"
            spans.append({**span, "duration_ms": "TIME", "attributes": attributes})
        points = []
        for point in turn["metrics"]:
            attributes = {**point["attributes"], "server.port": "PORT"}
            timed = point["name"] in SECONDS
            points.append(
                {**point, "attributes": attributes, "sum": "TIME" if timed else point["sum"]}
            )
        points.sort(key=lambda p: (p["name"], json.dumps(p["attributes"], sort_keys=True)))
        out[turn["id"]] = {"error": turn["error"], "spans": spans, "metrics": points}
    return out


@pytest.mark.parametrize("turn_id", [turn["id"] for turn in TURNS["turns"]])
def test_same_spans_and_metrics(raw: dict[str, str], turn_id: str) -> None:
    python = _normalized(raw["python"])[turn_id]
    typescript = _normalized(raw["typescript"])[turn_id]
    assert len(python["spans"]) == 1
    span = python["spans"][0]
    assert span["name"] == "chat parity-model"
    assert span["kind"] == "CLIENT"
    names = sorted(
        p["name"].removeprefix("gen_ai.client.").removeprefix("operation.")
        for p in python["metrics"]
    )
    assert names == sorted(EXPECTED_METRICS[turn_id])
    assert python == typescript


def test_no_secret_in_any_exported_attribute(raw: dict[str, str]) -> None:
    for language, text in raw.items():
        for secret in (TURNS["api_key"], TURNS["session_key"], TURNS["caller"]):
            assert secret not in text, f"{language} exported {secret!r}"
        # The dump holds every attribute of every span and point: the secrets were in play.
        assert "gen_ai.input.messages" in text
