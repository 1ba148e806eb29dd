"""Per-call session context and the memory-scope key; typescript/src/core/session.ts mirrors it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn, SupportsIndex

from .._generated.constants import CALLER_HASH_HEX_LENGTH, CALLER_HASH_PREFIX

if TYPE_CHECKING:  # _generated/options.py imports this module: no runtime import back.
    from .._generated.options import LLMConfig

__all__ = ["SessionContext", "hash_caller", "resolve_session_key"]


@dataclass(frozen=True, slots=True)
class SessionContext:
    """What a session-key factory learns about the call. The raw caller never goes on the wire.

    `caller` is left out of the repr so that logging a context does not log the number; with no
    __dict__, vars() refuses it, and pickle refuses it (TypeScript's context keeps `caller` out of
    JSON, inspect and structuredClone).
    """

    call_id: str | None = None
    caller: str | None = field(default=None, repr=False)
    callee: str | None = None
    caller_hash: str | None = None
    """hash_caller(caller): the first 16 hex characters of sha256(caller); None without a caller."""

    def __copy__(self) -> SessionContext:
        return self  # immutable: strings and None

    def __deepcopy__(self, memo: dict[int, object]) -> SessionContext:
        return self

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError("SessionContext cannot be pickled: it holds the raw caller number")


def hash_caller(caller: str | None) -> str | None:
    """The first CALLER_HASH_HEX_LENGTH hex characters of sha256(UTF-8 caller); None when empty."""
    if not caller:
        return None
    return hashlib.sha256(caller.encode("utf-8")).hexdigest()[:CALLER_HASH_HEX_LENGTH]


def resolve_session_key(config: LLMConfig, ctx: SessionContext) -> str | None:
    """The memory-scope key of one call, or None for no header.

    The factory's result when a factory is set (a falsy result means none), else, when
    session_key_from is "caller_hash", CALLER_HASH_PREFIX + caller_hash (none without a caller:
    the static key is not a fallback), else the static session_key.
    """
    if config.session_key_factory is not None:
        return config.session_key_factory(ctx) or None
    if config.session_key_from == "caller_hash":
        return CALLER_HASH_PREFIX + ctx.caller_hash if ctx.caller_hash else None
    return config.session_key or None
