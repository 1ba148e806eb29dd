"""Resolve the raw spec into the frozen, typed model the templates see (and nothing else).

Resolution: `{const: NAME}` -> the constant's value, `{template: ...}` -> the string with {version}
filled in, `extends` -> the parent's options with the child's overrides on top. Every semantic
error (an unknown option, constant or error code, a cycle) names the file and the path in it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import model
from .load import RawSpec, SpecError

PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
LANGUAGES = ("python", "typescript")


@dataclass(frozen=True)
class Constant:
    name: str
    value: str | int | float | bool
    doc: str


@dataclass(frozen=True)
class ErrorClass:
    name: str
    base: str | None
    python_extra_bases: tuple[str, ...]
    doc: str


@dataclass(frozen=True)
class ErrorDef:
    code: str
    class_name: str
    message: str
    params: tuple[str, ...]  # placeholder names, in order of first appearance


@dataclass(frozen=True)
class Rules:
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    non_empty: bool = False
    header_value: bool = False
    header_name: bool = False
    url: bool = False
    max_length: int | None = None
    choices: tuple[str, ...] | None = None
    pattern: str | None = None
    error: str | None = None  # error code for a failed choice / pattern check

    def any(self) -> bool:
        return self != Rules()


@dataclass(frozen=True)
class Option:
    name: str  # Python spelling (snake_case); naming.py gives each language's
    type: str
    expected: str  # how messages name the type ("a string")
    default: Any
    env: str | None  # env var read when the argument is not given
    required: bool
    secret: bool
    wire: str | None
    doc: str
    rules: Rules
    extra: bool  # a provider-only option, not a field of LLMConfig
    languages: tuple[str, ...] = LANGUAGES  # the packages that take it


@dataclass(frozen=True)
class Derived:
    name: str  # the LLMConfig field it fills
    source: str  # the option it derives from
    prefix: str
    unless_contains: tuple[str, ...]


@dataclass(frozen=True)
class Provider:
    key: str
    class_name: str
    module: str
    doc: str
    sources: tuple[str, ...]  # spec files it is built from, child first
    arguments: tuple[Option, ...]  # constructor arguments: positional ones first
    positional: tuple[str, ...]
    derived: tuple[Derived, ...]
    genai_provider_name: str = ""  # OpenTelemetry gen_ai.provider.name: inherited, else the key

    def argument(self, name: str) -> Option:
        return next(o for o in self.arguments if o.name == name)

    @property
    def env_vars(self) -> tuple[str, ...]:
        """Every env var this provider reads (for tests that must isolate them)."""
        names = [o.env for o in self.arguments if o.env]
        key_env = next((o.default for o in self.arguments if o.name == "api_key_env"), None)
        if isinstance(key_env, str):
            names.append(key_env)
        elif isinstance(key_env, tuple):
            names.extend(key_env)
        return tuple(sorted(set(names)))


@dataclass(frozen=True)
class Spec:
    name: str
    version: str
    description: str
    license: str
    user_agent: str
    python_requires: str
    node_engines: str
    constants: tuple[Constant, ...]
    error_classes: tuple[ErrorClass, ...]
    errors: tuple[ErrorDef, ...]
    catalog: tuple[Option, ...]  # the engine's options: the fields of LLMConfig
    providers: tuple[Provider, ...]
    sources: dict[str, str] = field(default_factory=dict)
    fallback: tuple[Option, ...] = ()  # FallbackLLM's options (spec/fallback.yaml)

    def error(self, code: str) -> ErrorDef:
        return next(e for e in self.errors if e.code == code)

    def restricted(self, language: str | None) -> Spec:
        """The spec as one language's templates see it: without the options that language does
        not take (`languages` in options.yaml). None: only the options both languages take (the
        mirrored spec tests, which carry the same ids in both)."""

        def keep(o: Option) -> bool:
            return set(o.languages) >= ({language} if language else set(LANGUAGES))

        return replace(
            self,
            catalog=tuple(o for o in self.catalog if keep(o)),
            fallback=tuple(o for o in self.fallback if keep(o)),
            providers=tuple(
                replace(p, arguments=tuple(o for o in p.arguments if keep(o)))
                for p in self.providers
            ),
        )

    def config_nullable(self, name: str) -> bool:
        """Whether an LLMConfig field can be None: some provider neither requires, defaults nor derives it."""
        for p in self.providers:
            if any(d.name == name for d in p.derived):
                continue
            o = p.argument(name)
            if not o.required and o.default is None:
                return True
        return False


class _Resolver:
    def __init__(self, raw: RawSpec) -> None:
        self.raw = raw
        self.version = raw.package.version
        self.constants = {c.name: c.value for c in raw.constants.constants}

    def value(self, v: Any, where: str) -> Any:
        if isinstance(v, model.ConstRef):
            if v.const not in self.constants:
                raise SpecError(f"{where}: unknown constant {v.const!r}")
            return self.constants[v.const]
        if isinstance(v, model.TemplateRef):
            return v.template.replace("{version}", self.version)
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, list):
            return tuple(self.value(item, where) for item in v)
        return v


def _rules(r: model.Validate | None, res: _Resolver, where: str, codes: set[str]) -> Rules:
    if r is None:
        return Rules()
    if r.error is not None and r.error not in codes:
        raise SpecError(f"{where}.validate.error: unknown error code {r.error!r}")
    max_length = res.value(r.max_length, f"{where}.validate.max_length")
    pattern = res.value(r.pattern, f"{where}.validate.pattern")
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise SpecError(f"{where}.validate.pattern: not a valid pattern: {exc}") from exc
    return Rules(
        minimum=res.value(r.minimum, where),
        maximum=res.value(r.maximum, where),
        exclusive_minimum=res.value(r.exclusive_minimum, where),
        non_empty=bool(r.non_empty),
        header_value=bool(r.header_value),
        header_name=bool(r.header_name),
        url=bool(r.url),
        max_length=max_length,
        choices=tuple(r.choices) if r.choices else None,
        pattern=pattern,
        error=r.error,
    )


def _option(
    o: model.Option, types: dict[str, str], res: _Resolver, where: str, codes: set[str], extra: bool
) -> Option:
    return Option(
        name=o.name,
        type=o.type.value,
        expected=types[o.type.value],
        default=res.value(o.default, f"{where}.default"),
        env=None,
        required=bool(o.required),
        secret=bool(o.secret),
        wire=o.wire,
        doc=" ".join(o.doc.split()),
        rules=_rules(o.validate_, res, where, codes),
        extra=extra,
        languages=tuple(lang.value for lang in o.languages) if o.languages else LANGUAGES,
    )


def _placeholders(message: str) -> tuple[str, ...]:
    seen: list[str] = []
    for name in PLACEHOLDER.findall(message):
        if name not in seen:
            seen.append(name)
    return tuple(seen)


def build(raw: RawSpec) -> Spec:
    """Resolve and cross-check the raw spec."""
    res = _Resolver(raw)
    src = {k: str(v) for k, v in raw.sources.items()}

    types: dict[str, str] = {k: v.expected for k, v in raw.options.types.items()}
    for t in model.OptionType:
        if t.value not in types:
            raise SpecError(f"{src['options']}: types: no entry for option type {t.value!r}")

    class_names = [c.name for c in raw.errors.classes]
    error_classes = []
    for i, c in enumerate(raw.errors.classes):
        if c.base is not None and c.base not in class_names[:i]:
            raise SpecError(
                f"{src['errors']}: classes[{i}].base: {c.base!r} is not an earlier class"
            )
        error_classes.append(
            ErrorClass(c.name, c.base, tuple(c.python_extra_bases or ()), " ".join(c.doc.split()))
        )
    errors = []
    codes: set[str] = set()
    for i, e in enumerate(raw.errors.errors):
        if e.code in codes:
            raise SpecError(f"{src['errors']}: errors[{i}].code: duplicate code {e.code!r}")
        if e.class_ not in class_names:
            raise SpecError(f"{src['errors']}: errors[{i}].class: unknown class {e.class_!r}")
        codes.add(e.code)
        errors.append(ErrorDef(e.code, e.class_, e.message, _placeholders(e.message)))

    catalog = []
    for i, o in enumerate(raw.options.options):
        catalog.append(_option(o, types, res, f"{src['options']}: options[{i}]", codes, False))
    names = [o.name for o in catalog]
    if len(set(names)) != len(names):
        raise SpecError(f"{src['options']}: options: duplicate option names")

    fallback = tuple(
        _option(o, types, res, f"{src['fallback']}: options[{i}]", codes, True)
        for i, o in enumerate(raw.fallback.options)
    )
    if len({o.name for o in fallback}) != len(fallback):
        raise SpecError(f"{src['fallback']}: options: duplicate option names")

    providers = _providers(raw, res, catalog, types, codes)
    return Spec(
        name=raw.package.name,
        version=raw.package.version,
        description=raw.package.description,
        license=raw.package.license,
        user_agent=raw.package.user_agent.replace("{version}", raw.package.version),
        python_requires=raw.package.python_requires,
        node_engines=raw.package.node_engines,
        constants=tuple(Constant(c.name, c.value, c.doc) for c in raw.constants.constants),
        error_classes=tuple(error_classes),
        errors=tuple(errors),
        catalog=tuple(catalog),
        providers=providers,
        sources=src,
        fallback=fallback,
    )


def _chain(raw: RawSpec, stem: str) -> list[str]:
    chain = [stem]
    while (parent := raw.providers[chain[-1]][1].extends) is not None:
        path = raw.providers[chain[-1]][0]
        if parent not in raw.providers:
            raise SpecError(f"{path}: extends: no provider file spec/providers/{parent}.yaml")
        if parent in chain:
            raise SpecError(f"{path}: extends: cycle {' -> '.join([*chain, parent])}")
        chain.append(parent)
    return chain


def _providers(
    raw: RawSpec, res: _Resolver, catalog: list[Option], types: dict[str, str], codes: set[str]
) -> tuple[Provider, ...]:
    out = []
    seen_keys: dict[str, Path] = {}
    for stem, (path, p) in raw.providers.items():
        if p.module != stem:
            raise SpecError(f"{path}: module: {p.module!r} must match the file name {stem!r}")
        if p.provider_key in seen_keys:
            raise SpecError(
                f"{path}: provider_key: {p.provider_key!r} already in {seen_keys[p.provider_key]}"
            )
        seen_keys[p.provider_key] = path
        chain = _chain(raw, stem)
        options = {o.name: o for o in catalog}
        order = [o.name for o in catalog]
        positional: list[str] = []
        required: set[str] = set()
        derived: dict[str, Derived] = {}
        genai_name = p.provider_key
        # apply ancestors first, the file itself last
        for link in reversed(chain):
            lpath, lp = raw.providers[link]
            where = str(lpath)
            for i, xo in enumerate(lp.extra_options or []):
                opt = _option(xo, types, res, f"{where}: extra_options[{i}]", codes, True)
                if opt.name in options:
                    raise SpecError(
                        f"{where}: extra_options[{i}].name: {opt.name!r} already exists"
                    )
                options[opt.name] = opt
                order.append(opt.name)
            for name, ov in (lp.overrides or {}).items():
                if name not in options:
                    raise SpecError(f"{where}: overrides.{name}: unknown option")
                changes: dict[str, Any] = {}
                if "default" in ov.model_fields_set:
                    changes["default"] = res.value(ov.default, f"{where}: overrides.{name}.default")
                if ov.env is not None:
                    changes["env"] = res.value(ov.env, f"{where}: overrides.{name}.env")
                options[name] = _replace(options[name], **changes)
            if lp.genai_provider_name is not None:
                genai_name = lp.genai_provider_name
            if lp.positional is not None:
                positional = list(lp.positional)
            if lp.required is not None:
                required = set(lp.required)
            for name, d in (lp.derived or {}).items():
                dwhere = f"{where}: derived.{name}"
                if name not in options or options[name].extra:
                    raise SpecError(f"{dwhere}: not an engine option")
                if d.from_ not in options:
                    raise SpecError(f"{dwhere}.from: unknown option {d.from_!r}")
                derived[name] = Derived(
                    name,
                    d.from_,
                    res.value(d.prefix, f"{dwhere}.prefix"),
                    tuple(d.unless_contains or ()),
                )
        for i, name in enumerate(positional):
            if name not in options or name in derived:
                raise SpecError(f"{path}: positional[{i}]: unknown option {name!r}")
        for name in sorted(required):
            if name not in options:
                raise SpecError(f"{path}: required: unknown option {name!r}")
            options[name] = _replace(options[name], required=True)
        args = [options[n] for n in positional]
        args += [options[n] for n in order if n not in positional and n not in derived]
        out.append(
            Provider(
                key=p.provider_key,
                class_name=p.class_name,
                module=p.module,
                doc=" ".join(p.doc.split()),
                sources=tuple(str(raw.providers[link][0]) for link in chain),
                arguments=tuple(args),
                positional=tuple(positional),
                derived=tuple(derived.values()),
                genai_provider_name=genai_name,
            )
        )
    return tuple(sorted(out, key=lambda p: p.module))


def _replace(o: Option, **changes: Any) -> Option:
    return replace(o, **changes)
