"""Profile one brainline path against the bench server: the evidence behind docs/BENCHMARKS.md.

    python tests/bench/hotspots.py py   SCENARIO [TURNS [CANDIDATE]]   # cProfile (Python)
    python tests/bench/hotspots.py node SCENARIO [TURNS]   # node --cpu-prof of brainline (dist)

SCENARIO is a bench server path (`burst/20000`, `burst/1`, `tools/2000`, `drip/50`). Prints the
functions with the most self time (and, for Python, cumulative time), so a miss in the benchmark
can be traced to the lines that cause it.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import py_bench  # noqa: E402


def start_server() -> tuple[subprocess.Popen[str], int]:
    argv = [sys.executable, str(HERE / "server.py")]
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        argv += ["--cpu", str(max(os.sched_getaffinity(0)))]
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    server = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    return server, int(server.stdout.readline())


async def py_turns(root: str, scenario: str, turns: int, name: str) -> None:
    candidate = py_bench.ALL[name](root)
    turn = candidate.turn(scenario)
    tools = scenario.startswith("tools")
    await py_bench.drain(turn, tools=tools)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for _ in range(turns):
        await py_bench.drain(turn, tools=tools)
    profiler.disable()
    print(f"{turns} turns of {scenario}: {(time.perf_counter() - start) / turns * 1e3:.3f} ms/turn")
    await candidate.close()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(18)
    stats.sort_stats("cumulative").print_stats(12)


def node_profile(port: int, scenario: str, turns: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dist = json.dumps(str(HERE.parents[1] / "typescript" / "dist" / "index.js"))
        script = (
            f"const {{ OpenAICompatibleLLM }} = await import({dist});"
            f"const llm = new OpenAICompatibleLLM({{ baseUrl: 'http://127.0.0.1:{port}/{scenario}', model: 'bench' }});"
            f"const tools = {json.dumps(py_bench.TOOLS) if scenario.startswith('tools') else 'undefined'};"
            "const m = [{ role: 'user', content: 'Say something.' }];"
            "const turn = async () => { for await (const ev of llm.stream(m, tools)) {} };"
            "await turn(); const t = performance.now();"
            f"for (let i = 0; i < {turns}; i++) await turn();"
            f"console.log(`{turns} turns of {scenario}: ${{((performance.now() - t) / {turns}).toFixed(3)}} ms/turn`);"
            "await llm.close();"
        )
        subprocess.run(
            ["node", "--cpu-prof", "--cpu-prof-dir", tmp, "--input-type=module", "-e", script],
            check=True,
        )
        (profile_path,) = Path(tmp).glob("*.cpuprofile")
        profile = json.loads(profile_path.read_text())
    nodes = {n["id"]: n for n in profile["nodes"]}
    self_time: dict[str, float] = defaultdict(float)
    deltas = profile["timeDeltas"]
    for sample, delta in zip(profile["samples"], deltas, strict=True):
        frame = nodes[sample]["callFrame"]
        url = frame["url"].rsplit("/", 1)[-1] or "(native)"
        self_time[f"{frame['functionName'] or '(anonymous)'} {url}:{frame['lineNumber'] + 1}"] += (
            delta
        )
    total = sum(deltas) or 1
    print(f"{'self %':>7}  {'ms':>8}  function")
    for name, us in sorted(self_time.items(), key=lambda kv: -kv[1])[:25]:
        print(f"{us / total * 100:6.1f}%  {us / 1e3:8.1f}  {name}")


def main() -> None:
    lang, scenario = sys.argv[1], sys.argv[2]
    turns = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    name = sys.argv[4] if len(sys.argv) > 4 else "brainline"
    server, port = start_server()
    try:
        if lang == "py":
            asyncio.run(py_turns(f"http://127.0.0.1:{port}", scenario, turns, name))
        else:
            node_profile(port, scenario, turns)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(10)


if __name__ == "__main__":
    main()
