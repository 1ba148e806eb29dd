"""`import brainline` never loads a framework, even where the frameworks are installed.

Runs in every framework's environment (nox -s integrations): there the framework is importable,
so an import of it anywhere in brainline's import graph would show up in sys.modules.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

FRAMEWORKS = ("pipecat", "livekit", "getpatter", "loguru", "openai")


def _loaded_after(statement: str) -> list[str]:
    code = (
        f"import sys, json\n{statement}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(FRAMEWORKS)!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return list(json.loads(out.splitlines()[-1]))


def test_a_framework_is_installed_here() -> None:
    # Otherwise the checks below would pass for the wrong reason.
    assert any(importlib.util.find_spec(name) for name in ("pipecat", "livekit", "getpatter"))


def test_import_brainline_loads_no_framework() -> None:
    assert _loaded_after("import brainline") == []


def test_the_integrations_package_loads_no_framework() -> None:
    assert _loaded_after("import brainline.integrations, brainline.integrations._errors") == []
