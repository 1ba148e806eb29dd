"""The per-turn metrics record and `on_metrics`; typescript/src/core/metrics.ts mirrors it.

Every turn, finished, failed or cancelled, gives one record: a plain dict with the same keys in
both languages (METRICS_KEYS). Times are milliseconds from the start of the turn, None when the
moment never came. A finished turn's record also rides on its finish event as `metrics`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypedDict

from .._generated.constants import REQUEST_ID_HEADERS
from .log import logger, outcome_line

if TYPE_CHECKING:
    from .telemetry import TurnTrace

__all__ = [
    "METRICS_KEYS",
    "TurnMeter",
    "TurnMetrics",
    "deliver",
    "error_code_of",
    "request_id_of",
]


class TurnMetrics(TypedDict):
    """One turn's metrics record (`on_metrics`, and `metrics` on the finish event)."""

    provider: str
    model: str
    endpoint: int
    request_id: str | None
    attempts: int
    headers_ms: float | None
    first_progress_ms: float | None
    first_text_ms: float | None
    duration_ms: float
    chunks: int
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    finish_reason: str | None
    error_code: str | None
    cancelled: bool


METRICS_KEYS = tuple(TurnMetrics.__annotations__)


_REQUEST_ID_HEADERS = tuple(REQUEST_ID_HEADERS.split(","))


def request_id_of(headers: Mapping[str, str]) -> str | None:
    """The request id an answer's headers carry (REQUEST_ID_HEADERS, first found), else None."""
    for name in _REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return None


def _ms(at: float | None, start: float) -> float | None:
    return None if at is None else round((at - start) * 1000, 3)


class TurnMeter:
    """The moments and counts of one turn, turned into its record once, when the turn ends.

    The runtime notes what happens (`answered`, `progressed`, `chunks`, `attempts`); `finish`
    builds and delivers the record. Costs a clock read per moment, never per event.
    """

    __slots__ = (
        "attempts",
        "callback",
        "chunks",
        "endpoint",
        "headers_at",
        "model",
        "progress_at",
        "provider",
        "record",
        "request_id",
        "start",
        "text_at",
        "trace",
    )

    def __init__(
        self,
        provider: str,
        model: str,
        callback: Callable[[TurnMetrics], object] | None,
        endpoint: int = 0,
    ) -> None:
        self.start = time.monotonic()
        self.provider = provider
        self.model = model
        self.callback = callback
        self.endpoint = endpoint
        self.attempts = 0
        self.chunks = 0
        self.headers_at: float | None = None
        self.progress_at: float | None = None
        self.text_at: float | None = None
        self.request_id: str | None = None
        self.record: TurnMetrics | None = None
        self.trace: TurnTrace | None = None  # OpenTelemetry (telemetry.py), when on

    def answered(self, headers: Mapping[str, str]) -> None:
        """An attempt's response headers arrived (any status)."""
        self.headers_at = time.monotonic()
        self.request_id = request_id_of(headers)

    def progressed(self, events: Sequence[Mapping[str, object]]) -> None:
        """A chunk made progress; called until the first text has come."""
        now = time.monotonic()
        if self.progress_at is None:
            self.progress_at = now
        if any(event["type"] == "text" for event in events):
            self.text_at = now

    def finish(
        self,
        *,
        usage: tuple[int, int, int] | None = None,
        finish_reason: str | None = None,
        error_code: str | None = None,
        cancelled: bool = False,
    ) -> TurnMetrics:
        """The record (built once: later calls return the first), delivered to on_metrics."""
        if self.record is not None:
            return self.record
        start = self.start
        record: TurnMetrics = {
            "provider": self.provider,
            "model": self.model,
            "endpoint": self.endpoint,
            "request_id": self.request_id,
            "attempts": self.attempts,
            "headers_ms": _ms(self.headers_at, start),
            "first_progress_ms": _ms(self.progress_at, start),
            "first_text_ms": _ms(self.text_at, start),
            "duration_ms": round((time.monotonic() - start) * 1000, 3),
            "chunks": self.chunks,
            "input_tokens": None if usage is None else usage[0],
            "output_tokens": None if usage is None else usage[1],
            "cache_read_tokens": None if usage is None else usage[2],
            "finish_reason": finish_reason,
            "error_code": error_code,
            "cancelled": cancelled,
        }
        self.record = record
        if self.trace is not None:
            self.trace.end(record)
        if logger.isEnabledFor(logging.INFO):
            logger.info(outcome_line(record))
        deliver(self.callback, record)
        return record


def deliver(callback: Callable[[TurnMetrics], object] | None, record: TurnMetrics) -> None:
    """Hand a record to on_metrics: a callback that raises is logged, never breaks the turn."""
    if callback is None:
        return
    try:
        callback(record)
    except Exception as exc:
        logger.warning("on_metrics raised %s; the turn goes on", type(exc).__name__)


def error_code_of(exc: BaseException) -> str:
    """What a record says a turn failed with: the brainline code, else the exception's class."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else type(exc).__name__
