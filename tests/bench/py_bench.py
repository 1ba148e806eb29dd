"""The Python side of `nox -s bench`: every candidate client, every figure, against the bench server.

Each candidate's turn is the library's own async iterator, iterated by the bench directly (a
user's `async for` loop and nothing more); the baseline's iterator is a plain generator over
aiter_lines + json.loads. Each candidate gets one client per scenario, built once and reused; each
measured turn must run on a connection the client already had (checked against the server's count).

Run by tests/bench/run.py; `python tests/bench/py_bench.py concurrent NAME PORT` is the fresh
process that measures one candidate's 500 concurrent turns (wall, turn p50/p99, peak RSS per turn).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

MESSAGES = [{"role": "user", "content": "Say something."}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look something up.",
            "parameters": {"type": "object", "properties": {"k": {"type": "string"}}},
        },
    }
]


@dataclass(frozen=True)
class Turn:
    """One candidate's turn on one client: `open(cancel, tools)` gives the library's own async
    iterator (or an awaitable of it) and `chars(item)` the text and tool-argument characters an
    item carries. The bench iterates the library's iterator itself, with no adapter generator in
    between: a user's `async for` loop is all a library's figures include."""

    open: Callable[..., Any]
    chars: Callable[[Any], int]


def _event_chars(event: dict[str, Any]) -> int:
    """brainline and getpatter events."""
    kind = event["type"]
    if kind == "text":
        return len(event["content"])
    if kind == "tool_call":
        return len(event["arguments"] or "")
    return 0


def _chunk_chars(chunk: Any) -> int:
    """openai-python and litellm chunk objects."""
    if not chunk.choices:
        return 0
    delta = chunk.choices[0].delta
    size = len(delta.content or "")
    for call in delta.tool_calls or ():
        if call.function is not None:
            size += len(call.function.arguments or "")
    return size


class Candidate:
    """One client library: `make(base_url)` builds a Turn bound to one client."""

    name = ""
    cancel_by_event = False  # True: the client takes a cancel event; else the task is cancelled

    def __init__(self, root: str) -> None:
        self.root = root
        self.turns: dict[str, Turn] = {}
        self.closers: list[Callable[[], Awaitable[Any]]] = []

    def turn(self, scenario: str) -> Turn:
        if scenario not in self.turns:
            self.turns[scenario] = self.make(f"{self.root}/{scenario}")
        return self.turns[scenario]

    def make(self, base_url: str) -> Turn:
        raise NotImplementedError

    async def close(self) -> None:
        for closer in self.closers:
            with contextlib.suppress(Exception):
                await closer()


class RawHttpx(Candidate):
    """The baseline: client.stream + aiter_lines + json.loads, reading past [DONE] to the end."""

    name = "raw httpx"

    def make(self, base_url: str) -> Turn:
        client = httpx.AsyncClient(timeout=60)
        self.closers.append(client.aclose)
        url = base_url + "/chat/completions"
        headers = {"content-type": "application/json", "accept": "text/event-stream"}

        async def turn(cancel: asyncio.Event | None, tools: bool = False) -> AsyncIterator[str]:
            body: dict[str, Any] = {
                "model": "bench",
                "messages": MESSAGES,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            if tools:
                body["tools"] = TOOLS
            content = json.dumps(body).encode()
            async with client.stream("POST", url, content=content, headers=headers) as response:
                lines = response.aiter_lines()
                async for line in lines:
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    choices = chunk.get("choices")
                    if not choices:
                        continue
                    delta = choices[0].get("delta") or {}
                    text = delta.get("content")
                    if text:
                        yield text
                    for call in delta.get("tool_calls") or ():
                        args = (call.get("function") or {}).get("arguments")
                        if args:
                            yield args
                async for _ in lines:  # to the end, so the connection is reused
                    pass

        return Turn(turn, len)


class Brainline(Candidate):
    name = "brainline"
    cancel_by_event = True

    def make(self, base_url: str) -> Turn:
        from brainline import OpenAICompatibleLLM

        llm = OpenAICompatibleLLM(base_url=base_url, model="bench")
        self.closers.append(llm.aclose)

        def turn(cancel: asyncio.Event | None, tools: bool = False) -> Any:
            return llm.stream(MESSAGES, TOOLS if tools else None, cancel_event=cancel)

        return Turn(turn, _event_chars)


class OpenAIPython(Candidate):
    name = "openai-python"

    def make(self, base_url: str) -> Turn:
        from openai import AsyncOpenAI

        client = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
        self.closers.append(client.close)

        def turn(cancel: asyncio.Event | None, tools: bool = False) -> Any:
            extra: dict[str, Any] = {"tools": TOOLS} if tools else {}
            return client.chat.completions.create(
                model="bench",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
                **extra,
            )

        return Turn(turn, _chunk_chars)


def patter_llm(base_url: str, model: str) -> Any:
    """getpatter 0.7.0's Custom LLM. openai-python 3.x is built on httpx2 and refuses the
    httpx.Timeout getpatter passes it: give it httpx2's Timeout (same values), nothing else
    changes (tail.py builds its FallbackLLMProvider endpoints with this too)."""
    import importlib.util

    from getpatter.llm.custom import LLM

    if importlib.util.find_spec("httpx2") is None:
        return LLM(base_url=base_url, model=model)
    import httpx
    import httpx2

    original = httpx.Timeout
    httpx.Timeout = httpx2.Timeout  # type: ignore[misc]
    try:
        return LLM(base_url=base_url, model=model)
    finally:
        httpx.Timeout = original  # type: ignore[misc]


class Getpatter(Candidate):
    """The reference Custom LLM (getpatter.llm.custom.LLM, on openai-python)."""

    name = "getpatter"
    cancel_by_event = True

    def make(self, base_url: str) -> Turn:
        llm = patter_llm(base_url, "bench")

        def turn(cancel: asyncio.Event | None, tools: bool = False) -> Any:
            return llm.stream(MESSAGES, TOOLS if tools else None, cancel_event=cancel)

        return Turn(turn, _event_chars)


class LiteLLM(Candidate):
    name = "litellm"

    def make(self, base_url: str) -> Turn:
        import litellm

        def turn(cancel: asyncio.Event | None, tools: bool = False) -> Any:
            extra: dict[str, Any] = {"tools": TOOLS} if tools else {}
            return litellm.acompletion(
                model="openai/bench",
                api_base=base_url,
                api_key="bench",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
                max_retries=0,
                **extra,
            )

        return Turn(turn, _chunk_chars)


ALL: dict[str, type[Candidate]] = {
    c.name: c for c in (RawHttpx, Brainline, OpenAIPython, Getpatter, LiteLLM)
}


def available(names: list[str]) -> list[str]:
    """The candidates whose packages import here (getpatter and litellm are optional)."""
    modules = {"openai-python": "openai", "getpatter": "getpatter", "litellm": "litellm"}
    found = []
    for name in names:
        module = modules.get(name)
        if module is not None:
            try:
                __import__(module)
            except ImportError:
                continue
        found.append(name)
    return found


# -- figures -------------------------------------------------------------------------------------


async def items(turn: Turn, cancel: asyncio.Event | None = None, **kwargs: Any) -> Any:
    """The library's own iterator for one turn (awaiting the call first where it is a coroutine)."""
    it = turn.open(cancel, **kwargs)
    return await it if inspect.isawaitable(it) else it


async def drain(turn: Turn, **kwargs: Any) -> int:
    size = 0
    chars = turn.chars
    async for item in await items(turn, **kwargs):
        size += chars(item)
    return size


async def time_turns(turn: Turn, count: int, **kwargs: Any) -> tuple[float, int]:
    """Mean seconds per turn over `count` sequential turns, and the size of the last one."""
    start = time.perf_counter()
    size = 0
    for _ in range(count):
        size = await drain(turn, **kwargs)
    return (time.perf_counter() - start) / count, size


async def time_to_first(turn: Turn, count: int) -> float:
    """Median seconds from the call to the first text piece (each turn read to its end)."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        first = None
        async for item in await items(turn):
            if first is None and turn.chars(item):
                first = time.perf_counter() - start
        assert first is not None
        samples.append(first)
    return statistics.median(samples)


class Control:
    """Talks to the server's /stats and /reset on its own connection."""

    def __init__(self, root: str) -> None:
        self.client = httpx.AsyncClient(timeout=10)
        self.root = root

    async def stats(self) -> dict[str, Any]:
        response = await self.client.get(self.root + "/stats")
        data: dict[str, Any] = response.json()
        return data

    async def reset(self) -> None:
        await self.client.post(self.root + "/reset")

    async def keep_warm(self, turn: Turn) -> None:
        """One small unmeasured turn on the candidate's connection (see server.py: /next)."""
        await self.client.post(self.root + "/next/burst/1")
        await drain(turn)


async def cancel_once(candidate: Candidate, scenario: str, control: Control) -> tuple[float, float]:
    """Cancel one stalled turn: (seconds to the iterator's return, seconds to the server's close)."""
    turn = candidate.turn(scenario)
    event = asyncio.Event()
    started = asyncio.Event()

    async def consume() -> None:
        cancel = event if candidate.cancel_by_event else None
        async for item in await items(turn, cancel):
            if turn.chars(item):
                started.set()

    closes_before = len((await control.stats())["closes"])
    task = asyncio.ensure_future(consume())
    if scenario.startswith("stallmid"):
        await asyncio.wait_for(started.wait(), 10)
    else:
        for _ in range(1000):  # until the server holds the request (no headers will come)
            if (await control.stats())["stalled"]:
                break
            await asyncio.sleep(0.002)
    t0 = time.monotonic_ns()
    if candidate.cancel_by_event:
        event.set()
    else:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    returned = time.monotonic_ns() - t0
    closed = None
    for _ in range(200):
        closes = (await control.stats())["closes"]
        if len(closes) > closes_before:
            closed = closes[-1] - t0
            break
        await asyncio.sleep(0.005)
    if closed is None:
        raise AssertionError(f"{candidate.name}: the server never saw the close ({scenario})")
    return returned / 1e9, closed / 1e9


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


async def sequential_figures(
    root: str, names: list[str], rounds: int, quick: bool, log: Callable[[str], None]
) -> dict[str, Any]:
    """Throughput, one-chunk turn, time to first text, tool call: interleaved rounds."""
    control = Control(root)
    candidates = [ALL[name](root) for name in names]
    n_big = 2_000 if quick else 20_000
    figures: list[tuple[str, str, Callable[[Turn], Awaitable[float]], int]] = [
        (
            "throughput",
            f"burst/{n_big}",
            lambda t: time_turns(t, 1),  # type: ignore[arg-type,return-value]
            n_big * 5,
        ),
        ("one_chunk", "burst/1", lambda t: time_turns(t, 50), 5),  # type: ignore[arg-type,return-value]
        ("first_text", "drip/50", lambda t: time_to_first(t, 10), 0),
        ("tool_call", "tools/2000", lambda t: time_turns(t, 1, tools=True), 2000 + 6),  # type: ignore[arg-type,return-value]
    ]
    results: dict[str, Any] = {}
    for figure, scenario, measure, size in figures:
        samples: dict[str, list[float]] = {c.name: [] for c in candidates}
        for c in candidates:  # warm: open the connection, fill caches
            await drain(c.turn(scenario), **({"tools": True} if figure == "tool_call" else {}))
        # The short figures take more rounds: one busy moment on the shared machine moves a
        # median of five.
        for r in range(rounds if figure == "throughput" else 3 * rounds):
            order = candidates[r % len(candidates) :] + candidates[: r % len(candidates)]
            for c in order:
                # A small unmeasured turn first: it may have to reconnect (a slower candidate's
                # turn can outlast a client's keep-alive expiry), the measured one may not.
                await control.keep_warm(c.turn(scenario))
                before = (await control.stats())["connections"]
                value = await measure(c.turn(scenario))
                if (await control.stats())["connections"] != before:
                    raise AssertionError(
                        f"{c.name} {figure}: opened a new connection (did not reuse its own)"
                    )
                if isinstance(value, tuple):
                    value, got = value
                    if size and got != size:
                        raise AssertionError(f"{c.name} {figure}: got {got} chars, want {size}")
                samples[c.name].append(value)
        results[figure] = {name: summary(v) for name, v in samples.items()}
        log(
            f"  py {figure}: "
            + ", ".join(f"{n} {v['median'] * 1e3:.3f} ms" for n, v in results[figure].items())
        )
    for figure, scenario in (("cancel_head", "stallhead/0"), ("cancel_mid", "stallmid/0")):
        out: dict[str, Any] = {}
        for c in candidates:
            returned, closed = [], []
            for _ in range(10 if quick else 100):
                a, b = await cancel_once(c, scenario, control)
                returned.append(a)
                closed.append(b)
            out[c.name] = {
                "returned_p50": statistics.median(returned),
                "returned_p99": p99(returned),
                "closed_p50": statistics.median(closed),
                "closed_p99": p99(closed),
            }
        results[figure] = out
        log(
            f"  py {figure}: "
            + ", ".join(
                f"{n} {v['returned_p99'] * 1e3:.2f}/{v['closed_p99'] * 1e3:.2f} ms"
                for n, v in out.items()
            )
        )
    for c in candidates:
        await c.close()
    await control.client.aclose()
    return results


# -- 500 concurrent turns, in a fresh process per candidate ---------------------------------------


def status_kib(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process, in KiB. Unlike ru_maxrss, VmHWM starts anew
    at exec, so a child forked from the big bench process does not inherit its peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


async def concurrent(name: str, root: str, turns: int, chunks: int) -> dict[str, float]:
    candidate = ALL[name](root)
    turn = candidate.turn(f"burst/{chunks}")
    await drain(turn)
    base = status_kib("VmRSS")
    durations: list[float] = []

    async def one() -> None:
        start = time.perf_counter()
        size = await drain(turn)
        durations.append(time.perf_counter() - start)
        assert size == chunks * 5, size

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(turns)))
    wall = time.perf_counter() - start
    peak = status_kib("VmHWM")
    await candidate.close()
    return {
        "wall": wall,
        "p50": statistics.median(durations),
        "p99": p99(durations),
        "kib_per_turn": max(0, peak - base) / turns,
    }


if __name__ == "__main__":
    if sys.argv[1] == "concurrent":
        _, _, cname, port, nturns, nchunks = sys.argv
        out = asyncio.run(concurrent(cname, f"http://127.0.0.1:{port}", int(nturns), int(nchunks)))
        print(json.dumps(out))
