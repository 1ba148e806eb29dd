"""`nox -s bench`: brainline beside the clients a user would pick instead, in both languages.

Starts tests/bench/server.py in its own process (pinned to the last core), pins itself and its
children (the Node bench, the concurrent and cold-start processes) to core 0, runs every figure
with the candidates interleaved, prints the table and writes docs/BENCHMARKS.md.

    python tests/bench/run.py [--rounds N] [--quick] [--out PATH]

Needs: brainline importable, the comparison packages (openai, optionally getpatter and litellm)
installed, typescript/dist built and tests/bench/node/node_modules installed (`npm ci`); the
telemetry figures need the OpenTelemetry SDK (the test dependency group, typescript's devDependencies).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NODE_DIR = HERE / "node"
sys.path.insert(0, str(HERE))

import py_bench  # noqa: E402
import tail  # noqa: E402
import telemetry as bench_telemetry  # noqa: E402

# Python wants <= 1.0x raw httpx on throughput with the standard json (the target).
TARGETS: dict[str, dict[str, float]] = {
    "py": {"throughput": 1.0, "one_chunk": 1.15, "first_text": 1.1, "tool_call": 1.0},
    "node": {"throughput": 1.0, "one_chunk": 1.1, "first_text": 1.1, "tool_call": 1.0},
}
ACCELERATED_TARGET = 0.7  # Python throughput with an optional accelerated parser
CANCEL_TARGET = 0.002
CONCURRENT_TARGET = 1.2
COLD_TARGET = {"py": 1.3, "node": 1.2}
COLD_RSS_TARGET_MB = 30.0
BASELINE = {"py": "raw httpx", "node": "raw fetch"}
FIGURE_NAMES = {
    "throughput": "throughput, 20k-chunk stream (s per stream)",
    "one_chunk": "one-chunk turn, reused connection",
    "first_text": "time to first text, 50 chunks one per write",
    "tool_call": "2,000-piece tool call",
}


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {cpu})


PEAK_PY = "\nprint([l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0])"
PEAK_NODE = (
    ";console.log((await import('node:fs')).readFileSync('/proc/self/status', 'utf8')"
    ".split('\\n').find((l) => l.startsWith('VmHWM:')))"
)


def run_child(argv: list[str], cwd: Path | None = None) -> tuple[str, float, float]:
    """Run one fresh process: (stdout, wall seconds, peak RSS in MB: the VmHWM line it printed).

    The child reports its own VmHWM: ru_maxrss of a child forked from this (large) process would
    include the parent's pages from before the exec."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status = os.waitpid(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    text = out.decode()
    peak = [line for line in text.splitlines() if line.startswith("VmHWM:")]
    return text, wall, (int(peak[-1].split()[1]) / 1024 if peak else float("nan"))


def concurrent(port: int, rounds: int, turns: int, chunks: int) -> dict[str, Any]:
    """500 concurrent turns, one fresh process per candidate and round, interleaved."""
    py_names = [n for n in py_bench.available(list(py_bench.ALL)) if n != "litellm"]
    jobs: list[tuple[str, str, list[str], Path | None]] = []
    for name in py_names:
        argv = [sys.executable, str(HERE / "py_bench.py"), "concurrent", name, str(port)]
        jobs.append(("py", name, [*argv, str(turns), str(chunks)], None))
    for name in ("raw fetch", "brainline", "openai-node", "Vercel AI SDK"):
        argv = ["node", "bench.mjs", "concurrent", name, str(port), str(turns), str(chunks)]
        jobs.append(("node", name, argv, NODE_DIR))
    samples: dict[str, dict[str, list[dict[str, float]]]] = {"py": {}, "node": {}}
    for r in range(rounds):
        k = r % len(jobs)
        for lang, name, argv, cwd in jobs[k:] + jobs[:k]:
            out, _, _ = run_child(argv, cwd)
            samples[lang].setdefault(name, []).append(json.loads(out.strip().splitlines()[-1]))
    result: dict[str, Any] = {"py": {}, "node": {}}
    for lang, by_name in samples.items():
        for name, runs in by_name.items():
            result[lang][name] = {
                key: statistics.median(run[key] for run in runs)
                for key in ("wall", "p50", "p99", "kib_per_turn")
            }
    log("  concurrent: " + json.dumps(result))
    return result


COLD_PY = {
    "bare import httpx": "import httpx",
    "brainline": (
        "from brainline import OpenAICompatibleLLM\n"
        "OpenAICompatibleLLM(base_url='http://127.0.0.1:9/v1', model='m')"
    ),
    "openai-python": (
        "from openai import AsyncOpenAI\n"
        "AsyncOpenAI(base_url='http://127.0.0.1:9/v1', api_key='k', max_retries=0)"
    ),
    "getpatter": (
        "from getpatter.llm.custom import LLM\nLLM(base_url='http://127.0.0.1:9/v1', model='m')"
    ),
}
COLD_NODE = {
    "bare node start": "",
    "brainline": (
        "const { OpenAICompatibleLLM } = await import(process.argv[1]);"
        "new OpenAICompatibleLLM({ baseUrl: 'http://127.0.0.1:9/v1', model: 'm' });"
    ),
    "openai-node": (
        "const { default: OpenAI } = await import('openai');"
        "new OpenAI({ baseURL: 'http://127.0.0.1:9/v1', apiKey: 'k', maxRetries: 0 });"
    ),
    "Vercel AI SDK": (
        "const { createOpenAICompatible } = await import('@ai-sdk/openai-compatible');"
        "await import('ai');"
        "createOpenAICompatible({ name: 'b', baseURL: 'http://127.0.0.1:9/v1' }).chatModel('m');"
    ),
}


def cold_start(rounds: int) -> dict[str, Any]:
    # Each Python candidate in a venv of its own package and dependencies only, as a user installs
    # it (`nox -s bench` makes them; the bare httpx import runs in brainline's); without them,
    # every candidate runs here.
    pythons = json.loads(os.environ.get("BRAINLINE_COLD_PYTHONS", "{}"))
    venv_of = {"bare import httpx": "brainline"}
    py_jobs = {}
    for name, code in COLD_PY.items():
        python = pythons.get(venv_of.get(name, name))
        if python is None:
            if name == "getpatter" and "getpatter" not in py_bench.available(["getpatter"]):
                continue
            python = sys.executable
        py_jobs[name] = [python, "-c", code + PEAK_PY]
    dist = os.environ.get("BRAINLINE_DIST", str(ROOT / "typescript" / "dist" / "index.js"))
    node_jobs = {
        name: ["node", "--input-type=module", "-e", code + PEAK_NODE, dist]
        for name, code in COLD_NODE.items()
    }
    jobs = [("py", n, a) for n, a in py_jobs.items()] + [
        ("node", n, a) for n, a in node_jobs.items()
    ]
    walls: dict[tuple[str, str], list[float]] = {}
    rss: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for lang, name, argv in jobs:
            _, wall, peak = run_child(argv, NODE_DIR if lang == "node" else None)
            walls.setdefault((lang, name), []).append(wall)
            rss.setdefault((lang, name), []).append(peak)
    result: dict[str, Any] = {"py": {}, "node": {}}
    for (lang, name), values in walls.items():
        result[lang][name] = {
            "wall": py_bench.summary(values),
            "rss_mb": statistics.median(rss[(lang, name)]),
        }
    log(
        "  cold start: "
        + json.dumps({k: {n: v["wall"]["median"] for n, v in d.items()} for k, d in result.items()})
    )
    return result


# -- the report ------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def versions() -> list[str]:
    out = [f"Python {platform.python_version()}"]
    for package in ("brainline", "httpx", "openai", "getpatter", "litellm"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out.append(f"{package} {metadata.version(package)}")
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    out.append(f"Node {node}")
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    for package in ("openai", "ai", "@ai-sdk/openai-compatible"):
        info = lock["packages"].get(f"node_modules/{package}")
        if info:
            out.append(f"{package} {info['version']} (npm)")
    ts = json.loads((ROOT / "typescript" / "package.json").read_text())
    out.append(f"brainline {ts['version']} (npm, typescript/dist)")
    return out


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores"


def report(
    results: dict[str, Any], args: argparse.Namespace, elapsed: float
) -> tuple[str, list[str]]:
    lines: list[str] = []
    verdicts: list[str] = []
    add = lines.append
    add("# Benchmarks")
    add("")
    add(
        "Generated by `nox -s bench` (`python tests/bench/run.py"
        + (f" --rounds {args.rounds}" if args.rounds != 5 else "")
        + (" --quick" if args.quick else "")
        + "`); do not edit by hand, rerun it."
    )
    add("")
    add(f"- Machine: {machine()}; server pinned to one core, clients to the other.")
    add(f"- Versions: {', '.join(versions())}.")
    add(
        f"- Run took {elapsed:.0f} s. Interleaved rounds (candidate order rotated each round):"
        f" {args.rounds} for Python's throughput (litellm takes 7 s a stream), {3 * args.rounds}"
        " for every other sequential figure;"
        f" {10 if args.quick else 100} cancels per candidate and case; p99 is over those."
    )
    add(
        "- **The machine is shared** (other engineers run test suites on the same 2 cores while this"
    )
    add(
        "  runs), so absolute times are noisy: what counts are the **ratios within one run**, where"
    )
    add("  every candidate ran interleaved under the same load. Medians, with min-max over rounds.")
    add("- Every measured sequential turn ran on a connection its client already had (the server")
    add("  counts connections; each client read its response to the end after `[DONE]`). An")
    add(
        "  unmeasured one-chunk turn before each measured one may reconnect after a keep-alive expiry."
    )
    add("- Each library is iterated directly (the user's own `async for` / `for await` loop), with")
    add("  no adapter generator around it.")
    add("")
    for lang, title in (("py", "Python"), ("node", "Node")):
        seq = results[lang]
        base = BASELINE[lang]
        add(f"## {title} (ratios to {base})")
        add("")
        names = list(seq["throughput"])
        add("| figure | " + " | ".join(names) + " |")
        add("|---|" + "---|" * len(names))
        for figure, label in FIGURE_NAMES.items():
            row = seq[figure]
            cells = []
            for n in names:
                v = row[n]
                ratio = v["median"] / row[base]["median"]
                cells.append(f"{ratio:.2f}x ({ms(v['median'])} ms; {ms(v['min'])}-{ms(v['max'])})")
            add(f"| {label} | " + " | ".join(cells) + " |")
        tput = seq["throughput"]
        chunks = 2_000 if args.quick else 20_000
        add(
            "| throughput, chunks/s | "
            + " | ".join(f"{chunks / tput[n]['median']:,.0f}" for n in names)
            + " |"
        )
        for figure, label in (("cancel_head", "before headers"), ("cancel_mid", "mid-stream")):
            row = seq[figure]
            add(
                f"| cancel {label}: returned p50/p99 ms | "
                + " | ".join(
                    f"{ms(row[n]['returned_p50'])} / {ms(row[n]['returned_p99'])}" for n in names
                )
                + " |"
            )
            add(
                f"| cancel {label}: server saw close p50/p99 ms | "
                + " | ".join(
                    f"{ms(row[n]['closed_p50'])} / {ms(row[n]['closed_p99'])}" for n in names
                )
                + " |"
            )
        conc = results["concurrent"][lang]
        cnames = list(conc)
        add("")
        add(
            f"500 concurrent 200-chunk turns on one client (fresh process each, median of {args.conc_rounds} runs):"
        )
        add("")
        add(
            "| candidate | wall s | turn p50 ms | turn p99 ms (ratio) | peak RSS KiB per turn (ratio) |"
        )
        add("|---|---|---|---|---|")
        for n in cnames:
            v = conc[n]
            b = conc[base]
            add(
                f"| {n} | {v['wall']:.3f} | {ms(v['p50'])} | {ms(v['p99'])} ({v['p99'] / b['p99']:.2f}x) | "
                f"{v['kib_per_turn']:.1f} ({v['kib_per_turn'] / max(b['kib_per_turn'], 1e-9):.2f}x) |"
            )
        cold = results["cold"][lang]
        cbase = "bare import httpx" if lang == "py" else "bare node start"
        add("")
        add(
            f"Cold start (a fresh process: start, import, construct one client; median of {args.cold_rounds}):"
        )
        if lang == "py" and os.environ.get("BRAINLINE_COLD_PYTHONS"):
            add("")
            add(
                "Each Python candidate runs in a venv holding only its package and dependencies, as a "
                "user installs it (bare `import httpx` in brainline's): in the bench venv litellm's "
                "dependencies (click, rich, pygments) make `import httpx` itself load about 6 MB more."
            )
        add("")
        add("| candidate | wall ms (ratio) | peak RSS MB |")
        add("|---|---|---|")
        for n, v in cold.items():
            wall = v["wall"]["median"]
            base_wall = cold[cbase]["wall"]["median"]
            add(f"| {n} | {ms(wall)} ({wall / base_wall:.2f}x) | {v['rss_mb']:.1f} |")
        add("")

    # Targets
    add("## Targets (ratios to the raw baseline in the same run)")
    add("")
    add("| figure | Python target | Python brainline | TypeScript target | TypeScript brainline |")
    add("|---|---|---|---|---|")

    def ratio(lang: str, figure: str) -> float:
        row = results[lang][figure]
        return float(row["brainline"]["median"] / row[BASELINE[lang]]["median"])

    for figure, label in FIGURE_NAMES.items():
        cells = []
        for lang in ("py", "node"):
            target = TARGETS[lang][figure]
            r = ratio(lang, figure)
            ok = r <= target
            verdicts.append(f"{lang} {figure}: {r:.2f}x vs <= {target}x: {mark(ok)}")
            cells += [f"<= {target}x", f"{r:.2f}x {mark(ok)}"]
        add(f"| {label} | " + " | ".join(cells) + " |")
    # No accelerated parser ships (an A/B with orjson gained ~3%): the standard-json figure is the
    # best brainline has, held against the accelerated target. The findings say what it takes.
    r = ratio("py", "throughput")
    ok = r <= ACCELERATED_TARGET
    verdicts.append(
        f"py throughput, accelerated parser: {r:.2f}x (none ships) vs <= {ACCELERATED_TARGET}x:"
        f" {mark(ok)}"
    )
    add(
        f"| throughput with the optional accelerated parser | <= {ACCELERATED_TARGET}x |"
        f" {r:.2f}x (no accelerated parser ships) {mark(ok)} | - | - |"
    )
    cells = []
    for lang in ("py", "node"):
        worst = max(
            results[lang][f]["brainline"][k]
            for f in ("cancel_head", "cancel_mid")
            for k in ("returned_p99", "closed_p99")
        )
        ok = worst <= CANCEL_TARGET
        verdicts.append(f"{lang} cancel: worst p99 {ms(worst)} ms: {mark(ok)}")
        cells += ["<= 2 ms p99", f"worst p99 {ms(worst)} ms {mark(ok)}"]
    add(
        "| cancel -> returned / socket closed, before headers and mid-stream | "
        + " | ".join(cells)
        + " |"
    )
    cells = []
    for lang in ("py", "node"):
        conc = results["concurrent"][lang]
        rp = conc["brainline"]["p99"] / conc[BASELINE[lang]]["p99"]
        rm = conc["brainline"]["kib_per_turn"] / max(conc[BASELINE[lang]]["kib_per_turn"], 1e-9)
        ok = rp <= CONCURRENT_TARGET and rm <= CONCURRENT_TARGET
        verdicts.append(f"{lang} concurrent: p99 {rp:.2f}x, memory {rm:.2f}x: {mark(ok)}")
        cells += ["<= 1.2x raw", f"p99 {rp:.2f}x, memory {rm:.2f}x {mark(ok)}"]
    add("| 500 concurrent: p99 turn, memory per turn | " + " | ".join(cells) + " |")
    cells = []
    for lang in ("py", "node"):
        cold = results["cold"][lang]
        cbase = "bare import httpx" if lang == "py" else "bare node start"
        r = cold["brainline"]["wall"]["median"] / cold[cbase]["wall"]["median"]
        rss = cold["brainline"]["rss_mb"]
        ok = r <= COLD_TARGET[lang] and (lang == "node" or rss <= COLD_RSS_TARGET_MB)
        verdicts.append(f"{lang} cold start: {r:.2f}x, {rss:.1f} MB: {mark(ok)}")
        target = f"<= {COLD_TARGET[lang]}x" + (", <= 30 MB" if lang == "py" else "")
        cells += [target, f"{r:.2f}x, {rss:.1f} MB {mark(ok)}"]
    add("| import + one client | " + " | ".join(cells) + " |")
    add("")

    if "tail" in results:
        section, tail_verdicts = tail.report(results["tail"])
        lines += section
        verdicts += tail_verdicts

    if "telemetry" in results:
        lines += bench_telemetry.report(results["telemetry"])[0]

    # Capacity
    add("## Capacity: concurrent calls one core can stream at 50 tokens/s each")
    add("")
    add("Chunks per second one core decodes (the throughput figure) divided by 50. An upper bound:")
    add("a real worker also spends the core on audio, STT and TTS.")
    add("")
    add("| language | candidate | chunks/s | calls at 50 tokens/s |")
    add("|---|---|---|---|")
    chunks = 2_000 if args.quick else 20_000
    for lang in ("py", "node"):
        for n, v in results[lang]["throughput"].items():
            rate = chunks / v["median"]
            add(
                f"| {'Python' if lang == 'py' else 'Node'} | {n} | {rate:,.0f} | {rate / 50:,.0f} |"
            )
    add("")
    return "\n".join(lines), verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description="brainline benchmarks")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--conc-rounds", type=int, default=5)
    parser.add_argument("--cold-rounds", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    parser.add_argument(
        "--append",
        default=str(HERE / "findings.md"),
        help="a Markdown file appended to the report (default: the profile findings)",
    )
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch at import

    started = time.perf_counter()
    # One snapshot of typescript/dist for the whole run: the build may change under a long run.
    # Inside typescript/ (.gitignore has it; removed at the end), so
    # that the snapshot's optional peers (@opentelemetry/api) resolve from typescript/node_modules.
    snapshot = Path(tempfile.mkdtemp(prefix=".bench-", dir=ROOT / "typescript")) / "dist"
    shutil.copytree(ROOT / "typescript" / "dist", snapshot)
    os.environ["BRAINLINE_DIST"] = str(snapshot / "index.js")
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    server_argv = [sys.executable, str(HERE / "server.py")]
    if ncpu > 1:
        server_argv += ["--cpu", str(max(os.sched_getaffinity(0)))]
    server = subprocess.Popen(server_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdin is not None
    port = int(server.stdout.readline())
    pin(min(os.sched_getaffinity(0)))
    root = f"http://127.0.0.1:{port}"
    try:
        results: dict[str, Any] = {}
        names = py_bench.available(list(py_bench.ALL))
        log(f"python candidates: {', '.join(names)}")
        results["py"] = asyncio.run(
            py_bench.sequential_figures(root, names, args.rounds, args.quick, log)
        )
        out, _, _ = run_child(
            [
                "node",
                "bench.mjs",
                "sequential",
                str(port),
                str(args.rounds),
                "1" if args.quick else "0",
            ],
            NODE_DIR,
        )
        results["node"] = json.loads(out.strip().splitlines()[-1])
        turns, chunks = (100, 50) if args.quick else (500, 200)
        results["concurrent"] = concurrent(port, args.conc_rounds, turns, chunks)
        results["cold"] = cold_start(args.cold_rounds)
        results["tail"] = tail.run(40 if args.quick else 200, log)
        results["telemetry"] = bench_telemetry.run(root, args.rounds, args.quick, log)
    finally:
        server.stdin.close()
        server.wait(10)
        shutil.rmtree(snapshot.parent, ignore_errors=True)
    text, verdicts = report(results, args, time.perf_counter() - started)
    if args.append and Path(args.append).exists():
        text += "\n" + Path(args.append).read_text()
    print(text)
    Path(args.out).write_text(text)
    raw = Path(tempfile.gettempdir()) / "brainline-bench.json"
    raw.write_text(json.dumps(results, indent=1))
    log(f"raw results: {raw}")
    log("\n".join(verdicts))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
