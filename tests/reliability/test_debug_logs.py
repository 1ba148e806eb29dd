"""BRAINLINE_LOG=debug, as a user turns it on: each language, in its own process, logs a line per
request, per answer and per turn outcome on stderr, the same kinds of lines with the same fields,
and never the API key, the session key or the raw caller number (searched for in every line).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "typescript" / "dist"
KEY = "sk-log-secret-123"
SESSION_KEY = "sess-log-secret-456"
CALLER = "+15550001234"
CALLER_DIGITS = "15550001234"

# One turn answered 503 then streamed with a request id, then one that fails with 401.
SCRIPT = [
    {"status": 503, "json": {"error": {"message": "busy"}}},
    {"headers": {"x-request-id": "req-log-1"}, "text": ["Hi"]},
    {"status": 401, "headers": {"x-request-id": "req-log-2"}, "json": {"error": {"message": "no"}}},
]

PY_PROGRAM = """
import asyncio, json, sys
from brainline import HermesLLM
from brainline.testing import MockServer

async def main():
    async with MockServer(json.loads(sys.argv[1])) as url:
        llm = HermesLLM(base_url=url, api_key=sys.argv[2], session_key=sys.argv[3])
        for _ in range(2):
            try:
                async for _ in llm.stream([{"role": "user", "content": "hi"}], call_id="c1",
                                          caller=sys.argv[4]):
                    pass
            except Exception as exc:
                print("error", exc.code, file=sys.stderr)
        await llm.aclose()

asyncio.run(main())
"""

TS_PROGRAM = """
const { HermesLLM } = await import(process.env.BRAINLINE_ENTRY);
const { MockServer } = await import(process.env.BRAINLINE_TESTING);
const [script, key, sessionKey, caller] = process.argv.slice(1);
const server = new MockServer(JSON.parse(script));
const url = await server.start();
const llm = new HermesLLM({ baseUrl: url, apiKey: key, sessionKey });
for (let i = 0; i < 2; i++) {
  try {
    for await (const _ of llm.stream([{ role: "user", content: "hi" }], null, { callId: "c1", caller })) {}
  } catch (err) {
    console.error("error", err.code);
  }
}
await llm.close();
await server.stop();
"""


def _run(argv: list[str], env: dict[str, str]) -> str:
    args = [json.dumps(SCRIPT), KEY, SESSION_KEY, CALLER]
    done = subprocess.run(
        [*argv, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def _python() -> str:
    return _run([sys.executable, "-c", PY_PROGRAM], {"BRAINLINE_LOG": "debug"})


def _typescript() -> str:
    if shutil.which("node") is None or not (DIST / "index.js").exists():
        pytest.fail("needs node and typescript/dist (npm run build)")
    env = {
        "BRAINLINE_LOG": "debug",
        "BRAINLINE_ENTRY": (DIST / "index.js").as_uri(),
        "BRAINLINE_TESTING": (DIST / "testing.js").as_uri(),
    }
    return _run(["node", "--input-type=module", "-e", TS_PROGRAM], env)


def _kinds(stderr: str) -> list[str]:
    """Each brainline line as its kind and fields: the message with times and ports dropped."""
    kinds = []
    for line in stderr.splitlines():
        match = re.search(r"(request POST|answer HTTP|retry \d+|turn \w+) ?(.*)", line)
        if match and "brainline" in line:
            fields = re.sub(r"=[0-9.]+(?= |$)", "=N", match.group(2))
            kinds.append(f"{match.group(1)} {re.sub(r':[0-9]+/', ':P/', fields)}")
    return kinds


@pytest.mark.parametrize("run", [_python, _typescript], ids=["python", "typescript"])
def test_debug_logs_every_request_answer_and_outcome_without_secrets(run: object) -> None:
    stderr = run()  # type: ignore[operator]
    lines = [line for line in stderr.splitlines() if "brainline" in line]
    for line in lines:
        for secret in (KEY, SESSION_KEY, CALLER_DIGITS, "Bearer"):
            assert secret not in line, line
    kinds = _kinds(stderr)
    # A 503 retried, the stream, then a 401: three requests, three answers, two outcomes.
    assert [k.split(" ")[0] + " " + k.split(" ")[1] for k in kinds] == [
        "request POST",
        "answer HTTP",
        "retry 1",
        "request POST",
        "answer HTTP",
        "turn finished",
        "request POST",
        "answer HTTP",
        "turn failed",
    ]
    assert any("request_id=req-log-1" in k for k in kinds)
    assert any("error_code=http_status" in k and "request_id=req-log-2" in k for k in kinds)


def test_both_languages_log_the_same_lines() -> None:
    assert _kinds(_python()) == _kinds(_typescript())
