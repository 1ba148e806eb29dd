"""hash_caller, SessionContext and resolve_session_key."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from brainline._core.session import SessionContext, hash_caller, resolve_session_key

from .conftest import make_config


def test_hash_caller_test_vector() -> None:
    assert hash_caller("+15551234567") == "8a59780bb8cd2ba0"


def test_hash_caller_is_sha256_of_utf8_cut_to_16_hex() -> None:
    caller = "Zoë ☎"
    assert hash_caller(caller) == hashlib.sha256(caller.encode("utf-8")).hexdigest()[:16]
    assert len(hash_caller("x") or "") == 16


@pytest.mark.parametrize("caller", [None, ""])
def test_hash_caller_of_no_caller_is_none(caller: str | None) -> None:
    assert hash_caller(caller) is None


def test_session_context_is_frozen_and_hides_the_caller_in_repr() -> None:
    ctx = SessionContext("call-1", "+15551234567", "+15550000000", hash_caller("+15551234567"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.caller = "x"  # type: ignore[misc]
    assert "+15551234567" not in repr(ctx)
    assert "8a59780bb8cd2ba0" in repr(ctx)
    assert SessionContext() == SessionContext(None, None, None, None)


CTX = SessionContext("c1", "+15551234567", "+1800", "8a59780bb8cd2ba0")
NO_CALLER = SessionContext("c1", None, None, None)


def test_factory_wins_and_gets_the_context() -> None:
    seen: list[SessionContext] = []

    def factory(ctx: SessionContext) -> str | None:
        seen.append(ctx)
        return f"key-{ctx.call_id}"

    config = make_config(
        session_key_factory=factory, session_key_from="caller_hash", session_key="static"
    )
    assert resolve_session_key(config, CTX) == "key-c1"
    assert seen == [CTX]


@pytest.mark.parametrize("result", [None, ""])
def test_falsy_factory_result_means_no_key(result: str | None) -> None:
    config = make_config(session_key_factory=lambda ctx: result, session_key="static")
    assert resolve_session_key(config, CTX) is None


def test_caller_hash_key() -> None:
    config = make_config(session_key_from="caller_hash", session_key="static")
    assert resolve_session_key(config, CTX) == "patter-caller-8a59780bb8cd2ba0"
    # Without a caller there is no key: caller_hash wins over the static key, which is no fallback.
    assert resolve_session_key(config, NO_CALLER) is None
    assert resolve_session_key(make_config(session_key_from="caller_hash"), NO_CALLER) is None


def test_static_key_and_none() -> None:
    assert resolve_session_key(make_config(session_key="static"), CTX) == "static"
    assert resolve_session_key(make_config(session_key=""), CTX) is None
    assert resolve_session_key(make_config(), CTX) is None
