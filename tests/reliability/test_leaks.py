"""Leak test: thousands of turns with barge-ins, drops and errors leave nothing behind.

Turns run on 4 concurrent workers against one MockServer, each turn of a random kind
(tests/reliability/faults.py), each ending exactly as its kind says. Afterwards: the server sees no
more open connections than the clients' keep-alive pools hold, and none once they are closed; no
asyncio task is left; memory traced after a warm-up grows by less than MEMORY_BOUND.
BRAINLINE_LEAK_TURNS sets the number of turns (default TURNS).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import gc
import os
import random
import sys
import time
from pathlib import Path

from brainline import CustomLLM, FallbackLLM
from brainline.testing import MockServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

import faults

TURNS = int(os.environ.get("BRAINLINE_LEAK_TURNS", "10000"))
WORKERS = 4
WARMUP = 300
OBJECT_SLACK = 64  # objects of one type that may be added between the warm-up and the end


async def _when_received(server: MockServer, call_id: str, cancel: asyncio.Event) -> None:
    """Barge in once the server holds the request (it answers 300 ms later): before the headers.

    Every other barge-in before the headers uses faults.turn's 5 ms timer instead, which often
    lands while the connection is being made (test_barge_in_during_connect_leaves_no_connection
    does only that).
    """
    while not any(r.header("x-turn") == call_id for r in server.requests[-64:]):  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    cancel.set()


def _census() -> collections.Counter[str]:
    """Live objects by type after a full collection, leaving out the server's records."""
    gc.collect()
    # f-strings, not .startswith on __module__: for some types it is a descriptor, not a str
    names = (f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())
    return collections.Counter(n for n in names if not n.startswith("brainline.testing"))


def _open_connections(server: MockServer) -> str:
    """Open connections by the route of their last request (None: no request on it yet)."""
    last = {r.connection: r.route for r in server.requests}
    open_ = [last.get(c.id) for c in server.connections if c.closed_at is None]
    return f"{len(open_)} open: {collections.Counter(open_).most_common()}"


async def test_turns_with_faults_leak_nothing() -> None:
    rng = random.Random(8)
    kinds = list(faults.KINDS)
    server = MockServer(faults.script())
    url = await server.start()
    origin = url.removesuffix("/v1")
    llms = {
        k: CustomLLM(
            base_url=f"{origin}/{k}/v1",
            model="m",
            max_retries=0,
            timeout=5,
            session_id_header="X-Turn",
        )
        for k in kinds
    }
    plan = [rng.choice(kinds) for _ in range(TURNS)]
    outcomes: collections.Counter[str] = collections.Counter()
    wrong: list[tuple[str, str]] = []
    baseline_tasks = {t for t in asyncio.all_tasks()}

    async def run(turns: list[tuple[int, str]]) -> None:
        queue = iter(turns)

        async def worker() -> None:
            for index, kind in queue:
                call_id = f"t{index}"
                got = await faults.turn(
                    llms[kind],
                    kind,
                    call_id=call_id,
                    before_headers=(
                        functools.partial(_when_received, server, call_id) if index % 2 else None
                    ),
                )
                outcomes[got] += 1
                if got != faults.OUTCOME[kind]:
                    wrong.append((kind, got))

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(WORKERS))), 120)
        # Pools: at most one keep-alive connection per concurrent turn, per client.
        assert await server.wait_for_async(
            lambda: server.connections_open <= WORKERS * len(llms), timeout=5
        ), _open_connections(server)
        server.reset()  # the server's records of the requests (open connections stay)

    started = time.monotonic()
    try:
        await run(list(enumerate(plan))[:WARMUP])
        before = _census()
        await run(list(enumerate(plan))[WARMUP:])
        elapsed = time.monotonic() - started
        after = _census()
        for llm in llms.values():
            await llm.aclose()
        assert await server.wait_for_async(lambda: server.connections_open == 0, timeout=5), (
            f"after aclose(): {_open_connections(server)}"
        )
    finally:
        for llm in llms.values():
            await llm.aclose()
        await server.stop()
    grown = {k: after[k] - before[k] for k in after if after[k] - before[k] > OBJECT_SLACK}
    leftover = [t for t in asyncio.all_tasks() if t not in baseline_tasks and not t.done()]
    assert leftover == [], leftover
    assert wrong == [], collections.Counter(wrong).most_common(5)
    assert sum(outcomes.values()) == TURNS
    assert all(outcomes[o] > 0 for o in set(faults.OUTCOME.values())), outcomes
    # No kind of object piles up turn after turn (the server's own records aside).
    assert grown == {}, f"objects grown after {TURNS} turns: {grown}"
    print(f"\n{TURNS} turns in {elapsed:.1f} s, {dict(outcomes)}, objects {sum(after.values())}")


async def test_barge_in_during_connect_leaves_no_connection() -> None:
    """Barge-ins 0-4 ms into a turn, many while the connection is being made, on 8 workers.

    httpcore leaves a connection made for a request cancelled before it went out in its pool for
    ever (encode/httpcore#1093: 60 to 80 of these 800 turns); brainline closes them.
    """
    server = MockServer(faults.script())
    url = await server.start()
    llm = CustomLLM(
        base_url=url.removesuffix("/v1") + "/barge_headers/v1", model="m", max_retries=0, timeout=5
    )
    rng = random.Random(1)

    async def worker() -> None:
        for _ in range(100):
            cancel = asyncio.Event()
            asyncio.get_running_loop().call_later(rng.random() * 0.004, cancel.set)
            async for _ in llm.stream(faults.MESSAGES, cancel_event=cancel):
                pass

    try:
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(8))), 60)
        # Connections that never carried a request, still open (60 to 80 of 800 without the fix).
        with_request = {r.connection for r in server.requests}
        assert await server.wait_for_async(
            lambda: (
                not [
                    c
                    for c in server.connections
                    if c.closed_at is None and c.id not in with_request
                ]
            ),
            timeout=2,
        ), _open_connections(server)
    finally:
        await llm.aclose()
        await server.stop()


async def test_fallback_with_hedging_leaks_nothing() -> None:
    """FallbackLLM with hedging over the same faults: a primary that does not answer in time
    (faults.FALLBACK_PRIMARY) and the kind's route as the backup the hedge timer starts. Every
    turn ends as faults.FALLBACK_OUTCOME says; afterwards no task is left, no connection beyond
    the pools, none after aclose(), and no kind of object piles up."""
    rng = random.Random(13)
    kinds = list(faults.KINDS)
    turns = max(TURNS // 5, 2 * WARMUP)
    server = MockServer(faults.script())
    url = await server.start()
    origin = url.removesuffix("/v1")

    def endpoint(route: str) -> CustomLLM:
        return CustomLLM(base_url=f"{origin}/{route}/v1", model="m", max_retries=0, timeout=5)

    llms = {
        k: FallbackLLM(
            [endpoint(faults.FALLBACK_PRIMARY[k]), endpoint(k)], hedge_after=faults.HEDGE_AFTER
        )
        for k in kinds
    }
    plan = [rng.choice(kinds) for _ in range(turns)]
    outcomes: collections.Counter[str] = collections.Counter()
    wrong: list[tuple[str, str]] = []
    baseline_tasks = set(asyncio.all_tasks())

    async def run(part: list[str]) -> None:
        queue = iter(part)

        async def worker() -> None:
            for kind in queue:
                got = await faults.turn(llms[kind], kind)
                outcomes[got] += 1
                if got != faults.FALLBACK_OUTCOME[kind]:
                    wrong.append((kind, got))

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(WORKERS))), 120)
        # Two pools per FallbackLLM: at most one keep-alive connection per concurrent turn each.
        assert await server.wait_for_async(
            lambda: server.connections_open <= 2 * WORKERS * len(llms), timeout=5
        ), _open_connections(server)
        server.reset()

    started = time.monotonic()
    try:
        await run(plan[:WARMUP])
        before = _census()
        await run(plan[WARMUP:])
        elapsed = time.monotonic() - started
        after = _census()
        # Before aclose(): no attempt, watcher or sweep task of a finished turn (the server's
        # own connection handlers aside).
        leftover = [
            t
            for t in asyncio.all_tasks()
            if t not in baseline_tasks
            and not t.done()
            and not getattr(t.get_coro(), "__qualname__", "").startswith("MockServer.")
        ]
        for llm in llms.values():
            await llm.aclose()
        assert await server.wait_for_async(lambda: server.connections_open == 0, timeout=5), (
            f"after aclose(): {_open_connections(server)}"
        )
    finally:
        for llm in llms.values():
            await llm.aclose()
        await server.stop()
    grown = {k: after[k] - before[k] for k in after if after[k] - before[k] > OBJECT_SLACK}
    assert leftover == [], leftover
    assert wrong == [], collections.Counter(wrong).most_common(5)
    assert sum(outcomes.values()) == turns
    assert all(outcomes[o] > 0 for o in set(faults.FALLBACK_OUTCOME.values())), outcomes
    assert grown == {}, f"objects grown after {turns} turns: {grown}"
    print(f"\n{turns} FallbackLLM turns in {elapsed:.1f} s, {dict(outcomes)}")
