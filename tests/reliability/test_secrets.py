"""Secrets and privacy, in Python (typescript/test/reliability/secrets.test.ts mirrors it).

API keys and memory-scope keys never appear in log output (any logger, any level), in repr output,
in error messages or anywhere in an exception chain (even when the server echoes them back); the raw
caller number never reaches the wire or a log line. Header injection (CR, LF, NUL) is refused with a
ConfigError before a byte is sent; session keys are limited to SESSION_KEY_MAX_LENGTH characters;
base_url must be http(s) without credentials, and a refused URL never echoes a password.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

from brainline import BrainlineError, ConfigError, CustomLLM
from brainline._generated.constants import SESSION_KEY_MAX_LENGTH
from brainline.testing import MockServer

API_KEY = "sk-live-SECRETapikey0123456789"
SESSION_KEY = "memory-SECRETsessionkey-42"
FACTORY_KEY = "factory-SECRETscope-77"
CALLER = "+15551234567"
SECRETS = (API_KEY, SESSION_KEY, FACTORY_KEY, CALLER, CALLER[1:])
MESSAGES = [{"role": "user", "content": "hi"}]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend((current.__cause__, current.__context__))


def _exception_text(exc: BaseException) -> str:
    """The formatted traceback, and str / repr / args of every exception in the chain."""
    parts = ["".join(traceback.format_exception(type(exc), exc, exc.__traceback__))]
    for link in _chain(exc):
        parts += [str(link), repr(link), repr(link.args)]
        # and its fields: body, partial_text, ...; a JSONDecodeError's doc, an httpx error's request
        parts += [repr(v) for v in getattr(link, "__dict__", {}).values()]
    return "\n".join(parts)


def _assert_clean(text: str, where: str, secrets: tuple[str, ...] = SECRETS) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked into {where}"


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)  # the root logger: brainline, httpx, httpcore, asyncio
    for name in ("brainline", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    lines = []
    for record in caplog.records:
        lines.append(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            lines.append(_exception_text(record.exc_info[1]))
    return "\n".join(lines)


def _llm(url: str, **options: Any) -> CustomLLM:
    values: dict[str, Any] = {
        "base_url": url,
        "model": "m",
        "api_key": API_KEY,
        "session_id_header": "X-Session-Id",
        "session_key_header": "X-Session-Key",
        "session_key": SESSION_KEY,
        "timeout": 2,
        "max_retries": 0,
    }
    values.update(options)
    return CustomLLM(**values)


# Answers that echo the secrets back: the client must scrub them from what it raises.
ECHO = f"key {API_KEY} scope {SESSION_KEY} scope {FACTORY_KEY}"
FAILURES: dict[str, Any] = {
    "http_status": {"status": 401, "json": {"error": {"message": ECHO}}},
    "http_status_text": {"status": 500, "body": ECHO},
    "server_error": {"sse": [{"data": {"error": {"message": ECHO}}}]},
    "server_error_event": {"sse": [{"event": "error", "data": {"message": ECHO}}]},
    # The key first: a JSON parser's own message may quote the start of the data.
    "malformed": {"sse": [f"data: {API_KEY} not json {ECHO}\n\n"]},
    "interrupted": {"text": ["a", "b"], "drop_after": 1},
    "json_error": {"json": {"error": {"message": ECHO}}},
}


@pytest.mark.parametrize("kind", sorted(FAILURES))
@pytest.mark.parametrize("factory", [False, True])
async def test_secrets_stay_out_of_errors_and_logs(
    all_logs: pytest.LogCaptureFixture, kind: str, factory: bool
) -> None:
    options: dict[str, Any] = {}
    # The secrets this client knows (a server echoing an unknown string is not a leak).
    secrets = tuple(s for s in SECRETS if factory or s != FACTORY_KEY)
    if factory:
        options["session_key_factory"] = lambda ctx: FACTORY_KEY
    async with MockServer([FAILURES[kind]]) as url:
        llm = _llm(url, **options)
        with pytest.raises(BrainlineError) as info:
            async for _ in llm.stream(MESSAGES, call_id="c1", caller=CALLER):
                pass
        await llm.aclose()
    _assert_clean(_exception_text(info.value), f"the {kind} exception chain", secrets)
    _assert_clean(_log_text(all_logs), "the logs", secrets)


async def test_connection_refused_and_warmup_failure_are_clean(
    all_logs: pytest.LogCaptureFixture,
) -> None:
    async with MockServer({"text": ["x"]}) as url:
        pass  # the port is closed now
    llm = _llm(url)
    with pytest.raises(BrainlineError) as info:
        async for _ in llm.stream(MESSAGES, call_id="c1", caller=CALLER):
            pass
    await llm.warmup()
    await llm.aclose()
    assert info.value.code == "connection_error"
    _assert_clean(_exception_text(info.value), "the connection_error chain")
    _assert_clean(_log_text(all_logs), "the logs")


async def test_success_and_barge_in_logs_and_wire_are_clean(
    all_logs: pytest.LogCaptureFixture,
) -> None:
    server = MockServer([{"text": ["Hel", "lo"]}, {"text": ["a"], "stall": 1}])
    url = await server.start()
    try:
        llm = _llm(url, session_key=None, session_key_from="caller_hash")
        events = [ev async for ev in llm.stream(MESSAGES, call_id="c1", caller=CALLER)]
        assert events[-1] == {"type": "finish", "reason": "stop"}
        cancel = asyncio.Event()
        async for _ in llm.stream(MESSAGES, cancel_event=cancel, call_id="c2", caller=CALLER):
            cancel.set()
        await llm.warmup()
        await llm.aclose()
    finally:
        await server.stop()
    _assert_clean(_log_text(all_logs), "the logs")
    # The wire carries the caller's hash, never the number (in no header, no body, no path).
    assert len(server.requests) >= 2
    for request in server.requests:
        wire = "\n".join(f"{k}: {v}" for k, v in request.headers) + request.path
        wire += request.body.decode("utf-8", "replace")
        assert CALLER not in wire and CALLER[1:] not in wire
    key = server.requests[0].header("x-session-key")
    assert key is not None and key.startswith("patter-caller-") and CALLER[1:] not in key


def test_repr_and_config_never_show_keys() -> None:
    llm = _llm("http://127.0.0.1:9/v1")
    for text in (repr(llm), str(llm), repr(llm.config), str(llm.config)):
        _assert_clean(text, "repr")
    assert "***" in repr(llm.config)
    factory_llm = _llm("http://127.0.0.1:9/v1", session_key=None, session_key_factory=repr)
    _assert_clean(repr(factory_llm.config), "repr")


# -- header injection ------------------------------------------------------------------------------

BAD = ["a\rb", "a\nb", "a\x00b", "a\r\nX-Evil: 1"]


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize(
    "option",
    [
        "api_key",
        "session_key",
        "session_id_prefix",
        "session_user_prefix",
        "user_agent",
        "extra_headers",
    ],
)
def test_header_injection_in_options_is_refused(option: str, bad: str) -> None:
    value: Any = {"X-Extra": bad} if option == "extra_headers" else bad
    with pytest.raises(ConfigError) as info:
        _llm("http://127.0.0.1:9/v1", **{option: value})
    assert info.value.code == "invalid_header_value"
    assert bad not in str(info.value)


@pytest.mark.parametrize("name", ["X-A\r\nB", "X A", "X:A", "", "X\x00"])
def test_bad_header_names_are_refused(name: str) -> None:
    for options in ({"extra_headers": {name: "v"}}, {"session_id_header": name}):
        with pytest.raises(ConfigError) as info:
            _llm("http://127.0.0.1:9/v1", **options)
        assert info.value.code in ("invalid_header_name", "empty_string")


@pytest.mark.parametrize("bad", BAD)
async def test_header_injection_at_call_time_sends_nothing(bad: str) -> None:
    server = MockServer({"text": ["x"]})
    url = await server.start()
    try:
        for options, kwargs in (
            ({}, {"call_id": bad}),
            ({"session_key_factory": lambda ctx: bad}, {"call_id": "c1"}),
            ({"session_key_factory": lambda ctx: ctx.call_id}, {"call_id": bad}),
        ):
            llm = _llm(url, **options)
            with pytest.raises(ConfigError) as info:
                async for _ in llm.stream(MESSAGES, **kwargs):
                    pass
            assert info.value.code == "invalid_header_value"
            assert bad not in str(info.value)
            await llm.aclose()
        assert server.requests == []
        assert server.connections_total == 0
    finally:
        await server.stop()


# -- session-key length ----------------------------------------------------------------------------


def test_static_session_key_length_limit() -> None:
    _llm("http://127.0.0.1:9/v1", session_key="k" * SESSION_KEY_MAX_LENGTH)
    with pytest.raises(ConfigError) as info:
        _llm("http://127.0.0.1:9/v1", session_key="k" * (SESSION_KEY_MAX_LENGTH + 1))
    assert info.value.code == "too_long"
    assert "k" * 20 not in str(info.value)


async def test_factory_session_key_length_limit_sends_nothing() -> None:
    server = MockServer({"text": ["x"]})
    url = await server.start()
    try:
        llm = _llm(url, session_key_factory=lambda ctx: "k" * SESSION_KEY_MAX_LENGTH)
        assert [ev async for ev in llm.stream(MESSAGES)][-1]["type"] == "finish"
        assert len(server.requests) == 1
        llm = _llm(url, session_key_factory=lambda ctx: "k" * (SESSION_KEY_MAX_LENGTH + 1))
        with pytest.raises(ConfigError) as info:
            async for _ in llm.stream(MESSAGES):
                pass
        assert info.value.code == "too_long"
        assert "k" * 20 not in str(info.value)
        assert len(server.requests) == 1
        await llm.aclose()
    finally:
        await server.stop()


# -- base_url --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/v1",
        "127.0.0.1:8000/v1",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://",
        "http:///v1",
        "ws://127.0.0.1/v1",
    ],
)
def test_base_url_must_be_http_or_https(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        _llm(url)
    assert info.value.code == "invalid_base_url"


@pytest.mark.parametrize(
    "url",
    [
        "http://user:hunter2pass@127.0.0.1/v1",
        "https://hunter2pass@127.0.0.1/v1",
        "HTTP://user:hunter2pass@127.0.0.1:8000/v1?x=1",
        "ftp://user:hunter2pass@127.0.0.1/v1",
        "user:hunter2pass@127.0.0.1:8000/v1",
    ],
)
def test_base_url_credentials_are_refused_without_echo(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        _llm(url)
    assert info.value.code == "base_url_credentials"
    assert "hunter2pass" not in _exception_text(info.value)
    assert "API key" in str(info.value)


def test_an_at_sign_in_the_path_is_not_a_credential() -> None:
    assert _llm("http://127.0.0.1:8000/v1/@team").config.base_url.endswith("/@team")
