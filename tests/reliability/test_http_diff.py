"""The TypeScript HTTP/1.1 transport and llhttp (node:http's parser) agree on 420 responses.

A fixed-seed sample of the differential fuzz in tests/fuzz/http_diff.mjs, which `nox -s fuzz` runs
for longer with a fresh seed: 20 responses of each class (framing, chunk lines, heads broken in
every way the fuzzer knows), cut into socket writes and served from 127.0.0.1 to both clients.
Python parses no HTTP itself (httpx and h11 do); docs/RELIABILITY.md says why there is no Python
half.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEED = 20261125
PER_CLASS = 20
CLASSES = 21


def test_transport_and_llhttp_agree(tmp_path: Path) -> None:
    if shutil.which("node") is None or not (ROOT / "typescript/node_modules/esbuild").exists():
        pytest.fail(
            "node and typescript/node_modules (npm ci) are needed for the differential fuzz"
        )
    out = tmp_path / "summary.json"
    cases = PER_CLASS * CLASSES
    command = ["node", str(ROOT / "tests/fuzz/http_diff.mjs"), "--seed", str(SEED)]
    command += ["--cases", str(cases), "--seconds", "120", "--json", str(out)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert out.exists(), run.stderr[-3000:]
    summary = json.loads(out.read_text(encoding="utf-8"))
    assert summary["disagreements"] == [], run.stdout[-6000:]
    assert run.returncode == 0, run.stderr[-3000:]
    assert summary["cases"] == cases
    assert len(summary["classes"]) == CLASSES
    assert all(tally["cases"] == PER_CLASS for tally in summary["classes"].values())
    # What must be refused is refused by both: smuggling and splitting shapes.
    for name in ("cl-te", "space-before-colon"):
        assert summary["classes"][name]["refused"] == PER_CLASS, name
    # The cuts reach the client as separate reads (about six per response).
    assert summary["reads"] > 3 * cases
