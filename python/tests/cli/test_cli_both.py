"""Both CLIs (`python -m brainline`, `node typescript/dist/cli.js`) against one MockServer: the same
stdout, byte for byte, the same exit code and the same request bytes on the wire.

Needs node and the TypeScript build (`cd typescript && npm run build`); without them the test fails,
unless BRAINLINE_PARITY_SKIP_TS=1 asks to skip it (as the parity suite does).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from brainline.testing import MockServer

ROOT = Path(__file__).resolve().parents[3]
CLI_TS = ROOT / "typescript" / "dist" / "cli.js"
SRC = ROOT / "python" / "src"

TURN = {
    "text": ["Città ", "soleggiata ☀ ", 'with "quotes"\n'],
    "tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": ['{"city":', '"Rome"}']}],
    "usage": {
        "prompt_tokens": 9,
        "completion_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 3},
    },
}
CASES: list[tuple[str, Any, list[str]]] = [
    ("turn_json", TURN, ["--json"]),
    ("turn_plain", TURN, []),
    (
        "hermes_session_json",
        TURN,
        [
            *("--provider", "hermes", "--json", "--call-id", "c1", "--caller", "+15551234567"),
            *("--session-key-from", "caller_hash", "--temperature", "0.25", "--stop", "a"),
            *("--extra-headers", '{"X-Trace":"t"}', "--max-tokens", "64"),
        ],
    ),
    (
        "http_500",
        {"status": 500, "json": {"error": {"message": "boom"}}},
        ["--json", "--max-retries", "0"],
    ),
    (
        "malformed",
        {"sse": ['data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n', "data: {x\n\n"]},
        ["--json"],
    ),
    ("bad_timeout", TURN, ["--json", "--timeout", "abc"]),
    ("bad_bool", TURN, ["--json", "--parallel-tool-calls", "yes"]),
    ("bad_choice", TURN, ["--json", "--reasoning", "loud"]),
    ("bad_header_json", TURN, ["--json", "--extra-headers", "{not json"]),
    ("bad_session_key_from", TURN, ["--json", "--session-key-from", "phone"]),
    ("openclaw_agent", TURN, ["--provider", "openclaw", "--agent", "main", "--json"]),
]


def _tools() -> str:
    node = shutil.which("node")
    if node is None or not CLI_TS.exists():
        if os.environ.get("BRAINLINE_PARITY_SKIP_TS") == "1":
            pytest.skip("node or the TypeScript build is missing")
        pytest.fail("node or typescript/dist/cli.js is missing: cd typescript && npm run build")
    return node


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "API_SERVER_KEY": "", "OPENAI_API_KEY": ""}
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, env=env, encoding="utf-8"
    )


OURS = ("content-type", "accept", "user-agent", "authorization")


def _wire(server: MockServer) -> list[tuple[str, list[tuple[str, str]], bytes]]:
    """What brainline controls in each request: path, its own headers in order, the body bytes
    (the transports add others, e.g. accept-encoding, which differ between httpx and fetch)."""
    return [
        (r.path, [(k, v) for k, v in r.headers if k in OURS or k.startswith("x-")], r.body)
        for r in server.requests
    ]


@pytest.mark.parametrize(("name", "script", "flags"), CASES, ids=[c[0] for c in CASES])
def test_both_clis_print_the_same_bytes(name: str, script: Any, flags: list[str]) -> None:
    node = _tools()
    server = MockServer(script)
    with server as url:
        argv = ["chat", "What is the weather?", "--base-url", url, *flags]
        if "--provider" not in flags:
            argv += ["--model", "m"]
        py = _run([sys.executable, "-m", "brainline", *argv])
        py_wire = _wire(server)
        server.reset()
        ts = _run([node, str(CLI_TS), *argv])
        ts_wire = _wire(server)
    assert py.stdout, py.stderr
    assert (ts.returncode, ts.stdout) == (py.returncode, py.stdout), (py.stderr, ts.stderr)
    assert ts.stderr.splitlines()[-1:] == py.stderr.splitlines()[-1:]
    assert ts_wire == py_wire
    assert b"5551234567" not in b"".join(body for _, _, body in py_wire)


@pytest.mark.parametrize("lang", ["python", "typescript"])
def test_mock_server_prints_its_url_and_stops_at_end_of_stdin(lang: str) -> None:
    cmd = [sys.executable, "-m", "brainline"] if lang == "python" else [_tools(), str(CLI_TS)]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run(
        [*cmd, "mock-server", "--port", "0"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", proc.stdout.splitlines()[0])
