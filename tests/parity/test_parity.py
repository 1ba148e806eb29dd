"""Every parity case through both languages' public API, on one mock server.

Per case id: test_python (the Python transcript equals the case's expectation), test_typescript
(the same for TypeScript), test_typescript_fetch (the same for TypeScript through its fetch
transport: every client gets `fetch: globalThis.fetch`) and test_parity (the Python and TypeScript
transcripts are equal). known_gaps.txt lists reviewed exceptions; each one turns the matching test
into a strict xfail, so a fixed gap fails until its line is removed.

The TypeScript side runs the built package (typescript/dist/index.js, `npm run build`); without
it the TypeScript tests fail, unless BRAINLINE_PARITY_SKIP_TS=1 asks to skip them (for a Python-only
run on a machine without Node).
BRAINLINE_PARITY_TS_ENTRY points the TS runner at another build (e.g. a deliberately broken one).
"""

from __future__ import annotations

import asyncio
import difflib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import runner_py

from brainline.testing import MockServer

HERE = Path(__file__).resolve().parent
TS_RUNNER = HERE / "runner_ts.mjs"
TS_ENTRY = Path(
    os.environ.get("BRAINLINE_PARITY_TS_ENTRY", runner_py.ROOT / "typescript" / "dist" / "index.js")
)
KNOWN_GAPS_FILE = HERE / "known_gaps.txt"
GAP_SCOPES = ("py", "ts", "ts-fetch", "parity")
MIN_CASES = 60

CASES = runner_py.load_cases(validate=False)  # validated in test_case_files
CASE_IDS = [case["id"] for case in CASES]
CASES_BY_ID = {case["id"]: case for case in CASES}


def load_known_gaps() -> dict[tuple[str, str], str]:
    """``<case id> <py|ts|ts-fetch|parity> <reason>`` per line; '#' starts a comment."""
    gaps: dict[tuple[str, str], str] = {}
    for number, line in enumerate(KNOWN_GAPS_FILE.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(None, 2)
        if len(parts) < 3 or parts[1] not in GAP_SCOPES:
            raise ValueError(
                f"known_gaps.txt:{number}: want '<case id> <{'|'.join(GAP_SCOPES)}> <reason>'"
            )
        gaps[(parts[0], parts[1])] = parts[2]
    return gaps


KNOWN_GAPS = load_known_gaps()


def _params(scope: str) -> list[Any]:
    params = []
    for case_id in CASE_IDS:
        reason = KNOWN_GAPS.get((case_id, scope))
        marks = [pytest.mark.xfail(reason=f"known gap: {reason}", strict=True)] if reason else []
        params.append(pytest.param(case_id, id=case_id, marks=marks))
    return params


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def harness() -> Iterator[runner_py.Harness]:
    """One mock server for the whole session, a route per case and runner."""
    server = MockServer({"routes": runner_py.case_routes(CASES)})
    url = server.start_in_thread()
    try:
        yield runner_py.make_harness(url.removesuffix("/v1"))
    finally:
        server.stop_thread()


@pytest.fixture(scope="session")
def py_transcripts(harness: runner_py.Harness) -> dict[str, dict[str, Any]]:
    """Filled lazily, one case at a time, by the tests that need it."""
    return {}


def _py_transcript(
    case_id: str, harness: runner_py.Harness, cache: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    if case_id not in cache:
        import brainline

        if not hasattr(brainline, "HermesLLM"):
            pytest.fail("brainline does not export the provider classes yet")
        cache[case_id] = asyncio.run(runner_py.run_case(CASES_BY_ID[case_id], harness))
    return cache[case_id]


@pytest.fixture(scope="session")
def ts_transcripts(harness: runner_py.Harness) -> dict[str, dict[str, Any]]:
    """All cases through the TypeScript runner: one `node` process for the whole suite."""
    return _ts_transcripts(harness, "socket")


@pytest.fixture(scope="session")
def ts_fetch_transcripts(harness: runner_py.Harness) -> dict[str, dict[str, Any]]:
    """All cases through the TypeScript runner's fetch transport: one more `node` process."""
    return _ts_transcripts(harness, "fetch")


def _ts_transcripts(harness: runner_py.Harness, transport: str) -> dict[str, dict[str, Any]]:
    runner = "ts" if transport == "socket" else "ts-fetch"
    node = shutil.which("node")
    missing = None if node else "node is not installed"
    if TS_ENTRY and not TS_ENTRY.exists():
        missing = f"{TS_ENTRY} does not exist (cd typescript && npm run build)"
    if missing:
        if os.environ.get("BRAINLINE_PARITY_SKIP_TS") == "1":
            pytest.skip(missing)
        pytest.fail(missing)
    assert node is not None
    payload = {**harness.payload(), "cases": CASES}
    process = subprocess.run(
        [node, str(TS_RUNNER), "--entry", str(TS_ENTRY), "--transport", transport],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if process.returncode != 0:
        pytest.fail(f"runner_ts.mjs exited {process.returncode}:\n{process.stderr[-4000:]}")
    raw: dict[str, dict[str, Any]] = json.loads(process.stdout)
    return {
        case_id: runner_py.normalize(raw[case_id], CASES_BY_ID[case_id], runner, harness)
        for case_id in CASE_IDS
        if case_id in raw
    }


# -- assertions ------------------------------------------------------------------------------------


def _diff(left_name: str, left: Any, right_name: str, right: Any) -> str:
    return "\n".join(
        difflib.unified_diff(
            runner_py.dumps(left).splitlines(),
            runner_py.dumps(right).splitlines(),
            left_name,
            right_name,
            lineterm="",
            n=4,
        )
    )


def expectation_failure(
    case: dict[str, Any], transcript: dict[str, Any], language: str, harness: runner_py.Harness
) -> str | None:
    """None when the transcript meets the case's expectation, else a readable report."""
    expected, actual = runner_py.expected_view(case, transcript, harness)
    problems = runner_py.absent_header_violations(case, transcript)
    if runner_py.dumps(expected) == runner_py.dumps(actual) and not problems:
        return None
    message = [f"{case['id']} ({language}): {case['description']}", *problems]
    message.append(_diff("expected", expected, language, actual))
    return "\n".join(message)


def _check_expectation(
    case_id: str, transcript: dict[str, Any], language: str, harness: runner_py.Harness
) -> None:
    failure = expectation_failure(CASES_BY_ID[case_id], transcript, language, harness)
    if failure:
        pytest.fail(failure, pytrace=False)


# -- tests -----------------------------------------------------------------------------------------


def test_case_files() -> None:
    """Every case matches case.schema.json, is named by its id, and its script compiles."""
    runner_py.load_cases(validate=True)
    assert len(CASES) >= MIN_CASES, f"only {len(CASES)} parity cases; at least {MIN_CASES}"
    assert len(set(CASE_IDS)) == len(CASE_IDS)


def test_known_gaps_name_real_cases() -> None:
    stale = sorted({case_id for case_id, _ in KNOWN_GAPS} - set(CASE_IDS))
    assert not stale, f"known_gaps.txt names cases that do not exist: {stale}"


@pytest.mark.parametrize("case_id", _params("py"))
def test_python(
    case_id: str, harness: runner_py.Harness, py_transcripts: dict[str, dict[str, Any]]
) -> None:
    transcript = _py_transcript(case_id, harness, py_transcripts)
    _check_expectation(case_id, transcript, "python", harness)


@pytest.mark.parametrize("case_id", _params("ts"))
def test_typescript(
    case_id: str, harness: runner_py.Harness, ts_transcripts: dict[str, dict[str, Any]]
) -> None:
    if case_id not in ts_transcripts:
        pytest.fail(f"runner_ts.mjs produced no transcript for {case_id}")
    _check_expectation(case_id, ts_transcripts[case_id], "typescript", harness)


@pytest.mark.parametrize("case_id", _params("ts-fetch"))
def test_typescript_fetch(
    case_id: str, harness: runner_py.Harness, ts_fetch_transcripts: dict[str, dict[str, Any]]
) -> None:
    if case_id not in ts_fetch_transcripts:
        pytest.fail(f"runner_ts.mjs --transport fetch produced no transcript for {case_id}")
    _check_expectation(case_id, ts_fetch_transcripts[case_id], "typescript (fetch)", harness)


@pytest.mark.parametrize("case_id", _params("parity"))
def test_parity(
    case_id: str,
    harness: runner_py.Harness,
    py_transcripts: dict[str, dict[str, Any]],
    ts_transcripts: dict[str, dict[str, Any]],
) -> None:
    python = _py_transcript(case_id, harness, py_transcripts)
    typescript = ts_transcripts.get(case_id)
    if runner_py.dumps(python) != runner_py.dumps(typescript):
        description = CASES_BY_ID[case_id]["description"]
        pytest.fail(
            f"{case_id}: the languages differ ({description})\n"
            + _diff("python", python, "typescript", typescript),
            pytrace=False,
        )


# -- the suite catches a broken runtime ------------------------------------------------------------

# Mutation: the Hermes session-id header name becomes null, so the header is never sent.
MUTATION = ('"X-Hermes-Session-Id"', {"py": "None", "ts": "null"})
MUTATED_CASES = ["hermes_call_id_session_headers", "cancel_then_next_turn"]


def _mutate(path: Path, language: str) -> int:
    text = path.read_text(encoding="utf-8")
    count = text.count(MUTATION[0])
    path.write_text(text.replace(MUTATION[0], MUTATION[1][language]), encoding="utf-8")
    return count


def _assert_all_fail(transcripts: dict[str, dict[str, Any]], language: str) -> None:
    version = runner_py.spec_facts()[2]
    harness = runner_py.Harness("", "", "", (), (), version)
    for case_id in MUTATED_CASES:
        failure = expectation_failure(CASES_BY_ID[case_id], transcripts[case_id], language, harness)
        assert failure is not None, f"the broken {language} runtime passed {case_id}"
        assert "x-hermes-session-id" in failure


def test_a_broken_python_runtime_fails(tmp_path: Path) -> None:
    """A copy of the Python package that drops the Hermes session header fails the cases."""
    import brainline

    source = Path(brainline.__file__).parent
    copy = tmp_path / "brainline"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert sum(_mutate(path, "py") for path in copy.rglob("*.py")) > 0
    process = subprocess.run(
        [sys.executable, str(HERE / "runner_py.py"), *MUTATED_CASES],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert process.returncode == 0, process.stderr[-4000:]
    _assert_all_fail(json.loads(process.stdout), "python")


def test_a_broken_typescript_runtime_fails(tmp_path: Path) -> None:
    """A copy of the TypeScript build that drops the Hermes session header fails the cases."""
    node = shutil.which("node")
    if node is None or not TS_ENTRY.exists():
        if os.environ.get("BRAINLINE_PARITY_SKIP_TS") == "1":
            pytest.skip("node or the TypeScript build is missing")
        pytest.fail("node or the TypeScript build is missing")
    dist = tmp_path / "dist"
    shutil.copytree(TS_ENTRY.parent, dist)
    entry = dist / TS_ENTRY.name
    assert sum(_mutate(path, "ts") for path in dist.rglob("*.js")) > 0
    cases = [CASES_BY_ID[case_id] for case_id in MUTATED_CASES]
    server = MockServer({"routes": runner_py.case_routes(cases)})
    url = server.start_in_thread()
    try:
        harness = runner_py.make_harness(url.removesuffix("/v1"))
        process = subprocess.run(
            [node, str(TS_RUNNER), "--entry", str(entry)],
            input=json.dumps({**harness.payload(), "cases": cases}),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        server.stop_thread()
    assert process.returncode == 0, process.stderr[-4000:]
    raw = json.loads(process.stdout)
    _assert_all_fail(
        {c["id"]: runner_py.normalize(raw[c["id"]], c, "ts", harness) for c in cases}, "typescript"
    )
