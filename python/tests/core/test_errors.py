"""make_error and format_value: the messages must match the TypeScript twin byte for byte."""

from __future__ import annotations

import math
import pickle

import pytest

from brainline._core.errors import (
    AllEndpointsFailedError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    BrainlineError,
    ConfigError,
    StreamError,
    format_value,
    make_error,
)
from brainline._generated.errors import ERRORS


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("abc", '"abc"'),
        ("Caffè ☕ 日本", '"Caffè ☕ 日本"'),
        ('a"b\\c\n\t\x01', '"a\\"b\\\\c\\n\\t\\u0001"'),
        ("", '""'),
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (-7, "-7"),
        (3.0, "3"),
        (-0.0, "0"),
        (1e20, "100000000000000000000"),
        (2.5, "2.5"),
        (0.1, "0.1"),
        (-1.25, "-1.25"),
        (1e-05, "1e-05"),
        (1.23e-07, "1.23e-07"),
        (123456.789, "123456.789"),
        (0.30000000000000004, "0.30000000000000004"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
        (math.nan, "NaN"),
        (None, "None"),
        ([1, 2.0, "x", None, True, [0.5]], '[1,2,"x",null,true,[0.5]]'),
        ((1, "é"), '[1,"é"]'),
        ({"a": 1.0, "b": {"c": "ü"}, "d": None}, '{"a":1,"b":{"c":"ü"},"d":null}'),
        ([], "[]"),
        ({}, "{}"),
        ([math.inf], "[Infinity]"),
    ],
)
def test_format_value(value: object, text: str) -> None:
    assert format_value(value) == text


def test_format_value_of_other_objects() -> None:
    class Thing:
        def __str__(self) -> str:
            return "<thing>"

    assert format_value(Thing()) == "<thing>"
    # Inside a container what JSON cannot hold is left out (objects) or null (lists), as in JS.
    assert format_value([Thing()]) == "[null]"
    assert format_value({"a": Thing(), "b": 1}) == '{"b":1}'


def test_every_code_builds_its_class() -> None:
    classes = {
        "ConfigError": ConfigError,
        "APIConnectionError": APIConnectionError,
        "APITimeoutError": APITimeoutError,
        "APIStatusError": APIStatusError,
        "StreamError": StreamError,
        "AllEndpointsFailedError": AllEndpointsFailedError,
    }
    for code, (class_name, _) in ERRORS.items():
        error = make_error(code)
        assert type(error) is classes[class_name], code
        assert error.code == code
        assert isinstance(error, BrainlineError)


def test_all_endpoints_failed_carries_each_error() -> None:
    first = make_error("connection_error", url="u")
    second = make_error("http_status", url="v", status=503, detail="busy")
    error = make_error(
        "all_endpoints_failed", detail="connection_error, http_status", errors=[first, second]
    )
    assert isinstance(error, AllEndpointsFailedError)
    assert str(error) == "every endpoint failed: connection_error, http_status"
    assert error.errors == [first, second]
    assert make_error("all_endpoints_failed").errors == []  # type: ignore[attr-defined]
    copy = pickle.loads(pickle.dumps(error))
    assert [e.code for e in copy.errors] == ["connection_error", "http_status"]


def test_messages_fill_the_spec_templates() -> None:
    error = make_error("out_of_range", option="temperature", minimum=0, maximum=2, value=2.5)
    assert str(error) == "temperature must be between 0 and 2, got 2.5"
    assert error.message == str(error)
    error = make_error("invalid_type", option="call_id", expected="a string", value=12)
    assert str(error) == "call_id must be a string, got 12"
    error = make_error("invalid_type", option="model", expected="a string", value=["a"])
    assert str(error) == 'model must be a string, got ["a"]'
    error = make_error("invalid_agent", value="bad agent")
    assert str(error).endswith('only, got "bad agent"')
    error = make_error("too_large", what="line", limit=1048576)
    assert str(error) == "a stream line exceeded 1048576 bytes"
    error = make_error(
        "connect_timeout", url="http://127.0.0.1:1/v1/chat/completions", timeout=10.0
    )
    assert str(error) == "no connection to http://127.0.0.1:1/v1/chat/completions within 10 s"
    error = make_error("read_timeout", url="http://h/v1", timeout=0.25)
    assert str(error) == "no data from http://h/v1 for 0.25 s"


def test_verbatim_params(monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["option", "url", "detail", "what", "expected", "null", "pattern", "header_name"]
    template = " ".join(f"{{{name}}}" for name in [*names, "value", "other"])
    monkeypatch.setitem(ERRORS, "test_code", ("ConfigError", template))
    params = {name: f"é{name}" for name in [*names, "value", "other"]}
    expected = " ".join([*(f"é{name}" for name in names), '"évalue"', '"éother"'])
    assert str(make_error("test_code", **params)) == expected
    error = make_error("invalid_header_name", option="session_id_header", value="Bad Name")
    assert str(error) == 'session_id_header has an invalid header name "Bad Name"'


def test_null_placeholder_defaults_to_none() -> None:
    error = make_error("invalid_session_key_from", option="session_key_from", value="phone")
    assert str(error) == "session_key_from must be 'caller_hash' or None, got \"phone\""
    error = make_error("invalid_session_key_from", option="o", null="undefined", value=1)
    assert str(error) == "o must be 'caller_hash' or undefined, got 1"


def test_missing_params_leave_the_placeholder_and_extra_params_are_ignored() -> None:
    assert str(make_error("missing_option")) == "{option} is required"
    assert str(make_error("missing_option", option="model", extra=1)) == "model is required"


def test_unknown_code_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        make_error("no_such_code")


def test_config_error_is_a_value_error() -> None:
    error = make_error("empty_string", option="model")
    assert isinstance(error, ValueError)
    assert isinstance(error, ConfigError)
    with pytest.raises(ValueError, match="model must not be empty"):
        raise error


def test_status_error_fields() -> None:
    error = make_error(
        "http_status", url="http://h/v1", status=429, detail="slow down", body="{}", retry_after=2.0
    )
    assert isinstance(error, APIStatusError)
    assert str(error) == "http://h/v1 answered HTTP 429: slow down"
    assert (error.status, error.body, error.retry_after) == (429, "{}", 2.0)
    bare = make_error("http_status")
    assert isinstance(bare, APIStatusError)
    assert (bare.status, bare.body, bare.retry_after) == (0, "", None)


def test_stream_error_partial_text() -> None:
    error = make_error("interrupted", partial_text="Hel")
    assert isinstance(error, StreamError)
    assert error.partial_text == "Hel"
    assert str(error) == "the connection was lost mid-stream"
    assert isinstance(make_error("malformed", detail="x"), StreamError)
    assert make_error("malformed", detail="x").partial_text == ""  # type: ignore[attr-defined]


def test_cause_is_kept_with_raise_from() -> None:
    original = OSError("refused")
    with pytest.raises(APIConnectionError) as info:
        try:
            raise original
        except OSError as exc:
            raise make_error("connection_error", url="http://h") from exc
    assert info.value.__cause__ is original


def test_errors_survive_pickling() -> None:
    error = make_error("http_status", url="u", status=503, detail="d", body="b", retry_after=1.5)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is APIStatusError
    assert (copy.code, str(copy), copy.status, copy.body, copy.retry_after) == (
        "http_status",
        "u answered HTTP 503: d",
        503,
        "b",
        1.5,
    )
    stream_copy = pickle.loads(pickle.dumps(make_error("interrupted", partial_text="Hel")))
    assert isinstance(stream_copy, StreamError) and stream_copy.partial_text == "Hel"
