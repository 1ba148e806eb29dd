"""The error classes, make_error and format_value; typescript/src/core/errors.ts mirrors them.

Every message comes from the spec (spec/errors.yaml, rendered into _generated/errors.py); this
module only picks the class and fills the template, formatting values the same way as TypeScript.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .._generated.errors import ERRORS

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AllEndpointsFailedError",
    "BrainlineError",
    "ConfigError",
    "StreamError",
    "format_value",
    "make_error",
]


class BrainlineError(Exception):
    """Base class of every error brainline raises. Carries a stable `code`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # The default pickling calls cls(*args), which misses `code` and the keyword fields.
        return (type(self), (self.code, self.message), self.__dict__)


class ConfigError(BrainlineError, ValueError):
    """A bad option or call argument, raised before anything is sent."""


class APIConnectionError(BrainlineError):
    """The connection was refused, reset or failed before a response arrived."""


class APITimeoutError(BrainlineError):
    """A timeout expired; the code says which one."""


class APIStatusError(BrainlineError):
    """The server answered with a non-2xx status.

    Carries `status`, a body excerpt of at most ERROR_BODY_MAX_BYTES bytes (decoded as UTF-8 with
    replacement), `retry_after` (seconds) when the server sent Retry-After, and `request_id` when
    the answer carried one (REQUEST_ID_HEADERS).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int = 0,
        body: str = "",
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(code, message)
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.request_id = request_id


class StreamError(BrainlineError):
    """The stream failed after a 2xx response. Carries the text already streamed, and
    `request_id` when the answer carried one."""

    def __init__(
        self, code: str, message: str, *, partial_text: str = "", request_id: str | None = None
    ) -> None:
        super().__init__(code, message)
        self.partial_text = partial_text
        self.request_id = request_id


class AllEndpointsFailedError(BrainlineError):
    """Every endpoint of a FallbackLLM failed before the turn's first event.

    Carries `errors`: each attempt's own typed error, in the order the attempts started.
    """

    def __init__(self, code: str, message: str, *, errors: Sequence[BrainlineError] = ()) -> None:
        super().__init__(code, message)
        self.errors = list(errors)


_CLASSES: dict[str, type[BrainlineError]] = {
    cls.__name__: cls
    for cls in (
        BrainlineError,
        ConfigError,
        APIConnectionError,
        APITimeoutError,
        APIStatusError,
        StreamError,
        AllEndpointsFailedError,
    )
}

# Params inserted into a message as-is; every other param goes through format_value.
_VERBATIM = frozenset({"option", "url", "proxy", "detail", "what", "expected", "null", "pattern"})
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# The language's own word for "no value" in messages ({null}); TypeScript says "undefined".
_NULL_WORD = "None"


def make_error(code: str, **params: Any) -> BrainlineError:
    """The error for `code`, its class and message template taken from ERRORS.

    Every param is formatted with format_value, except those named `option`, `url`, `proxy`,
    `detail`, `what`, `expected`, `null`, `pattern` or ending in `_name`, which are inserted as
    they are.
    A placeholder without a param stays as written, except `{null}`, which defaults to "None".
    Params that are not placeholders are ignored by the message; `status`, `body` and
    `retry_after` (APIStatusError), `partial_text` (StreamError), `request_id` (both) and `errors`
    (AllEndpointsFailedError) become attributes.
    An unknown code raises KeyError (a bug in the caller, not a user error).
    """
    class_name, template = ERRORS[code]

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in params:
            return _NULL_WORD if name == "null" else match.group(0)
        value = params[name]
        if name in _VERBATIM or name.endswith("_name"):
            return str(value)
        return format_value(value)

    message = _PLACEHOLDER.sub(fill, template)
    cls = _CLASSES[class_name]
    if cls is APIStatusError:
        status = params.get("status")
        return APIStatusError(
            code,
            message,
            status=status if isinstance(status, int) and not isinstance(status, bool) else 0,
            body=params.get("body", ""),
            retry_after=params.get("retry_after"),
            request_id=params.get("request_id"),
        )
    if cls is StreamError:
        return StreamError(
            code,
            message,
            partial_text=params.get("partial_text", ""),
            request_id=params.get("request_id"),
        )
    if cls is AllEndpointsFailedError:
        return AllEndpointsFailedError(code, message, errors=params.get("errors", ()))
    return cls(code, message)


def format_value(value: object) -> str:
    """A value as it appears in an error message, byte for byte the same as TypeScript's formatValue.

    Strings as JSON strings (non-ASCII kept), booleans `true` / `false`, integral finite numbers
    without a fraction (`3`, not `3.0`), other numbers in their shortest round-trip form (Python's
    repr), `Infinity` / `-Infinity` / `NaN`, lists and dicts as compact JSON with the same number
    rules inside, None as `None`.
    """
    if value is None:
        return _NULL_WORD
    encoded = _json(value)
    return str(value) if encoded is None else encoded


def _json(value: object) -> str | None:
    """Compact JSON of value with format_value's number rules; None for what JSON cannot hold."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number(value)
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_json(item) or "null" for item in value) + "]"
    if isinstance(value, Mapping):
        parts = []
        for key, item in value.items():
            encoded = _json(item)
            if encoded is not None:
                parts.append(json.dumps(str(key), ensure_ascii=False) + ":" + encoded)
        return "{" + ",".join(parts) + "}"
    return None


def _number(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x.is_integer():
        return str(int(x))
    return repr(x)
