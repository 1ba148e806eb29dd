"""The fault mix shared by the leak test and the soak session: MockServer routes, one per kind.

Each kind is one response (repeated forever on its route `/<kind>/`), the way a turn may go: a
normal turn, a barge-in before the headers, mid-stream or during a stall, a dropped or reset
connection, an HTTP error, an error inside the stream. `OUTCOME` is how each turn must end.
typescript/test/reliability/leak.test.ts uses the same table (kept in step by hand: it is small).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from brainline import BaseLLM, BrainlineError, FallbackLLM

MESSAGES = [{"role": "user", "content": "hi"}]

KINDS: dict[str, dict[str, Any]] = {
    "ok": {"text": ["Hel", "lo", "!"], "usage": {"prompt_tokens": 3, "completion_tokens": 3}},
    "json": {"text": ["whole"], "stream": False},
    "barge_headers": {"text": ["x"], "delay_before_headers_ms": 300},
    "barge_mid": {"text": ["a"] * 20, "delay_ms": 2},
    "barge_stall": {"text": ["a", "b"], "stall": 1},
    "drop": {"text": ["a", "b", "c"], "drop_after": 1},
    "reset": {"text": ["a", "b", "c"], "drop_after": 1, "drop_reset": True},
    "http_500": {"status": 500, "json": {"error": {"message": "boom"}}},
    "stream_error": {"sse": [{"data": {"error": {"message": "boom"}}}]},
}

# "finish": ends with a finish event; "cancelled": ends quietly without one; else the error code.
OUTCOME = {
    "ok": "finish",
    "json": "finish",
    "barge_headers": "cancelled",
    "barge_mid": "cancelled",
    "barge_stall": "cancelled",
    "drop": "interrupted",
    "reset": "interrupted",
    "http_500": "http_status",
    "stream_error": "server_error",
}


# FallbackLLM with hedging (the leak test and the soak): a primary that never answers ("silent",
# closed when the backup wins) with the kind's route as the backup the hedge timer starts after
# HEDGE_AFTER; for the kinds that fail before their first event, a primary that answers after
# 100 ms ("slow") instead, so that the turn still finishes.
FALLBACK_PRIMARY = {
    kind: "slow" if kind in ("http_500", "stream_error") else "silent" for kind in KINDS
}
HEDGE_AFTER = 0.01
FALLBACK_OUTCOME = {**OUTCOME, "http_500": "finish", "stream_error": "finish"}


def script() -> dict[str, Any]:
    routes = {f"/{kind}/": response for kind, response in KINDS.items()}
    routes["/silent/"] = {"text": ["never"], "stall": "headers"}
    routes["/slow/"] = {"text": ["slow"], "delay_before_headers_ms": 100}
    return {"routes": routes}


async def turn(
    llm: BaseLLM | FallbackLLM,
    kind: str,
    *,
    call_id: str | None = None,
    before_headers: Callable[[asyncio.Event], Awaitable[None]] | None = None,
) -> str:
    """One turn on the route of `kind`: "finish", "cancelled" or the error code it ended with.

    The barge-in kinds set the turn's cancel event: after the second event (mid), 5 ms into the
    stall after the first event, or before the headers: `before_headers(cancel)` when given,
    else 5 ms after the start.
    """
    loop = asyncio.get_running_loop()
    cancel = asyncio.Event()
    timer = None
    barge = None
    if kind == "barge_headers":
        if before_headers is None:
            timer = loop.call_later(0.005, cancel.set)
        else:
            barge = asyncio.ensure_future(before_headers(cancel))
    events = 0
    finished = False
    try:
        async for event in llm.stream(MESSAGES, cancel_event=cancel, call_id=call_id):
            events += 1
            finished = event["type"] == "finish"
            if kind == "barge_mid" and events == 2:
                cancel.set()
            elif kind == "barge_stall" and events == 1:
                timer = loop.call_later(0.005, cancel.set)
    except BrainlineError as exc:
        return exc.code
    finally:
        if timer is not None:
            timer.cancel()
        if barge is not None:
            barge.cancel()
    return "finish" if finished else "cancelled"
