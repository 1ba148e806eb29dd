"""`nox -s peers`: both languages against real OpenAI-compatible servers on 127.0.0.1.

Starts the LiteLLM proxy (a model answering with `mock_response`, no network) and the Hermes agent
API server (its model provider pointed at brainline.testing.MockServer), runs the same turns through
the Python package and, via tests/peers/peer_ts.mjs, the built TypeScript package, checks what each
server should produce and that both languages produced the same events or typed errors. Not a
pytest module (nothing here is collected by `nox -s tests`). What it checks: docs/peers.md.

    python tests/peers/run_peers.py --hermes-python PATH --node-package typescript [--only NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

import brainline
import brainline.hermes
import brainline.litellm
from brainline.testing import MockServer

HERE = Path(__file__).resolve().parent
LITELLM_KEY = "sk-peers-master-0123456789"  # the proxy's master key (test-only)
HERMES_KEY = "peers-hermes-api-key-0123456789"  # API_SERVER_KEY: 16+ characters (test-only)
NO_KEY_ENV = "BRAINLINE_PEERS_NO_KEY"  # never set: a keyless client sends no Authorization
LITELLM_REPLY = "Hello from the LiteLLM proxy."
LITELLM_DELAY_S = 1.5  # mock-gpt-slow waits this long before its first token
READY_TIMEOUT_S = 180.0

LITELLM_CONFIG = f"""\
model_list:
  - model_name: mock-gpt
    litellm_params:
      model: openai/mock-gpt
      api_key: mock-upstream-key
      mock_response: "{LITELLM_REPLY}"
  - model_name: mock-gpt-slow
    litellm_params:
      model: openai/mock-gpt-slow
      api_key: mock-upstream-key
      mock_response: "{LITELLM_REPLY}"
      mock_delay: {LITELLM_DELAY_S}
general_settings:
  master_key: {LITELLM_KEY}
"""

HERMES_CONFIG = """\
model:
  default: mock-model
  provider: custom
  base_url: {upstream}
  api_key: mock-upstream-key
  context_length: 128000
security:
  tirith_enabled: false
"""

Turn = dict[str, Any]
Result = dict[str, Any]


class PeerFailure(AssertionError):
    pass


def check(condition: bool, what: str, detail: Any = None) -> None:
    if not condition:
        raise PeerFailure(f"{what}: {json.dumps(detail, default=str)[:2000]}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server_process(
    name: str, argv: list[str], env: dict[str, str], log: Path, ready: Callable[[], bool]
) -> Iterator[None]:
    """Start a server in its own process group, wait until `ready()`, stop it (only it) after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        started = time.monotonic()
        while not ready():
            if proc.poll() is not None:
                raise PeerFailure(f"{name} exited with {proc.returncode}; log:\n{_tail(log)}")
            if time.monotonic() - started > READY_TIMEOUT_S:
                raise PeerFailure(f"{name} not ready after {READY_TIMEOUT_S:.0f} s:\n{_tail(log)}")
            time.sleep(0.5)
        print(f"{name}: ready in {time.monotonic() - started:.1f} s", flush=True)
        yield
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _get_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# --- running turns in both languages -------------------------------------------------------------

PROVIDERS = {"litellm": brainline.litellm.LLM, "hermes": brainline.hermes.LLM}


def _error_info(exc: BaseException) -> dict[str, Any]:
    info: dict[str, Any] = {
        "class": type(exc).__name__,
        "code": getattr(exc, "code", None),
        "message": str(exc),
    }
    if isinstance(exc, brainline.APIStatusError):
        info["status"] = exc.status
        info["body"] = exc.body
    if isinstance(exc, brainline.StreamError):
        info["partial_text"] = exc.partial_text
    return info


async def _run_py(turns: list[Turn]) -> list[Result]:
    results = []
    for turn in turns:
        llm = PROVIDERS[turn["provider"]](**turn["options"])
        events: list[Any] = []
        error = None
        try:
            async for event in llm.stream(turn["messages"], call_id=turn.get("call_id")):
                events.append(dict(event))
        except brainline.BrainlineError as exc:
            error = _error_info(exc)
        finally:
            await llm.aclose()
        results.append({"name": turn["name"], "events": events, "error": error})
    return results


def run_py(turns: list[Turn]) -> list[Result]:
    return asyncio.run(_run_py(turns))


def run_ts(turns: list[Turn], node_package: str, workdir: Path) -> list[Result]:
    path = workdir / "turns.json"
    path.write_text(json.dumps(turns))
    done = subprocess.run(
        ["node", str(HERE / "peer_ts.mjs"), node_package, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    check(done.returncode == 0, "TypeScript runner failed", done.stderr[-3000:])
    results: list[Result] = json.loads(done.stdout)
    return results


def same_in_both(py: list[Result], ts: list[Result], what: str) -> None:
    """Both languages produced the same events and the same typed errors (class, code, status,
    message)."""
    for p, t in zip(py, ts, strict=True):
        check(p == t, f"{what}/{p['name']}: Python and TypeScript differ", {"py": p, "ts": t})
        if p["error"]:
            error = p["error"]
            print(
                f"{what}/{p['name']}: {error['class']} {error['code']} {error.get('status')}:"
                f" {error['message'][:160]!r}"
            )
        else:
            kinds = [e["type"] for e in p["events"]]
            print(f"{what}/{p['name']}: {len(kinds)} events, {sorted(set(kinds))}")


def text_of(result: Result) -> str:
    return "".join(e["content"] for e in result["events"] if e["type"] == "text")


def finish_of(result: Result) -> str | None:
    finishes = [e["reason"] for e in result["events"] if e["type"] == "finish"]
    return finishes[-1] if finishes else None


# --- LiteLLM ----------------------------------------------------------------------------------------


def litellm_checks(args: argparse.Namespace, workdir: Path) -> list[str]:
    config = workdir / "litellm.yaml"
    config.write_text(LITELLM_CONFIG)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    exe = shutil.which("litellm", path=str(Path(sys.executable).parent)) or "litellm"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    argv = [exe, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    passed = []
    with server_process(
        "litellm",
        argv,
        env,
        workdir / "litellm.log",
        lambda: _get_ok(f"{base}/health/liveliness"),
    ):
        common = {"base_url": f"{base}/v1", "model": "mock-gpt", "api_key_env": NO_KEY_ENV}
        turns: list[Turn] = [
            {"name": "turn", "provider": "litellm", "options": {**common, "api_key": LITELLM_KEY}},
            {"name": "bad_key", "provider": "litellm", "options": {**common, "api_key": "wrong"}},
            {"name": "keyless", "provider": "litellm", "options": common},
            {
                "name": "first_token_timeout",
                "provider": "litellm",
                "options": {
                    **common,
                    "api_key": LITELLM_KEY,
                    "model": "mock-gpt-slow",
                    "first_token_timeout": LITELLM_DELAY_S / 3,
                },
            },
        ]
        for turn in turns:
            turn["messages"] = [{"role": "user", "content": "Say hello."}]
        py = run_py(turns)
        ts = run_ts(turns, args.node_package, workdir)
        for lang, results in (("py", py), ("ts", ts)):
            ok, bad, keyless, slow = results
            check(
                (slow["error"] or {}).get("code") == "first_token_timeout",
                f"litellm/{lang}: the first-token clock runs while the headers are held back",
                slow,
            )
            check(ok["error"] is None, f"litellm/{lang}: streamed turn failed", ok)
            check(text_of(ok) == LITELLM_REPLY, f"litellm/{lang}: text", ok)
            check(finish_of(ok) == "stop", f"litellm/{lang}: finish", ok)
            check(
                (bad["error"] or {}).get("class") == "APIStatusError"
                and bad["error"]["status"] == 400,
                f"litellm/{lang}: a bad key is APIStatusError 400",
                bad,
            )
            check(
                (keyless["error"] or {}).get("class") == "APIStatusError"
                and keyless["error"]["status"] == 500,
                f"litellm/{lang}: no key is APIStatusError 500 (plain-text body)",
                keyless,
            )
        same_in_both(py, ts, "litellm")
        passed += [
            "litellm streamed turn (Python and TypeScript, same events)",
            "litellm bad key -> APIStatusError 400 (Python and TypeScript)",
            "litellm no key -> APIStatusError 500 (Python and TypeScript)",
            "litellm first_token_timeout while headers are held -> APITimeoutError (both)",
        ]
        # The raw wire: SSE framing, and the response headers held back until the first token (a
        # model that waits LITELLM_DELAY_S before it: the headers cannot come sooner).
        started = time.monotonic()
        with httpx.stream(
            "POST",
            f"{base}/v1/chat/completions",
            headers={"Authorization": f"Bearer {LITELLM_KEY}"},
            json={"model": "mock-gpt-slow", "stream": True, "messages": turns[0]["messages"]},
            timeout=60,
        ) as response:
            headers_s = time.monotonic() - started
            body = response.read().decode()
        check(headers_s >= LITELLM_DELAY_S * 0.9, "litellm holds the headers back", headers_s)
        passed.append("litellm holds the response headers until the first token (wire check)")
        check(
            response.headers.get("content-type", "").startswith("text/event-stream")
            and "data: [DONE]" in body,
            "litellm raw stream",
            body[-500:],
        )
        print(f"litellm: raw headers after {headers_s * 1000:.0f} ms", flush=True)
    return passed


# --- Hermes -----------------------------------------------------------------------------------------


def _user_texts(record: Any) -> list[str]:
    messages = (record.json or {}).get("messages", [])
    return [str(m.get("content")) for m in messages if isinstance(m, dict)]


def hermes_checks(args: argparse.Namespace, workdir: Path) -> list[str]:
    upstream = MockServer({"text": ["Hi ", "there."]})
    upstream_url = upstream.start_in_thread()
    try:
        return _hermes_checks(args, workdir, upstream, upstream_url)
    finally:
        upstream.stop_thread()


def _hermes_checks(
    args: argparse.Namespace, workdir: Path, upstream: MockServer, upstream_url: str
) -> list[str]:
    home = workdir / "hermes-home"
    home.mkdir()
    (home / "config.yaml").write_text(HERMES_CONFIG.format(upstream=upstream_url))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    hermes_bin = Path(args.hermes_python).parent / "hermes"
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")},
        "HERMES_HOME": str(home),
        "API_SERVER_ENABLED": "true",
        "API_SERVER_KEY": HERMES_KEY,
        "API_SERVER_HOST": "127.0.0.1",
        "API_SERVER_PORT": str(port),
    }
    auth = {"Authorization": f"Bearer {HERMES_KEY}"}
    passed = []
    with server_process(
        "hermes",
        [str(hermes_bin), "gateway", "run"],
        env,
        workdir / "hermes.log",
        lambda: _get_ok(f"{base}/v1/models", auth),
    ):
        common = {"base_url": f"{base}/v1", "api_key": HERMES_KEY, "timeout": 120}
        for lang in ("py", "ts"):
            run = run_py if lang == "py" else (lambda t: run_ts(t, args.node_package, workdir))
            results: dict[str, Result] = {}

            # a streamed turn
            upstream.set_script({"text": ["Hi ", "there."]})
            (turn,) = run(
                [
                    {
                        "name": "turn",
                        "provider": "hermes",
                        "options": common,
                        "messages": [{"role": "user", "content": "hello"}],
                    }
                ]
            )
            check(turn["error"] is None and text_of(turn) == "Hi there.", f"hermes/{lang}", turn)
            check(finish_of(turn) == "stop", f"hermes/{lang}: finish", turn)
            results["turn"] = turn

            # two turns with one call id continue one conversation; the body's history is ignored
            upstream.set_script({"text": ["Noted."]})
            upstream.reset()
            first = f"My name is Ada-{lang}."
            t1, t2 = run(
                [
                    {
                        "name": "session_1",
                        "provider": "hermes",
                        "options": common,
                        "call_id": f"peers-{lang}",
                        "messages": [{"role": "user", "content": first}],
                    },
                    {
                        "name": "session_2",
                        "provider": "hermes",
                        "options": common,
                        "call_id": f"peers-{lang}",
                        "messages": [
                            {"role": "user", "content": "body-only history"},
                            {"role": "assistant", "content": "ignored"},
                            {"role": "user", "content": "What is my name?"},
                        ],
                    },
                ]
            )
            check(t1["error"] is None and t2["error"] is None, f"hermes/{lang}: session", [t1, t2])
            last = [r for r in upstream.requests if "What is my name?" in _user_texts(r)]
            check(bool(last), f"hermes/{lang}: second turn reached the model", _records(upstream))
            seen = _user_texts(last[-1])
            check(first in seen, f"hermes/{lang}: second turn carries the first", seen)
            check("body-only history" not in seen, f"hermes/{lang}: body history ignored", seen)
            results["session_1"], results["session_2"] = t1, t2

            # a bad key
            (bad,) = run(
                [
                    {
                        "name": "bad_key",
                        "provider": "hermes",
                        "options": {**common, "api_key": "wrong-key-0123456789"},
                        "messages": [{"role": "user", "content": "hello"}],
                    }
                ]
            )
            error = bad["error"] or {}
            check(
                error.get("class") == "APIStatusError" and error.get("status") == 401,
                f"hermes/{lang}: bad key",
                bad,
            )
            results["bad_key"] = bad

            # a tool run: hermes.tool.progress frames arrive as progress events, never as text
            upstream.set_script(
                [
                    {
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "name": "todo",
                                "arguments": json.dumps(
                                    {
                                        "todos": [
                                            {"id": "1", "content": "greet", "status": "pending"}
                                        ]
                                    }
                                ),
                            }
                        ]
                    },
                    {"text": ["Done."]},
                ]
            )
            (tool,) = run(
                [
                    {
                        "name": "tool_progress",
                        "provider": "hermes",
                        "options": common,
                        "messages": [{"role": "user", "content": "Plan a greeting."}],
                    }
                ]
            )
            progress = [e for e in tool["events"] if e["type"] == "progress"]
            check(tool["error"] is None, f"hermes/{lang}: tool turn", tool)
            check(
                [(e["event"], e["data"].get("status")) for e in progress]
                == [("hermes.tool.progress", "running"), ("hermes.tool.progress", "completed")],
                f"hermes/{lang}: progress events",
                tool,
            )
            check(text_of(tool).strip() == "Done.", f"hermes/{lang}: tool turn text", tool)
            check("hermes" not in text_of(tool), f"hermes/{lang}: progress not in text", tool)
            results["tool_progress"] = tool
            setattr(args, f"hermes_{lang}", results)

        py, ts = args.hermes_py, args.hermes_ts
        # the two languages used their own call ids and names: compare all but those
        for name in py:
            same_in_both([_without_lang(py[name], "py")], [_without_lang(ts[name], "ts")], "hermes")
        passed += [
            "hermes streamed turn (Python and TypeScript, same events)",
            "hermes session continues, body history ignored (Python and TypeScript)",
            "hermes bad key -> APIStatusError 401 (Python and TypeScript)",
            "hermes tool progress events (Python and TypeScript, same events)",
        ]

        # X-Hermes-Session-Key is echoed (brainline has no response-header API: checked on the wire)
        response = httpx.post(
            f"{base}/v1/chat/completions",
            headers={**auth, "X-Hermes-Session-Id": "peers-raw", "X-Hermes-Session-Key": "k-1"},
            json={"model": "hermes-agent", "messages": [{"role": "user", "content": "hi"}]},
            timeout=120,
        )
        check(response.status_code == 200, "hermes raw turn", response.text)
        check(
            response.headers.get("x-hermes-session-key") == "k-1",
            "session key echo",
            dict(response.headers),
        )
        check(
            response.headers.get("x-hermes-session-id") == "peers-raw",
            "session id echo",
            dict(response.headers),
        )
        passed.append("hermes X-Hermes-Session-Key / -Id echoed (wire check with httpx)")
    return passed


def _without_lang(result: Result, lang: str) -> Result:
    same: Result = json.loads(json.dumps(result).replace(f"-{lang}", "-LANG"))
    return same


def _records(server: MockServer) -> list[list[str]]:
    return [_user_texts(r) for r in server.requests]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hermes-python", required=True, help="python of Hermes's virtualenv")
    parser.add_argument("--node-package", required=True, help="the TypeScript package directory")
    parser.add_argument("--only", choices=["litellm", "hermes"], help="run one server only")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="brainline-peers-"))
    passed: list[str] = []
    failed: list[str] = []
    for name, checks in (("litellm", litellm_checks), ("hermes", hermes_checks)):
        if args.only and args.only != name:
            continue
        try:
            passed += checks(args, workdir)
        except PeerFailure as exc:
            failed.append(f"{name}: {exc}")
            print(f"FAILED {name}: {exc}", flush=True)
    for item in passed:
        print(f"ok   {item}")
    if failed or args.keep:
        print(f"logs: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"peers: {len(passed)} passed, {len(failed)} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
