"""The bench's own server and Python harness, checked in seconds (the bench itself is `nox -s bench`).

These guard what the figures rely on: the server's streams are valid OpenAI-compatible SSE that
brainline decodes to the expected events, one connection serves every turn, `/next` answers one
request only, and a cancelled stall is seen as a close.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import py_bench  # noqa: E402
import server  # noqa: E402


@pytest.fixture(scope="module")
def root() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "server.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        yield f"http://127.0.0.1:{int(proc.stdout.readline())}"
    finally:
        proc.stdin.close()
        proc.wait(10)


def test_frames_are_chunked_sse() -> None:
    frames = server.text_frames(3)
    assert frames[-1] == b"0\r\n\r\n"
    assert frames[-2].endswith(b"data: [DONE]\n\n\r\n")
    size, _, rest = frames[1].partition(b"\r\n")
    assert int(size, 16) == len(rest) - 2  # the chunk's length, then CRLF
    assert b'"content":"w001 "' in frames[2]


async def test_brainline_reads_every_scenario_on_one_connection(root: str) -> None:
    control = py_bench.Control(root)
    candidate = py_bench.Brainline(root)
    try:
        stats = await control.stats()
        events = [ev async for ev in await py_bench.items(candidate.turn("burst/3"))]
        assert [ev["type"] for ev in events] == ["text"] * 3 + ["usage", "finish"]
        assert "".join(ev["content"] for ev in events[:3]) == "w000 w001 w002 "
        assert events[-1]["reason"] == "stop"
        assert await py_bench.drain(candidate.turn("drip/50")) == 50 * 5
        calls = [
            ev
            async for ev in await py_bench.items(candidate.turn("tools/10"), tools=True)
            if ev["type"] == "tool_call"
        ]
        assert "".join(ev["arguments"] for ev in calls) == '{"k":"xxxxxxxx"}'
        assert calls[0]["name"] == "lookup"
        # Turns on the same client reuse its connection; /next answers one request only.
        before = (await control.stats())["connections"]
        await control.client.post(root + "/next/burst/1")
        assert await py_bench.drain(candidate.turn("burst/3")) == 5
        assert await py_bench.drain(candidate.turn("burst/3")) == 15
        assert (await control.stats())["connections"] == before
        # Three clients (burst/3, drip/50, tools/10), one connection each.
        assert before - stats["connections"] == 3
    finally:
        await candidate.close()
        await control.client.aclose()


@pytest.mark.parametrize("scenario", ["stallhead/0", "stallmid/0"])
async def test_cancel_is_timed_to_the_server_close(root: str, scenario: str) -> None:
    control = py_bench.Control(root)
    candidate = py_bench.RawHttpx(root)
    try:
        returned, closed = await py_bench.cancel_once(candidate, scenario, control)
        assert 0 < returned < 5 and 0 < closed < 5
        assert (await control.stats())["stalled"] == 0
    finally:
        await candidate.close()
        await control.client.aclose()


def test_p99_and_summary() -> None:
    values = [float(v) for v in range(1, 101)]
    assert py_bench.p99(values) == 99.0
    assert py_bench.summary([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
