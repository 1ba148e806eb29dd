"""The `brainline` command (brainline.cli): flags from the spec, output, exit codes, the wire."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from brainline import ConfigError, cli
from brainline._core.session import hash_caller
from brainline._generated.cli_options import OPTIONS, PROVIDERS
from brainline.testing import MockServer

SRC = Path(cli.__file__).resolve().parents[1]
TURN = {
    "text": ["It is ", "sunny."],
    "tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": ['{"city":', '"Rome"}']}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 4},
}


async def run(*argv: str) -> tuple[int, str, str]:
    """One `brainline chat ...` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    args = cli.build_parser().parse_args(["chat", *argv])
    try:
        code = await cli.chat(args, out, err)
    except cli._UsageError as exc:
        return cli.EXIT_CONFIG, out.getvalue(), str(exc)
    return code, out.getvalue(), err.getvalue()


def test_every_spec_option_but_secrets_and_callables_is_a_flag() -> None:
    names = {o.name for o in OPTIONS}
    assert {"base_url", "model", "timeout", "api_key_env", "temperature", "agent"} <= names
    assert "api_key" not in names  # argv is visible to other users of the machine
    assert "session_key_factory" not in names
    assert all(o.flag == "--" + o.name.replace("_", "-") for o in OPTIONS)
    assert PROVIDERS["hermes"].defaults["timeout"] == 120
    assert PROVIDERS["hermes"].class_name == "HermesLLM"


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [
        ("number", "1.5", 1.5),
        ("number", "2", 2.0),
        ("number", "abc", "abc"),
        ("integer", "3", 3),
        ("integer", "3.5", "3.5"),
        ("boolean", "true", True),
        ("boolean", "no", "no"),
        ("headers", '{"X-A": "1"}', {"X-A": "1"}),
        ("json_object", "{bad", "{bad"),
        ("tool_choice", "auto", "auto"),
        ("tool_choice", '{"type": "function"}', {"type": "function"}),
        ("string", "12", "12"),
    ],
)
def test_parse_flag_reads_the_spec_type_and_passes_bad_text_on(
    kind: str, text: str, value: Any
) -> None:
    assert cli.parse_flag(kind, text) == value


async def test_json_mode_prints_one_event_per_line_and_flags_reach_the_wire() -> None:
    async with MockServer(TURN) as url:
        code, out, _ = await run(
            "What is the weather?",
            *("--base-url", url, "--model", "m", "--json", "--temperature", "0.5"),
            *("--stop", "a", "--stop", "b", "--extra-headers", '{"X-Trace": "t1"}'),
        )
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in events] == [
        "text",
        "text",
        "tool_call",
        "tool_call",
        "tool_call",
        "usage",
        "finish",
    ]
    assert events[-1] == {"type": "finish", "reason": "tool_calls"}
    assert out.splitlines()[0] == '{"type":"text","content":"It is "}'


async def test_flags_and_session_arguments_reach_the_wire_without_the_raw_caller() -> None:
    server = MockServer(TURN)
    url = await server.start()
    try:
        code, _, err = await run(
            "hi",
            *("--provider", "hermes", "--base-url", url, "--temperature", "0.5"),
            *("--stop", "a", "--stop", "b", "--extra-headers", '{"X-Trace": "t1"}'),
            *("--session-key-from", "caller_hash", "--call-id", "c1", "--caller", "+15551234567"),
        )
        assert code == 0, err
        req = server.requests[0]
    finally:
        await server.stop()
    assert req.json is not None
    assert req.json["temperature"] == 0.5
    assert req.json["stop"] == ["a", "b"]
    assert req.header("x-trace") == "t1"
    assert req.header("x-hermes-session-id") == "patter-call-c1"
    assert req.header("x-hermes-session-key") == "patter-caller-" + hash_caller("+15551234567")
    assert b"5551234567" not in req.body
    assert all("5551234567" not in value for _, value in req.headers)
    assert "5551234567" not in err


async def test_plain_mode_streams_text_to_stdout_and_the_rest_to_stderr() -> None:
    async with MockServer(TURN) as url:
        code, out, err = await run("hi", "--base-url", url, "--model", "m")
    assert code == 0
    assert out == "It is sunny.\n"
    lines = err.splitlines()
    assert re.fullmatch(r"timing: first token \d+ ms, \d+ ms in all, 7 chunks", lines.pop(2))
    assert lines == [
        "usage: 9 in (+0 cached), 4 out",
        'tool call: get_weather({"city":"Rome"}) id=call_1',
        "finish: tool_calls",
    ]


async def test_an_api_error_exits_1_with_its_code() -> None:
    script = {"status": 500, "json": {"error": {"message": "boom"}}}
    async with MockServer(script) as url:
        code, out, err = await run("hi", "--base-url", url, "--model", "m", "--max-retries", "0")
    assert code == 1
    assert out == ""
    assert err.startswith("error: http_status: ")
    assert "boom" in err


async def test_a_stream_error_exits_1_after_the_text_already_printed() -> None:
    script = {"sse": ['data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n', "data: {oops\n\n"]}
    async with MockServer(script) as url:
        code, out, err = await run("hi", "--base-url", url, "--model", "m", "--json")
    assert code == 1
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0] == {"type": "text", "content": "Hel"}
    assert lines[1]["type"] == "error"
    assert lines[1]["code"] == "malformed"
    assert err.startswith("error: malformed: ")


async def test_a_config_error_exits_2_with_its_code() -> None:
    code, _, err = await run(
        "hi", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--timeout", "abc"
    )
    assert code == 2
    assert err.splitlines()[-1] == 'error: invalid_type: --timeout must be a number, got "abc"'


def test_flag_message_names_the_flag_and_says_unset() -> None:
    err = ConfigError("invalid_type", 'max_retries must be an integer, got "x"')
    assert cli.flag_message(err) == '--max-retries must be an integer, got "x"'
    err = ConfigError(
        "invalid_session_key_from", "session_key_from must be 'caller_hash' or None, got \"x\""
    )
    assert cli.flag_message(err) == "--session-key-from must be 'caller_hash' or unset, got \"x\""


async def test_a_flag_the_provider_does_not_take_is_a_usage_error() -> None:
    code, _, err = await run("hi", "--provider", "hermes", "--agent", "main")
    assert code == 2
    assert err == "--agent not accepted by --provider hermes"


async def test_without_base_url_chat_talks_to_the_embedded_server() -> None:
    code, out, err = await run("hi", "--json")
    assert code == 0
    assert err.startswith("embedded mock server: http://127.0.0.1:")
    text = "".join(e["content"] for e in map(json.loads, out.splitlines()) if e["type"] == "text")
    assert text == "Hello from the brainline mock server."


def test_python_dash_m_brainline_runs_the_same_program() -> None:
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "brainline", "chat", "hi"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Hello from the brainline mock server.\n"
    usage = subprocess.run(
        [sys.executable, "-m", "brainline", "chat", "hi", "--no-such-flag"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert usage.returncode == 2
    assert usage.stderr.startswith("error: usage: ")
