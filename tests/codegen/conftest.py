"""Helpers for the generator tests: a throwaway copy of the parts of the repo codegen reads and writes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COPIED = [
    "pyproject.toml",
    "spec",
    "codegen",
    "docs/reference",
    "python/src",
    "python/tests/generated",
    "typescript/src",
    "typescript/test/generated",
]


def _run_codegen(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """python -m codegen against another root, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "codegen", "--root", str(root), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A copy of what codegen reads and writes; node_modules is linked, not copied."""
    dest = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for rel in COPIED:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=ignore)
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / "typescript" / "node_modules").symlink_to(ROOT / "typescript" / "node_modules")
    return dest


@pytest.fixture
def run_codegen() -> Callable[..., subprocess.CompletedProcess[str]]:
    return _run_codegen


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, str]]:
    return _snapshot


@pytest.fixture
def root() -> Path:
    return ROOT


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for rel in COPIED:
        base = root / rel
        files = [base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()]
        for p in files:
            if "__pycache__" not in p.parts:
                out[p.relative_to(root).as_posix()] = p.read_text(encoding="utf-8")
    return out
