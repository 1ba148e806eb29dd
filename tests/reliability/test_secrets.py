"""Secrets and privacy, in Python (typescript/test/reliability/secrets.test.ts mirrors it).

API keys and memory-scope keys never appear in log output (any logger, any level), in repr output,
in error messages or anywhere in an exception chain (even when the server echoes them back); the raw
caller number never reaches the wire or a log line. No public object (every provider class, its
config, a turn, a session context, every error and its chain) shows one under any serializer:
repr, str, f-strings, logging with %r / %s, json.dumps(default=str) of the object and of vars(obj),
copy, deepcopy and pickle (which refuse, or give an object that masks as well); the raw caller is
reachable from no client and no error. Header injection (CR, LF, NUL) is refused with a
ConfigError before a byte is sent; session keys are limited to SESSION_KEY_MAX_LENGTH characters;
base_url must be http(s) without credentials, and a refused URL never echoes a password.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import io
import json
import logging
import pickle
import traceback
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import brainline
from brainline import BaseLLM, BrainlineError, ConfigError, CustomLLM, SessionContext
from brainline._generated.cli_options import PROVIDERS
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


def _logged(obj: object) -> str:
    """What a logging.StreamHandler writes for `obj` logged with %r, %s, as the message, and (an
    exception) with its traceback."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("tests.secrets")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        logger.info("%r %s", obj, obj)
        logger.info(obj)
        logger.info("%(obj)s", {"obj": obj})
        if isinstance(obj, BaseException):
            logger.error("failed", exc_info=obj)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def _serialized(obj: object) -> dict[str, str]:
    """`obj` under every serializer: repr, str, f-strings, logging, json.dumps(default=str) of it
    and of vars(obj), and what copy, deepcopy and pickle give when they do not refuse (the copy's
    own repr and vars; pickle's bytes)."""
    out = {
        "repr": repr(obj),
        "str": str(obj),
        "f-string": f"{obj} {obj!r}",
        "%-format": "%s %r" % (obj, obj),  # noqa: UP031 (the operator itself is under test)
        "logging": _logged(obj),
        "json.dumps": json.dumps(obj, default=str),
    }
    try:
        attributes = vars(obj)
    except TypeError:
        pass  # no __dict__: vars() refuses (LLMConfig, SessionContext)
    else:
        out["json.dumps(vars)"] = json.dumps(attributes, default=str)
    for name, copier in (("copy", copy.copy), ("deepcopy", copy.deepcopy)):
        try:
            duplicate = copier(obj)
        except TypeError:
            continue  # refused (BaseLLM)
        out[name] = repr(duplicate) + json.dumps(getattr(duplicate, "__dict__", None), default=str)
    try:
        pickled = pickle.dumps(obj)
    except TypeError:
        pass  # refused (BaseLLM, LLMConfig)
    else:
        out["pickle"] = pickled.decode("latin-1") + repr(pickle.loads(pickled))
    return out


def _assert_serializers_clean(obj: object, where: str, secrets: tuple[str, ...] = SECRETS) -> None:
    for serializer, text in _serialized(obj).items():
        _assert_clean(text, f"{serializer} of {where}", secrets)


def _reachable_strings(root: object) -> Iterator[str]:
    """Every str and bytes (as Latin-1) reachable from `root` through the object graph, except
    through frames (any Python traceback holds its frames' locals, the call's arguments among
    them), modules, classes and functions."""
    skip = (
        types.FrameType,
        types.ModuleType,
        type,
        types.FunctionType,
        types.CodeType,
        # their frames' locals (the test's own, the running turn's arguments)
        types.CoroutineType,
        types.GeneratorType,
        types.AsyncGeneratorType,
    )
    seen: set[int] = set()
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        if isinstance(obj, str):
            yield obj
        elif isinstance(obj, (bytes, bytearray)):
            yield bytes(obj).decode("latin-1")
        else:
            todo.extend(gc.get_referents(obj))


def _assert_caller_unreachable(root: object, where: str) -> None:
    for text in _reachable_strings(root):
        assert CALLER[1:] not in text, f"the raw caller is reachable from {where}: {text[:80]!r}"


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
    # Errors whose cause is an httpx error: its request holds the headers.
    "read_timeout": {"text": ["a"], "stall": "headers"},
    "connection_reset": {"drop_before_headers": True, "drop_reset": True},
}
KIND_OPTIONS: dict[str, dict[str, Any]] = {"read_timeout": {"timeout": 0.3}}


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
        llm = _llm(url, **options, **KIND_OPTIONS.get(kind, {}))
        with pytest.raises(BrainlineError) as info:
            async for _ in llm.stream(MESSAGES, call_id="c1", caller=CALLER):
                pass
        await llm.aclose()
    _assert_clean(_exception_text(info.value), f"the {kind} exception chain", secrets)
    _assert_clean(_log_text(all_logs), "the logs", secrets)
    for link in _chain(info.value):
        _assert_serializers_clean(link, f"{type(link).__name__} in the {kind} chain", secrets)
    _assert_caller_unreachable(info.value, f"the {kind} error")
    _assert_caller_unreachable(llm, "the client")


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
        assert events[-1]["type"] == "finish" and events[-1]["reason"] == "stop"
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


def _providers(url: str, factory: Callable[[SessionContext], str] | None) -> Iterator[BaseLLM]:
    """Every generated provider class with a key and a memory-scope key (static or a factory's)."""
    for key, provider in sorted(PROVIDERS.items()):
        options: dict[str, Any] = {
            "base_url": url,
            "model": "m",
            "agent": "main",
            "api_key": API_KEY,
            "session_key_header": "X-Session-Key",
            "timeout": 2,
            "max_retries": 0,
        }
        if factory is None:
            options["session_key"] = SESSION_KEY
        else:
            options["session_key_factory"] = factory
        for name in provider.refused:
            del options[name]
        llm = getattr(brainline, provider.class_name)(**options)
        assert llm.provider_key == key
        yield llm


@pytest.mark.parametrize("factory", [False, True])
async def test_every_provider_under_every_serializer(factory: bool) -> None:
    """After a turn (so the pool and every lazy attribute exist): the instance, its config, the
    turn, its events and the session context the factory saw."""
    contexts: list[SessionContext] = []

    def keep_context(ctx: SessionContext) -> str:
        contexts.append(ctx)
        return FACTORY_KEY

    async with MockServer({"text": ["Hel", "lo"]}) as url:
        for llm in _providers(url, keep_context if factory else None):
            name = type(llm).__name__
            events = [ev async for ev in llm.stream(MESSAGES, call_id="c1", caller=CALLER)]
            turn = await llm.complete(MESSAGES, call_id="c2", caller=CALLER)
            await llm.warmup()
            assert turn.text == "Hello"
            for obj, where in (
                (llm, name),
                (llm.config, f"{name}.config"),
                (turn, "a Turn"),
                (events, "the events"),
            ):
                _assert_serializers_clean(obj, where)
            _assert_caller_unreachable(llm, name)
            # Refused: a copy would share the pool; pickle's bytes would hold the keys.
            for refuse in (copy.copy, copy.deepcopy, pickle.dumps):
                with pytest.raises(TypeError, match="cannot be copied or pickled"):
                    refuse(llm)
            with pytest.raises(TypeError, match="cannot be pickled"):
                pickle.dumps(llm.config)
            with pytest.raises(TypeError):
                vars(llm.config)
            await llm.aclose()
    assert len(contexts) == (32 if factory else 0)
    for ctx in contexts:
        assert ctx.caller == CALLER  # the factory gets the number; no serializer shows it
        _assert_serializers_clean(ctx, "a SessionContext")


def test_config_copies_and_replace_keep_the_key() -> None:
    """What users expect of a frozen config: copy, deepcopy and dataclasses.replace work (and the
    copies mask as well); only pickle refuses."""
    import dataclasses

    config = _llm("http://127.0.0.1:9/v1", extra_body={"a": [1]}).config
    for duplicate in (
        copy.copy(config),
        copy.deepcopy(config),
        dataclasses.replace(config, model="other"),
    ):
        assert duplicate.api_key == API_KEY and duplicate.session_key == SESSION_KEY
        assert duplicate.extra_body == {"a": [1]}
        _assert_clean(repr(duplicate), "a copy's repr")
    assert copy.deepcopy(config) == config
    assert copy.deepcopy(config).extra_body is not config.extra_body
    assert dataclasses.replace(config, model="other").model == "other"


def test_repr_and_config_never_show_keys() -> None:
    llm = _llm("http://127.0.0.1:9/v1")
    for text in (repr(llm), str(llm), repr(llm.config), str(llm.config)):
        _assert_clean(text, "repr")
    # What an instance shows: the provider, model and base URL (TypeScript's toJSON too).
    assert repr(llm) == "CustomLLM(provider='custom', model='m', base_url='http://127.0.0.1:9/v1')"
    assert "***" in repr(llm.config)
    factory_llm = _llm("http://127.0.0.1:9/v1", session_key=None, session_key_factory=repr)
    _assert_clean(repr(factory_llm.config), "repr")


# -- a secret of the wrong type ---------------------------------------------------------------------


@pytest.mark.parametrize("option", ["api_key", "session_key"])
@pytest.mark.parametrize("shape", ["bytes", "list", "dict", "int"])
def test_a_secret_of_another_type_is_refused_without_echo(option: str, shape: str) -> None:
    """A key read as bytes (a file opened in binary, os.environb) is refused, never quoted."""
    secret = API_KEY if option == "api_key" else SESSION_KEY
    value = {
        "bytes": secret.encode(),
        "list": [secret],
        "dict": {"key": secret},
        "int": 4242424242,
    }[shape]
    with pytest.raises(ConfigError) as info:
        _llm("http://127.0.0.1:9/v1", **{option: value})
    assert info.value.code == "invalid_secret_type"
    assert str(info.value).startswith(f"{option} must be a string (the value is not shown")
    _assert_clean(_exception_text(info.value), "the error", (secret, "4242424242"))


async def test_a_factory_key_or_caller_of_another_type_is_refused_without_echo() -> None:
    server = MockServer({"text": ["x"]})
    url = await server.start()
    try:
        cases: list[tuple[dict[str, Any], dict[str, Any], str]] = [
            ({"session_key_factory": lambda ctx: FACTORY_KEY.encode()}, {}, "session_key_factory"),
            (
                {"session_key_factory": lambda ctx: [ctx.caller]},
                {"caller": CALLER},
                "session_key_factory",
            ),
            ({}, {"caller": int(CALLER[1:])}, "caller"),
        ]
        for options, call, option in cases:
            llm = _llm(url, **options)
            with pytest.raises(ConfigError) as info:
                async for _ in llm.stream(MESSAGES, call_id="c1", **call):
                    pass
            await llm.aclose()
            assert info.value.code == "invalid_secret_type"
            assert str(info.value).startswith(f"{option} must be a string (the value is not shown")
            _assert_clean(_exception_text(info.value), f"the {option} error")
        assert server.requests == []
    finally:
        await server.stop()


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
