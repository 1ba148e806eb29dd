"""Soak: concurrent calls for a while against the MockServer with a fault mix (`nox -s soak`).

Each call runs turns back to back, each of a random kind (tests/reliability/faults.py: normal turns,
barge-ins before the headers, mid-stream and during stalls, drops, resets, HTTP and stream errors),
with a barge-in timer of 5 ms before the headers as a caller would do it; the kinds named
`fallback/<kind>` run the same turn through a FallbackLLM with hedging (faults.FALLBACK_*: a primary
that does not answer in time, the kind's route as the hedge). The MockServer runs in its
own process. Prints error counts by code, p50/p99 turn time per kind, RSS over time and a JSON
summary; exits 1 on any untyped error, hang (a turn not ended within --hang seconds) or turn that
ended otherwise than its kind says. A turn that ended in a typed timeout (`read_timeout`,
`connect_timeout`) is what a client should do when the machine is saturated (500 calls keep
Python's one core busy): such turns are counted apart, and fail the soak only above
TIMEOUT_SHARE of all turns. Turn times go into 1 ms buckets, so the soak's own records do not
grow with the number of turns and the RSS figures are the client's.

    python tests/soak/soak.py [--calls 500] [--seconds 300] [--hang 30] [--json out.json]
                              [--language python|typescript|both]

The TypeScript half (tests/soak/soak.mjs) drives typescript/dist/index.js (`npm run build`) the
same way, after the Python half, against the same server.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

import faults  # noqa: E402

from brainline import CustomLLM, FallbackLLM  # noqa: E402

TIMEOUTS = frozenset({"read_timeout", "connect_timeout"})
TIMEOUT_SHARE = 0.01


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def start_server() -> tuple[subprocess.Popen[str], str, Path]:
    script = Path(tempfile.mkdtemp(prefix="brainline-soak-")) / "script.json"
    script.write_text(json.dumps(faults.script()), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python" / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "brainline.testing", "--port", "0", "--script", str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip(), script


def soak_typescript(origin: str, calls: int, seconds: float, hang: float) -> dict[str, Any]:
    config = {
        "origin": origin,
        "kinds": faults.KINDS,
        "outcome": faults.OUTCOME,
        "fallback_primary": faults.FALLBACK_PRIMARY,
        "fallback_outcome": faults.FALLBACK_OUTCOME,
        "hedge_after": faults.HEDGE_AFTER,
        "calls": calls,
        "seconds": seconds,
        "hang": hang,
        "entry": str(ROOT / "typescript" / "dist" / "index.js"),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(config, f)
    try:
        out = subprocess.run(
            ["node", str(ROOT / "tests" / "soak" / "soak.mjs"), f.name],
            check=True,
            capture_output=True,
            text=True,
            timeout=seconds + hang + 120,
        )
    finally:
        os.unlink(f.name)
    result: dict[str, Any] = json.loads(out.stdout)
    result.update(calls=calls, seconds=seconds)
    return result


async def soak(calls: int, seconds: float, hang: float, origin: str) -> dict[str, Any]:
    def endpoint(route: str) -> CustomLLM:
        return CustomLLM(base_url=f"{origin}/{route}/v1", model="m", timeout=10)

    llms: dict[str, CustomLLM | FallbackLLM] = {k: endpoint(k) for k in faults.KINDS}
    outcome = dict(faults.OUTCOME)
    for k in faults.KINDS:
        llms[f"fallback/{k}"] = FallbackLLM(
            [endpoint(faults.FALLBACK_PRIMARY[k]), endpoint(k)], hedge_after=faults.HEDGE_AFTER
        )
        outcome[f"fallback/{k}"] = faults.FALLBACK_OUTCOME[k]
    kinds = list(llms)
    codes: collections.Counter[str] = collections.Counter()
    wrong: collections.Counter[str] = collections.Counter()
    timeouts: collections.Counter[str] = collections.Counter()
    untyped: collections.Counter[str] = collections.Counter()
    # Turn times by kind: milliseconds (whole) -> count.
    durations: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    hangs = 0
    rss: list[tuple[float, float]] = []
    started = time.monotonic()
    end = started + seconds

    async def call(seed: int) -> None:
        nonlocal hangs
        rng = random.Random(seed)
        while time.monotonic() < end:
            kind = rng.choice(kinds)
            t0 = time.monotonic()
            try:
                got = await asyncio.wait_for(
                    faults.turn(llms[kind], kind.removeprefix("fallback/")), hang
                )
            except asyncio.TimeoutError:
                hangs += 1
                continue
            except Exception as exc:  # anything but a BrainlineError is a failure
                untyped[type(exc).__name__] += 1
                continue
            durations[kind][int((time.monotonic() - t0) * 1000)] += 1
            codes[got] += 1
            if got != outcome[kind]:
                (timeouts if got in TIMEOUTS else wrong)[f"{kind} -> {got}"] += 1

    async def sample() -> None:
        while time.monotonic() < end:
            rss.append((round(time.monotonic() - started, 1), round(rss_mb(), 1)))
            await asyncio.sleep(min(10, max(1, seconds / 30)))

    try:
        await asyncio.gather(sample(), *(call(i) for i in range(calls)))
        rss.append((round(time.monotonic() - started, 1), round(rss_mb(), 1)))
    finally:
        for llm in llms.values():
            await llm.aclose()

    def pct(histogram: collections.Counter[int], p: float) -> int:
        """The bucket (ms) below which a fraction p of the turns ended."""
        rank = int(p * sum(histogram.values()))
        seen = 0
        for ms in sorted(histogram):
            seen += histogram[ms]
            if seen > rank:
                return ms
        return 0

    every: collections.Counter[int] = sum(durations.values(), collections.Counter())
    return {
        "calls": calls,
        "seconds": seconds,
        "turns": sum(codes.values()),
        "outcomes": dict(codes.most_common()),
        "unexpected": dict(wrong.most_common()),
        "timeouts": dict(timeouts.most_common()),
        "untyped": dict(untyped),
        "hangs": hangs,
        "turn_ms": {"p50": pct(every, 0.5), "p99": pct(every, 0.99)},
        "turn_ms_by_kind": {
            k: {"p50": pct(v, 0.5), "p99": pct(v, 0.99), "n": sum(v.values())}
            for k, v in sorted(durations.items())
        },
        "rss_mb": rss,
        "rss_mb_median": statistics.median(r for _, r in rss) if rss else 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--hang", type=float, default=30)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--language", choices=["python", "typescript", "both"], default="both")
    args = parser.parse_args(argv)
    proc, url, script = start_server()
    origin = url.removesuffix("/v1")
    results = {}
    try:
        if args.language in ("python", "both"):
            results["python"] = asyncio.run(soak(args.calls, args.seconds, args.hang, origin))
        if args.language in ("typescript", "both"):
            results["typescript"] = soak_typescript(origin, args.calls, args.seconds, args.hang)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the server's way to stop cleanly: end of stdin
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(10)
        script.unlink()
        script.parent.rmdir()
    ok = True
    for language, result in results.items():
        ok = report(language, args, result) and ok
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print("soak: OK" if ok else "soak: FAILED")
    return 0 if ok else 1


def report(language: str, args: argparse.Namespace, result: dict[str, Any]) -> bool:
    print(f"== {language}")
    print(f"{result['turns']} turns, {args.calls} concurrent calls, {args.seconds:g} s")
    print(f"outcomes: {result['outcomes']}")
    print(f"turn time p50 {result['turn_ms']['p50']} ms, p99 {result['turn_ms']['p99']} ms")
    for kind, stats in result["turn_ms_by_kind"].items():
        print(f"  {kind:23} n={stats['n']:7} p50={stats['p50']:8} ms p99={stats['p99']:8} ms")
    print(f"RSS MB over time (s, MB): {result['rss_mb']}")
    print(f"untyped errors: {result['untyped']}, hangs: {result['hangs']}")
    print(f"unexpected outcomes: {result['unexpected']}")
    timed_out = sum(result["timeouts"].values())
    share = timed_out / max(result["turns"], 1)
    print(
        f"typed timeouts under load: {timed_out} ({share:.3%}, at most {TIMEOUT_SHARE:.0%}) "
        f"{result['timeouts']}"
    )
    return (
        not result["untyped"]
        and not result["hangs"]
        and not result["unexpected"]
        and share <= TIMEOUT_SHARE
    )


if __name__ == "__main__":
    sys.exit(main())
