"""The mirrored spec tests: one case per provider default, validation rule and error code.

Both test templates (pytest and vitest) render exactly this list, so the two suites carry the same
ids and cover the same cases. A case is data; the templates only spell it in their language.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .ir import Option, Provider, Spec
from .naming import camel

# A valid value per option name or type, used to satisfy required options.
SAMPLE_BY_NAME: dict[str, Any] = {
    "base_url": "http://127.0.0.1:9/v1",
    "model": "test-model",
    "agent": "support",
}
# Values each error-code test fills the message template with, by placeholder name.
EXAMPLE_PARAMS: dict[str, Any] = {
    "option": "timeout",
    "value": 3,
    "expected": "a number",
    "minimum": 0,
    "maximum": 2,
    "url": "http://127.0.0.1:8642/v1",
    "proxy": "http://127.0.0.1:3128",
    "timeout": 120,
    "status": 503,
    "detail": "overloaded",
    "what": "line",
    "limit": 1048576,
    "length": 300,
    "choices": ["caller_hash"],
    "pattern": "^[a-z]+$",
    "class_name": "CustomLLM",
}
# Per-code replacements of EXAMPLE_PARAMS, where the generic value would read badly.
EXAMPLE_PARAMS_BY_CODE: dict[str, dict[str, Any]] = {
    "unknown_option": {"value": "apikey", "detail": '; did you mean "apiKey"?'},
}
# Option names a class does not define: (label, Python keyword, TypeScript key, the option it
# probably meant or None). Python refuses them with TypeError, TypeScript with unknown_option.
UNKNOWN_OPTIONS: tuple[tuple[str, str, str, str | None], ...] = (
    ("lowercase", "apikey", "apikey", "api_key"),
    ("transposed", "api_kye", "apiKye", "api_key"),
    ("other_language", "baseUrl", "base_url", "base_url"),
    ("misspelled", "timout", "timout", "timeout"),
    ("bogus", "bogus", "bogus", None),
)
UNKNOWN_VALUE = "sk-never-echoed"
WRONG_TYPE: dict[str, Any] = {
    "string": 42,
    "number": "fast",
    "integer": 1.5,
    "boolean": "yes",
    "string_or_string_list": 42,
    "headers": {"X-Test": 1},
    "string_map": {"k": 1},
    "json_object": "json",
    "tool_choice": 42,
    "session_key_factory": "not a function",
    "metrics_callback": "not a function",
    "fetch_function": "not a function",
    "logger": 42,
    "http_client": "not a client",
}
FROM_ENV = "from-env"


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # "provider_key" | "config" | "config_error" | "unknown_option" | "error_message"
    provider: Provider | None = None
    args: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    fields: tuple[tuple[str, Any], ...] = ()  # kind "config": LLMConfig field -> expected value
    code: str = ""  # kind "config_error" / "error_message"
    params: dict[str, Any] = field(
        default_factory=dict
    )  # message params (option in Python spelling)
    class_name: str = ""
    # kind "unknown_option": the key as passed in (Python, TypeScript), on top of args, and its
    # value; params then fill the TypeScript message (Python raises TypeError naming the key)
    unknown: tuple[str, str] = ("", "")
    unknown_value: Any = None


def _base_args(p: Provider) -> dict[str, Any]:
    return {o.name: SAMPLE_BY_NAME[o.name] for o in p.arguments if o.required}


def _error(p: Provider, cid: str, args: dict[str, Any], code: str, **params: Any) -> Case:
    return Case(cid, "config_error", p, args, code=code, params=params)


def _default_cases(p: Provider) -> list[Case]:
    out = []
    base = _base_args(p)
    for o in p.arguments:
        if o.extra or o.required:
            continue
        out.append(
            Case(f"{p.module}/default/{o.name}", "config", p, base, fields=((o.name, o.default),))
        )
        if o.env:
            out.append(
                Case(
                    f"{p.module}/env/{o.name}",
                    "config",
                    p,
                    base,
                    {o.env: FROM_ENV},
                    ((o.name, FROM_ENV),),
                )
            )
            out.append(
                Case(
                    f"{p.module}/env/{o.name}/argument_wins",
                    "config",
                    p,
                    {**base, o.name: "from-argument"},
                    {o.env: FROM_ENV},
                    ((o.name, "from-argument"),),
                )
            )
    key_env = p.argument("api_key_env").default
    env_names = (key_env,) if isinstance(key_env, str) else tuple(key_env or ())
    env_name = env_names[0] if env_names else "BRAINLINE_TEST_KEY"
    env_args = base if env_names else {**base, "api_key_env": env_name}
    out += [
        Case(
            f"{p.module}/api_key/from_env",
            "config",
            p,
            env_args,
            {env_name: "env-key"},
            (("api_key", "env-key"),),
        ),
        Case(
            f"{p.module}/api_key/argument_wins",
            "config",
            p,
            {**env_args, "api_key": "arg-key"},
            {env_name: "env-key"},
            (("api_key", "arg-key"),),
        ),
        Case(f"{p.module}/api_key/keyless", "config", p, env_args, {}, (("api_key", None),)),
    ]
    for i, later in enumerate(env_names[1:], start=1):
        out += [
            Case(
                f"{p.module}/api_key/env_fallback_{i}",
                "config",
                p,
                base,
                {later: "fallback-key"},
                (("api_key", "fallback-key"),),
            ),
            Case(
                f"{p.module}/api_key/env_order_{i}",
                "config",
                p,
                base,
                {env_names[0]: "first-key", later: "fallback-key"},
                (("api_key", "first-key"),),
            ),
        ]
    for d in p.derived:
        for agent, model in (
            ("support", d.prefix + "support"),
            ("ops:triage", "ops:triage"),
            ("team/bot", "team/bot"),
        ):
            out.append(
                Case(
                    f"{p.module}/derived/{d.name}/{slug_value(agent)}",
                    "config",
                    p,
                    {**base, d.source: agent},
                    fields=((d.name, model),),
                )
            )
    return out


def slug_value(v: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in v)


def _rule_cases(p: Provider, o: Option, spec: Spec) -> list[Case]:
    base = _base_args(p)
    r = o.rules
    pre = f"{p.module}/validate/{o.name}"
    out: list[Case] = []
    if o.required:
        out.append(
            _error(p, f"{pre}/required", {**base, o.name: None}, "missing_option", option=o.name)
        )
    bad = WRONG_TYPE[o.type]
    out.append(
        _error(
            p,
            f"{pre}/type",
            {**base, o.name: bad},
            "invalid_secret_type" if o.secret else "invalid_type",
            option=o.name,
            expected=o.expected,
            value=bad,
        )
    )
    step = 1 if o.type == "integer" else 0.5
    if r.minimum is not None and r.maximum is not None:
        for label, v in (("below_minimum", r.minimum - step), ("above_maximum", r.maximum + step)):
            out.append(
                _error(
                    p,
                    f"{pre}/{label}",
                    {**base, o.name: v},
                    "out_of_range",
                    option=o.name,
                    minimum=r.minimum,
                    maximum=r.maximum,
                    value=v,
                )
            )
        for label, v in (("at_minimum", r.minimum), ("at_maximum", r.maximum)):
            out.append(
                Case(f"{pre}/{label}", "config", p, {**base, o.name: v}, fields=((o.name, v),))
            )
    elif r.minimum is not None:
        v = r.minimum - step
        out.append(
            _error(
                p,
                f"{pre}/below_minimum",
                {**base, o.name: v},
                "below_minimum",
                option=o.name,
                minimum=r.minimum,
                value=v,
            )
        )
        out.append(
            Case(
                f"{pre}/at_minimum",
                "config",
                p,
                {**base, o.name: r.minimum},
                fields=((o.name, r.minimum),),
            )
        )
    if r.exclusive_minimum is not None:
        v = r.exclusive_minimum
        out.append(
            _error(
                p,
                f"{pre}/at_exclusive_minimum",
                {**base, o.name: v},
                "not_above_minimum",
                option=o.name,
                minimum=v,
                value=v,
            )
        )
        ok = v + 0.5
        out.append(
            Case(
                f"{pre}/above_exclusive_minimum",
                "config",
                p,
                {**base, o.name: ok},
                fields=((o.name, ok),),
            )
        )
    if r.non_empty:
        out.append(_error(p, f"{pre}/empty", {**base, o.name: ""}, "empty_string", option=o.name))
    if r.header_value:
        bad_value: Any = (
            {"X-Test": "a\r\nInjected: 1"} if o.type == "headers" else "a\r\nInjected: 1"
        )
        out.append(
            _error(
                p,
                f"{pre}/header_value",
                {**base, o.name: bad_value},
                "invalid_header_value",
                option=o.name,
            )
        )
        if o.type != "headers":
            out.append(
                _error(
                    p,
                    f"{pre}/header_value_nul",
                    {**base, o.name: "a\u0000b"},
                    "invalid_header_value",
                    option=o.name,
                )
            )
    if r.header_name:
        out.append(
            _error(
                p,
                f"{pre}/header_name",
                {**base, o.name: "Bad Header"},
                "invalid_header_name",
                option=o.name,
                value="Bad Header",
            )
        )
    if r.url:
        bad_url = "ftp://127.0.0.1/v1"
        out.append(
            _error(
                p,
                f"{pre}/scheme",
                {**base, o.name: bad_url},
                "invalid_base_url",
                option=o.name,
                value=bad_url,
            )
        )
        out.append(
            _error(
                p,
                f"{pre}/credentials",
                {**base, o.name: "http://user:secret@127.0.0.1:9/v1"},
                "base_url_credentials",
                option=o.name,
            )
        )
        out.append(
            Case(
                f"{pre}/https",
                "config",
                p,
                {**base, o.name: "https://example.test/v1"},
                fields=((o.name, "https://example.test/v1"),),
            )
        )
    if r.max_length is not None:
        long = "k" * (r.max_length + 1)
        out.append(
            _error(
                p,
                f"{pre}/too_long",
                {**base, o.name: long},
                "too_long",
                option=o.name,
                maximum=r.max_length,
                length=len(long),
            )
        )
        ok = "k" * r.max_length
        out.append(
            Case(f"{pre}/at_max_length", "config", p, {**base, o.name: ok}, fields=((o.name, ok),))
        )
    if r.choices is not None:
        code = r.error or "invalid_choice"
        v = "not_a_choice"
        params = {"option": o.name, "value": v}
        if "choices" in spec.error(code).params:
            params["choices"] = list(r.choices)
        out.append(_error(p, f"{pre}/choice", {**base, o.name: v}, code, **params))
        for c in r.choices:
            out.append(
                Case(f"{pre}/choice_{c}", "config", p, {**base, o.name: c}, fields=((o.name, c),))
            )
    if r.pattern is not None:
        code = r.error or "invalid_pattern"
        for label, v in (("pattern", "bad id!"), ("pattern_empty", "")):
            params = {"option": o.name, "value": v}
            if "pattern" in spec.error(code).params:
                params["pattern"] = r.pattern
            out.append(_error(p, f"{pre}/{label}", {**base, o.name: v}, code, **params))
    return out


def _unknown_option_cases(p: Provider) -> list[Case]:
    base = _base_args(p)

    def case(
        label: str,
        args: dict[str, Any],
        keys: tuple[str, str],
        meant: str | None,
        value: Any = UNKNOWN_VALUE,
    ) -> Case:
        detail = f'; did you mean "{camel(meant)}"?' if meant else ""
        return Case(
            f"{p.module}/unknown_option/{label}",
            "unknown_option",
            p,
            args,
            code="unknown_option",
            params={"class_name": p.class_name, "value": keys[1], "detail": detail},
            unknown=keys,
            unknown_value=value,
        )

    out = [case(label, base, (py, ts), meant) for label, py, ts, meant in UNKNOWN_OPTIONS]
    # a typo is a typo even without a value; and it is refused before any other check
    out.append(case("bogus_undefined", base, ("bogus", "bogus"), None, None))
    out.append(case("checked_first", {"timeout": "fast"}, ("bogus", "bogus"), None))
    return out


def build_cases(spec: Spec) -> list[Case]:
    cases: list[Case] = []
    for p in spec.providers:
        cases.append(Case(f"{p.module}/provider_key", "provider_key", p))
        cases += _default_cases(p)
        for o in p.arguments:
            cases += _rule_cases(p, o, spec)
        cases += _unknown_option_cases(p)
    for e in spec.errors:
        example = {**EXAMPLE_PARAMS, **EXAMPLE_PARAMS_BY_CODE.get(e.code, {})}
        params = {k: example[k] for k in e.params if k != "null"}
        cases.append(
            Case(
                f"errors/{e.code}",
                "error_message",
                code=e.code,
                params=params,
                class_name=e.class_name,
            )
        )
    ids = [c.id for c in cases]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise AssertionError(f"duplicate case ids: {sorted(dupes)}")
    return cases
