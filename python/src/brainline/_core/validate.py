"""Option checks the generated constructors call, one per spec rule; typescript/src/core/validate.ts mirrors them.

Every check ignores a missing value (None): `require_option` is the rule that refuses one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

import httpx

from .errors import make_error

T = TypeVar("T")

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
_FORBIDDEN_IN_HEADER = re.compile(r"[\r\n\x00]")
_PATTERNS: dict[str, re.Pattern[str]] = {}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_str_mapping(value: object, of_str: bool) -> bool:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        return False
    return not of_str or all(isinstance(v, str) for v in value.values())


_TYPE_CHECKS: dict[str, Callable[[object], bool]] = {
    "string": lambda v: isinstance(v, str),
    "number": _is_number,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "string_or_string_list": lambda v: (
        isinstance(v, str) or (isinstance(v, (list, tuple)) and all(isinstance(s, str) for s in v))
    ),
    "headers": lambda v: _is_str_mapping(v, of_str=True),
    "string_map": lambda v: _is_str_mapping(v, of_str=True),
    "json_object": lambda v: _is_str_mapping(v, of_str=False),
    "tool_choice": lambda v: isinstance(v, str) or _is_str_mapping(v, of_str=False),
    "session_key_factory": callable,
    "metrics_callback": callable,
    "http_client": lambda v: isinstance(v, httpx.AsyncClient),
}


def from_env(value: T | None, env: str, default: T) -> T:
    """The argument when given, else the env var when set and non-empty, else the default."""
    if value is not None:
        return value
    from_environment = os.environ.get(env)
    if from_environment:
        return from_environment  # type: ignore[return-value]
    return default


def or_default(value: T | None, default: T) -> T:
    """An explicit None means the default, as undefined does in TypeScript."""
    return default if value is None else value


def resolve_api_key(api_key: str | None, api_key_env: str | Sequence[str] | None) -> str | None:
    """An explicit non-empty key wins; else the first non-empty env var named by api_key_env; else
    None (keyless)."""
    if api_key:
        return api_key
    names = [api_key_env] if isinstance(api_key_env, str) else api_key_env or ()
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def require_option(option: str, value: T | None) -> T:
    """The value itself; a missing one (None) is a ConfigError."""
    if value is None:
        raise make_error("missing_option", option=option)
    return value


def check_type(option: str, value: object, type_name: str, expected: str) -> None:
    if value is not None and not _TYPE_CHECKS[type_name](value):
        raise make_error("invalid_type", option=option, expected=expected, value=value)


def check_secret_type(option: str, value: object, type_name: str, expected: str) -> None:
    """check_type for a secret option: the message never shows the value (bytes of a key...)."""
    if value is not None and not _TYPE_CHECKS[type_name](value):
        raise make_error("invalid_secret_type", option=option, expected=expected)


def check_range(option: str, value: float | None, minimum: float, maximum: float) -> None:
    if value is not None and not minimum <= value <= maximum:
        raise make_error(
            "out_of_range", option=option, minimum=minimum, maximum=maximum, value=value
        )


def check_minimum(option: str, value: float | None, minimum: float) -> None:
    if value is not None and value < minimum:
        raise make_error("below_minimum", option=option, minimum=minimum, value=value)


def check_exclusive_minimum(option: str, value: float | None, minimum: float) -> None:
    if value is not None and not value > minimum:
        raise make_error("not_above_minimum", option=option, minimum=minimum, value=value)


def check_non_empty(option: str, value: str | None) -> None:
    if value is not None and not value:
        raise make_error("empty_string", option=option)


def check_header_value(option: str, value: str | Mapping[str, str] | None) -> None:
    """No CR, LF or NUL in a value that becomes a header (header injection). The value is not echoed."""
    values = value.values() if isinstance(value, Mapping) else [value] if value is not None else []
    for v in values:
        if _FORBIDDEN_IN_HEADER.search(v):
            raise make_error("invalid_header_value", option=option)
    if isinstance(value, Mapping):
        for name in value:
            check_header_name(option, name)


def check_header_name(option: str, value: str | None) -> None:
    if value is not None and not _HEADER_NAME.fullmatch(value):
        raise make_error("invalid_header_name", option=option, value=value)


def check_url(option: str, value: str | None) -> None:
    """http or https, with a host, and no credentials (never echoed back when present)."""
    if value is None:
        return
    authority = re.split(r"[/?#]", value.split("://", 1)[-1], maxsplit=1)[0]
    if "@" in authority:
        raise make_error("base_url_credentials", option=option)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise make_error("invalid_base_url", option=option, value=value)


def check_max_length(option: str, value: str | None, maximum: int) -> None:
    if value is not None and len(value) > maximum:
        raise make_error("too_long", option=option, maximum=maximum, length=len(value))


def check_choice(option: str, value: str | None, choices: Sequence[str], code: str) -> None:
    if value is not None and value not in choices:
        raise make_error(code, option=option, choices=list(choices), value=value)


def check_pattern(option: str, value: str | None, pattern: str, code: str) -> None:
    if value is None:
        return
    compiled = _PATTERNS.get(pattern)
    if compiled is None:
        compiled = _PATTERNS[pattern] = re.compile(pattern)
    if not compiled.fullmatch(value):
        raise make_error(code, option=option, pattern=pattern, value=value)


def derive_prefixed(value: str, prefix: str, unless_contains: Sequence[str]) -> str:
    """`prefix + value`, or value itself when it already contains one of unless_contains."""
    return value if any(s in value for s in unless_contains) else prefix + value


def freeze_map(value: Mapping[str, str] | None) -> Mapping[str, str] | None:
    """A private copy, so later changes to the caller's dict do not reach the wire."""
    return None if value is None else dict(value)


def freeze_list(value: str | Sequence[str] | None) -> str | Sequence[str] | None:
    return value if value is None or isinstance(value, str) else tuple(value)
