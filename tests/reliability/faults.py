"""The fault mix shared by the leak test and the soak session: MockServer routes, one per kind.

Each kind is one response (repeated forever on its route `/<kind>/`), the way a turn may go: a
normal turn, a barge-in before the headers, mid-stream or during a stall, a dropped or reset
connection, an HTTP error, an error inside the stream. `OUTCOME` is how each turn must end.
typescript/test/reliability/leak.test.ts uses the same table (kept in step by hand: it is small).
"""

from __future__ import annotations

from typing import Any

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


def script() -> dict[str, Any]:
    return {"routes": {f"/{kind}/": response for kind, response in KINDS.items()}}
