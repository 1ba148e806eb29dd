"""Every brainline workflow is a nox session: `nox -l` lists them, `nox -s NAME` runs one.

The default (`nox` with no -s) is check + tests. Node and npm come from the machine (external=True);
the TypeScript toolchain is installed from typescript/package-lock.json with `npm ci`.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
TS = str(ROOT / "typescript")

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["check", "tests"]
nox.options.reuse_venv = "yes"


def _group(name: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, name))


def _npm_ci(session: nox.Session) -> None:
    """Install the TypeScript toolchain from the committed lock file (skipped when it is current)."""
    lock = ROOT / "typescript" / "package-lock.json"
    stamp = ROOT / "typescript" / "node_modules" / ".package-lock.json"
    if (
        stamp.exists()
        and stamp.stat().st_mtime >= lock.stat().st_mtime
        and not os.environ.get("CI")
    ):
        return
    session.run("npm", "ci", "--prefix", TS, "--no-audit", "--no-fund", external=True)


def _npm(session: nox.Session, *args: str) -> None:
    session.run("npm", "--prefix", TS, "run", *args, external=True)


@nox.session
def generate(session: nox.Session) -> None:
    """Regenerate every generated file from spec/ (then commit the result)."""
    session.install(*_group("codegen"))
    _npm_ci(session)
    session.run("python", "-m", "codegen")


@nox.session
def check(session: nox.Session) -> None:
    """Generated files in sync, ruff, mypy --strict, tsc --noEmit and biome."""
    session.install(*_group("lint"))
    session.install("-e", "python")
    _npm_ci(session)
    session.run("python", "-m", "codegen", "--check")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    _npm(session, "typecheck")
    _npm(session, "lint")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite: Python unit tests, codegen tests, TypeScript tests and the parity cases."""
    session.install(*_group("test"))
    session.install("-e", "python")
    _npm_ci(session)
    _npm(session, "build")  # the parity runner drives the built package, as users get it
    session.run("python", "-m", "pytest", "-q", *session.posargs)
    _npm(session, "test")


@nox.session
def parity(session: nox.Session) -> None:
    """Only the shared parity cases, through both languages."""
    session.install(*_group("test"))
    session.install("-e", "python")
    _npm_ci(session)
    _npm(session, "build")
    session.run("python", "-m", "pytest", "-q", "tests/parity", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """A streamed turn in both languages against the embedded mock server."""
    session.install("-e", "python")
    _npm_ci(session)
    _npm(session, "build")
    session.run("python", "docs/examples/demo.py", "--node", TS)
