"""codegen refuses a spec that does not validate, naming the file, the path inside it and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def _edit(root: Path, rel: str, old: str, new: str) -> None:
    path = root / rel
    text = path.read_text(encoding="utf-8")
    assert old in text, f"test setup: {old!r} not in {rel}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


BROKEN = [
    pytest.param(
        "spec/providers/hermes.yaml",
        "timeout: {default: 120}",
        "timeout: {default: {seconds: 120}}",
        ["spec/providers/hermes.yaml", "overrides.timeout.default"],
        id="wrong_default_shape",
    ),
    pytest.param(
        "spec/options.yaml",
        "type: number\n    default: null\n    validate: {minimum: 0, maximum: 2}",
        "type: float\n    default: null\n    validate: {minimum: 0, maximum: 2}",
        ["spec/options.yaml", "].type", "'float' is not one of"],
        id="unknown_type",
    ),
    pytest.param(
        "spec/options.yaml",
        "wire: temperature",
        "wire: temperature\n    colour: red",
        ["spec/options.yaml", "options[", "'colour'"],
        id="unknown_key",
    ),
    pytest.param(
        "spec/package.yaml",
        "version: 0.1.0",
        "version: one",
        ["spec/package.yaml", "version", "does not match"],
        id="bad_version",
    ),
    pytest.param(
        "spec/errors.yaml",
        "  - code: interrupted\n",
        "  - code: Interrupted!\n",
        ["spec/errors.yaml", "errors[", "code"],
        id="bad_error_code",
    ),
    pytest.param(
        "spec/providers/hermes.yaml",
        "{const: HERMES_BASE_URL}",
        "{const: NO_SUCH_CONSTANT}",
        [
            "spec/providers/hermes.yaml",
            "overrides.base_url.default",
            "unknown constant 'NO_SUCH_CONSTANT'",
        ],
        id="unknown_constant",
    ),
    pytest.param(
        "spec/providers/hermes.yaml",
        "  timeout: {default: 120}",
        "  timeout_s: {default: 120}",
        ["spec/providers/hermes.yaml", "overrides.timeout_s", "unknown option"],
        id="unknown_override",
    ),
    pytest.param(
        "spec/providers/custom.yaml",
        "extends: openai_compatible",
        "extends: nowhere",
        ["spec/providers/custom.yaml", "extends", "nowhere"],
        id="unknown_parent",
    ),
    pytest.param(
        "spec/providers/openai_compatible.yaml",
        "provider_key: openai_compatible",
        "extends: custom\nprovider_key: openai_compatible",
        ["extends", "cycle"],
        id="extends_cycle",
    ),
    pytest.param(
        "spec/options.yaml",
        "validate: {choices: [caller_hash], error: invalid_session_key_from}",
        "validate: {choices: [caller_hash], error: no_such_error}",
        ["spec/options.yaml", "].validate.error", "unknown error code 'no_such_error'"],
        id="unknown_error_code",
    ),
    pytest.param(
        "spec/providers/openclaw.yaml",
        "module: openclaw",
        "module: open_claw",
        ["spec/providers/openclaw.yaml", "module", "must match the file name"],
        id="module_name",
    ),
]


@pytest.mark.parametrize(("rel", "old", "new", "expected"), BROKEN)
def test_broken_spec_is_refused(
    repo_copy: Path, run_codegen: Any, rel: str, old: str, new: str, expected: list[str]
) -> None:
    _edit(repo_copy, rel, old, new)
    before = (repo_copy / "python/src/brainline/_generated/hermes.py").read_text(encoding="utf-8")
    result = run_codegen(repo_copy)
    assert result.returncode == 2, result.stdout + result.stderr
    for fragment in expected:
        assert fragment in result.stderr, f"{fragment!r} not in:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    # nothing was written
    assert (repo_copy / "python/src/brainline/_generated/hermes.py").read_text(
        encoding="utf-8"
    ) == before


def test_invalid_yaml_names_the_file(repo_copy: Path, run_codegen: Any) -> None:
    (repo_copy / "spec/providers/hermes.yaml").write_text(
        "provider_key: [unclosed\n", encoding="utf-8"
    )
    result = run_codegen(repo_copy)
    assert result.returncode == 2
    assert "spec/providers/hermes.yaml: not valid YAML" in result.stderr
