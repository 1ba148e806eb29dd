"""Per-language identifiers, type annotations and literals, so templates never branch on language."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from .ir import Option


def camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def pascal(snake: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in snake.split("_"))


def slug(test_id: str) -> str:
    """A test id both runners can use verbatim: `hermes/default/timeout` -> `hermes__default__timeout`."""
    return re.sub(r"[^A-Za-z0-9/]+", "_", test_id).replace("/", "__")


def ts_doc(text: str) -> str:
    """Doc text for TypeScript: `snake_case` option names in backticks become `camelCase`."""
    return re.sub(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)+)`", lambda m: f"`{camel(m.group(1))}`", text)


def format_value(value: Any, null: str) -> str:
    """The runtimes' format_value, for rendering expected messages (same rules in both languages)."""
    if value is None:
        return null
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if math.isnan(value):
            return "NaN"
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Language:
    """What differs between Python and TypeScript, in one place."""

    name: str
    null: str  # how format_value spells a missing value

    def ident(self, snake: str) -> str:
        return snake if self.name == "python" else camel(snake)

    def literal(self, value: Any) -> str:
        if value is None:
            return "None" if self.name == "python" else "undefined"
        if isinstance(value, bool):
            return ("True" if value else "False") if self.name == "python" else json.dumps(value)
        if isinstance(value, float) and value.is_integer():
            return str(int(value)) if self.name == "typescript" else repr(value)
        if isinstance(value, (int, float)):
            return repr(value)
        if isinstance(value, str):
            return json.dumps(value, ensure_ascii=False)
        if isinstance(value, tuple) and self.name == "python":  # immutable, safe as a default
            items = [self.literal(v) for v in value]
            return "(" + (items[0] + "," if len(items) == 1 else ", ".join(items)) + ")"
        if isinstance(value, (tuple, list)):
            return "[" + ", ".join(self.literal(v) for v in value) + "]"
        if isinstance(value, dict):
            items = ", ".join(f"{json.dumps(k)}: {self.literal(v)}" for k, v in value.items())
            return "{" + items + "}"
        raise TypeError(f"no literal for {value!r}")

    def annotation(self, option: Option) -> str:
        """The argument's type, without the optional marker."""
        return (PY_TYPES if self.name == "python" else TS_TYPES)[option.type]

    def format_message(self, template: str, params: dict[str, Any], raw: frozenset[str]) -> str:
        """Fill a spec message template as the runtime's make_error would."""

        def one(m: re.Match[str]) -> str:
            key = m.group(1)
            if key == "null":
                return self.null
            value = params[key]
            if key == "option":
                return self.ident(value)
            if key in raw or key.endswith("_name"):
                return str(value)
            return format_value(value, self.null)

        return re.sub(r"\{([a-z_]+)\}", one, template)


# Params inserted into messages as-is (names, URLs, details, and any `*_name`); every other
# param goes through format_value. The runtimes keep the same list (docs/runtime.md).
RAW_PARAMS = frozenset({"option", "url", "proxy", "detail", "what", "expected", "null", "pattern"})

PY_TYPES = {
    "string": "str",
    "number": "float",
    "integer": "int",
    "boolean": "bool",
    "string_or_string_list": "str | Sequence[str]",
    "headers": "Mapping[str, str]",
    "string_map": "Mapping[str, str]",
    "json_object": "Mapping[str, Any]",
    "tool_choice": "str | Mapping[str, Any]",
    "session_key_factory": "Callable[[SessionContext], str | None]",
    "metrics_callback": "Callable[[TurnMetrics], object]",
    "fetch_function": "Callable[..., Any]",
    "logger": "Any",
    "http_client": "httpx.AsyncClient",
}
TS_TYPES = {
    "string": "string",
    "number": "number",
    "integer": "number",
    "boolean": "boolean",
    "string_or_string_list": "string | readonly string[]",
    "headers": "Readonly<Record<string, string>>",
    "string_map": "Readonly<Record<string, string>>",
    "json_object": "Readonly<Record<string, unknown>>",
    "tool_choice": "string | Readonly<Record<string, unknown>>",
    "session_key_factory": "((ctx: SessionContext) => string | null | undefined)",
    "metrics_callback": "((metrics: TurnMetrics) => void)",
    "fetch_function": "typeof globalThis.fetch",
    "logger": "Logger",
    "http_client": "never",
}

PYTHON = Language("python", "None")
TYPESCRIPT = Language("typescript", "undefined")
