"""Read spec/, validate every file against spec/schema/spec.schema.json, parse into the typed model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from pydantic import BaseModel

from . import model

SCHEMA_PATH = Path("spec/schema/spec.schema.json")

# file (relative to spec/) -> the $defs entry it must validate against
FILE_KINDS: dict[str, str] = {
    "package.yaml": "PackageFile",
    "constants.yaml": "ConstantsFile",
    "errors.yaml": "ErrorsFile",
    "options.yaml": "OptionsFile",
    "fallback.yaml": "FallbackFile",
}
PROVIDER_KIND = "ProviderFile"


class SpecError(Exception):
    """The spec is invalid; the message names the file, the path inside it and what is wrong."""


@dataclass(frozen=True)
class RawSpec:
    """The spec files, schema-valid and parsed, with the path each came from (relative to the root)."""

    package: model.PackageFile
    constants: model.ConstantsFile
    errors: model.ErrorsFile
    options: model.OptionsFile
    fallback: model.FallbackFile
    providers: dict[str, tuple[Path, model.ProviderFile]]  # file stem -> (path, provider)
    sources: dict[str, Path]  # "package" / "constants" / "errors" / "options" / "fallback" -> path


def _json_path(path: Any) -> str:
    parts = []
    for p in path:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts) or "(root)"


def _read_yaml(path: Path, root: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path.relative_to(root)}: not valid YAML: {exc}") from exc


def validate_document(doc: Any, kind: str, rel: Path, schema: dict[str, Any]) -> None:
    """Raise SpecError listing every schema violation of one file, each with its path inside the file."""
    sub = {"$ref": f"#/$defs/{kind}", "$defs": schema["$defs"]}
    validator = jsonschema.Draft202012Validator(sub)
    errors = sorted(validator.iter_errors(doc), key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        lines = [f"{rel}: {_json_path(e.absolute_path)}: {_short(e)}" for e in errors]
        raise SpecError("spec does not validate:\n  " + "\n  ".join(lines))


def _short(error: jsonschema.ValidationError) -> str:
    # anyOf failures say little by themselves; name the best sub-error instead
    best = jsonschema.exceptions.best_match([error])
    return best.message


def _parse(cls: type[BaseModel], doc: Any, rel: Path) -> Any:
    try:
        return cls.model_validate(doc)
    except Exception as exc:  # pragma: no cover - the schema check catches these first
        raise SpecError(f"{rel}: {exc}") from exc


def load(root: Path) -> RawSpec:
    """Load and validate every spec file under root/spec."""
    schema = json.loads((root / SCHEMA_PATH).read_text(encoding="utf-8"))
    spec_dir = root / "spec"
    parsed: dict[str, Any] = {}
    sources: dict[str, Path] = {}
    for name, kind in FILE_KINDS.items():
        path = spec_dir / name
        rel = path.relative_to(root)
        if not path.exists():
            raise SpecError(f"{rel}: missing")
        doc = _read_yaml(path, root)
        validate_document(doc, kind, rel, schema)
        parsed[name.removesuffix(".yaml")] = _parse(getattr(model, kind), doc, rel)
        sources[name.removesuffix(".yaml")] = rel
    providers: dict[str, tuple[Path, model.ProviderFile]] = {}
    for path in sorted((spec_dir / "providers").glob("*.yaml")):
        rel = path.relative_to(root)
        doc = _read_yaml(path, root)
        validate_document(doc, PROVIDER_KIND, rel, schema)
        providers[path.stem] = (rel, _parse(model.ProviderFile, doc, rel))
    if not providers:
        raise SpecError("spec/providers/: no provider files")
    return RawSpec(
        package=parsed["package"],
        constants=parsed["constants"],
        errors=parsed["errors"],
        options=parsed["options"],
        fallback=parsed["fallback"],
        providers=providers,
        sources=sources,
    )
