"""The Python and TypeScript SSE decoders agree on a shared corpus of 10,000 generated streams.

The corpus is regenerated from a fixed seed (tests/fuzz/corpus.py) into a temp dir; the TypeScript
decoder (typescript/src/core/sse.ts, bundled with the repo's esbuild) decodes it in one node process.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "fuzz"))

import corpus  # noqa: E402

ESBUILD = ROOT / "typescript" / "node_modules" / ".bin" / "esbuild"


@pytest.fixture(scope="module")
def ts_decode(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """streams -> results, through the TypeScript decoder in one node process."""
    if shutil.which("node") is None or not ESBUILD.exists():
        pytest.fail("node and typescript/node_modules (npm ci) are needed for the corpus check")
    tmp = tmp_path_factory.mktemp("sse-corpus")
    bundle = tmp / "sse.mjs"
    subprocess.run(
        [
            str(ESBUILD),
            str(ROOT / "typescript/src/core/sse.ts"),
            "--bundle",
            "--format=esm",
            "--platform=node",
            "--log-level=warning",
            f"--outfile={bundle}",
        ],
        check=True,
    )

    def run(path: Path) -> list[Any]:
        out = path.with_suffix(".out.json")
        subprocess.run(
            ["node", str(ROOT / "tests/fuzz/decode_corpus.mjs"), str(bundle), str(path), str(out)],
            check=True,
            timeout=120,
        )
        result: list[Any] = json.loads(out.read_text(encoding="utf-8"))
        return result

    return run


def test_corpus_is_deterministic_and_large_enough() -> None:
    assert corpus.generate(corpus.SEED, 200) == corpus.generate(corpus.SEED, 200)
    assert corpus.generate(corpus.SEED, 200) != corpus.generate(corpus.SEED + 1, 200)
    assert corpus.COUNT >= 10_000


def test_python_and_typescript_decoders_agree(tmp_path: Path, ts_decode: Any) -> None:
    path = tmp_path / "corpus.json.gz"
    data = corpus.write(path)
    assert len(data["streams"]) >= 10_000
    ts = ts_decode(path)
    py = [corpus.decode(stream) for stream in data["streams"]]
    assert len(ts) == len(py)
    mismatches = [i for i, (a, b) in enumerate(zip(py, ts, strict=True)) if a != b]
    detail = [
        {"stream": data["streams"][i], "python": py[i], "typescript": ts[i]} for i in mismatches[:3]
    ]
    assert not mismatches, f"{len(mismatches)} streams differ, first: {json.dumps(detail)[:3000]}"
    # The corpus exercises what it should: many events, limit errors, named events, U+FFFD.
    events = [ev for result in py for ev in result if isinstance(ev, list)]
    assert len(events) > 15_000
    assert sum(1 for result in py if result and isinstance(result[-1], dict)) > 200
    assert sum(1 for ev in events if ev[0] is not None) > 1_000
    assert sum(1 for ev in events if "\ufffd" in ev[1]) > 500
    # Invalid UTF-8 also under small limits, where the limits count input bytes.
    small = [result for result, s in zip(py, data["streams"], strict=True) if s["max_line"]]
    assert sum(1 for result in small if any("\ufffd" in str(ev) for ev in result)) > 300


def test_limits_count_the_same_bytes_on_invalid_utf8(tmp_path: Path, ts_decode: Any) -> None:
    streams = corpus.LIMITS_ON_INVALID_UTF8
    path = tmp_path / "limits.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"streams": streams}).encode()))
    py = [corpus.decode(stream) for stream in streams]
    assert ts_decode(path) == py
    # Events on the limits and errors one byte over them.
    assert sum(1 for result in py if result and isinstance(result[-1], dict)) >= 3
    assert sum(1 for result in py if result and not isinstance(result[-1], dict)) >= 3
