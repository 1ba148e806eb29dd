"""FallbackLLM: failover and hedged requests across endpoints; typescript/src/core/fallback.ts mirrors it.

Each attempt is one endpoint's own public stream(), run by a task of its own with its own cancel
event (brainline's barge-in, which closes that attempt's connection at once). An attempt runs until
its first progress event (text, a tool call or reasoning), a clean end, or an error; the first to
get there decides the turn. The winner's generator is then driven by the caller's own task, so the
answer streams with no task in between. docs/runtime.md ("FallbackLLM") is the contract.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, cast

from .._generated.fallback import FallbackConfig, build_fallback_config
from .client import BaseLLM, _check_call_arguments
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    BrainlineError,
    make_error,
)
from .events import (
    Event,
    RouteEvent,
    RouteFailure,
    RouteReason,
    Turn,
    collect_turn,
)
from .metrics import TurnMetrics, deliver, error_code_of

if TYPE_CHECKING:
    import asyncio
else:
    from .client import asyncio  # loaded on first use, as in client.py

__all__ = ["FallbackLLM"]

_PROGRESS = frozenset({"text", "tool_call", "reasoning"})
_DEFAULTS = FallbackConfig()


def _cools_down(error: BrainlineError) -> bool:
    """A failure that says the endpoint is down or overloaded: a connection error, a timeout,
    HTTP 429 or 5xx."""
    if isinstance(error, (APIConnectionError, APITimeoutError)):
        return True
    return isinstance(error, APIStatusError) and (error.status == 429 or error.status >= 500)


class _Attempt:
    """One endpoint's try at the turn: its stream, its cancel event, what it yielded so far."""

    __slots__ = (
        "cancelled",
        "done",
        "endpoint",
        "events",
        "held",
        "reason",
        "record",
        "reported",
        "started",
        "stop",
        "task",
    )

    def __init__(self, endpoint: int, reason: RouteReason) -> None:
        self.started = time.monotonic()
        self.record: TurnMetrics | None = None  # the endpoint's own, once its stream ended
        self.endpoint = endpoint
        self.reason: RouteReason = reason
        self.stop = asyncio.Event()
        self.held: list[Event] = []  # events up to and including the first progress event
        self.done = False  # the stream ended (a clean end, or quietly when cancelled)
        self.cancelled = False  # lost the race, or the turn ended: its report does not count
        self.reported = False  # the race has read its report
        self.events: AsyncGenerator[Event, None] | None = None
        self.task: asyncio.Task[None] | None = None


# What an attempt's task (or the hedge timer, or the barge-in) tells the race.
_Message = tuple[str, "_Attempt | None", "BaseException | None"]


class _Race:
    """The attempts of one turn, until one wins, and their clean-up."""

    def __init__(
        self,
        owner: FallbackLLM,
        order: list[int],
        call: dict[str, Any],
        cancel_event: asyncio.Event | None,
    ) -> None:
        self.owner = owner
        self.started = time.monotonic()
        self.order = order  # endpoints not cooling down, in the given order
        self.call = call
        self.cancel_event = cancel_event
        self.next = 0  # position in order of the next endpoint to start
        self.attempts: list[_Attempt] = []
        self.failures: list[tuple[_Attempt, BrainlineError]] = []
        self.hedged = False
        self.inbox: asyncio.Queue[_Message] = asyncio.Queue()
        self.hedge_timer: asyncio.TimerHandle | None = None
        self.watcher: asyncio.Task[None] | None = None
        if cancel_event is not None:
            self.watcher = asyncio.ensure_future(self._watch(cancel_event))

    async def _watch(self, cancel_event: asyncio.Event) -> None:
        await cancel_event.wait()
        for attempt in self.attempts:
            attempt.stop.set()
        self.inbox.put_nowait(("cancel", None, None))

    def start(self, reason: RouteReason) -> None:
        """Start the next endpoint's attempt; the last one left keeps its own retries."""
        position = self.next
        self.next += 1
        attempt = _Attempt(self.order[position], reason)
        if self.cancel_event is not None and self.cancel_event.is_set():
            attempt.stop.set()
        llm = self.owner._llms[attempt.endpoint]
        stream = llm.stream(
            **self.call,
            cancel_event=attempt.stop,
            _failover=position < len(self.order) - 1,
            _metrics_sink=lambda record: setattr(attempt, "record", record),
        )
        attempt.events = cast("AsyncGenerator[Event, None]", stream)
        attempt.task = asyncio.ensure_future(self._run(attempt))
        self.attempts.append(attempt)
        hedge_after = self.owner._config.hedge_after
        if hedge_after is not None and not self.hedged and self.next < len(self.order):
            if self.hedge_timer is not None:
                self.hedge_timer.cancel()
            self.hedge_timer = asyncio.get_running_loop().call_later(
                hedge_after, self.inbox.put_nowait, ("hedge", None, None)
            )

    async def _run(self, attempt: _Attempt) -> None:
        """Read the attempt up to its first progress event, its end or its error; then report."""
        events = attempt.events
        assert events is not None
        try:
            while True:
                try:
                    event = await events.__anext__()
                except StopAsyncIteration:
                    attempt.done = True
                    break
                attempt.held.append(event)
                if event["type"] in _PROGRESS:
                    break
        except Exception as exc:
            self.inbox.put_nowait(("settled", attempt, exc))
            return
        self.inbox.put_nowait(("settled", attempt, None))

    def running(self) -> bool:
        return any(not a.cancelled and not a.reported for a in self.attempts)

    async def winner(self) -> _Attempt | None:
        """The attempt that made progress (or ended cleanly) first; None when cancelled."""
        self.start("primary")
        while True:
            kind, attempt, error = await self.inbox.get()
            if kind == "cancel":
                return None
            if kind == "hedge":
                self.hedge_timer = None
                if not self.hedged and self.next < len(self.order):
                    self.hedged = True
                    self.start("hedge")
                continue
            assert attempt is not None
            if attempt.cancelled:
                continue
            attempt.reported = True
            if error is None:
                if attempt.done and self.cancel_event is not None and self.cancel_event.is_set():
                    return None  # ended quietly by the barge-in
                if self.hedge_timer is not None:
                    self.hedge_timer.cancel()
                    self.hedge_timer = None
                for other in self.attempts:
                    if other is not attempt:
                        other.cancelled = True
                        other.stop.set()
                return attempt
            if not isinstance(error, BrainlineError):
                raise error
            self.failures.append((attempt, error))
            self.owner._failed(attempt.endpoint, error)
            if self.next < len(self.order):
                self.start("failover")
            elif not self.running():
                self.all_failed()

    def all_failed(self) -> NoReturn:
        failures = sorted(self.failures, key=lambda f: self.attempts.index(f[0]))
        errors = [error for _, error in failures]
        raise make_error(
            "all_endpoints_failed",
            detail=", ".join(error.code for error in errors),
            errors=errors,
        )

    def route(self, winner: _Attempt) -> RouteEvent:
        failed: list[RouteFailure] = [
            {"endpoint": attempt.endpoint, "code": error.code}
            for attempt, error in sorted(self.failures, key=lambda f: self.attempts.index(f[0]))
        ]
        return {
            "type": "route",
            "endpoint": winner.endpoint,
            "provider": self.owner._llms[winner.endpoint].provider_key,
            "reason": winner.reason,
            "failed": failed,
        }

    def metrics(
        self,
        decider: _Attempt | None,
        *,
        finished: bool = False,
        error_code: str | None = None,
    ) -> TurnMetrics:
        """The turn's record: the deciding attempt's own, its times from the start of the race,
        `endpoint` its index and `attempts` the requests of every attempt (one for an attempt
        whose record has not come: it was cancelled as it started)."""
        own = decider.record if decider is not None else None
        offset = (decider.started - self.started) * 1000 if decider is not None else 0.0

        def shifted(key: str) -> float | None:
            value = own[key] if own is not None else None  # type: ignore[literal-required]
            return None if value is None else round(value + offset, 3)

        endpoint = decider.endpoint if decider is not None else 0
        llm = self.owner._llms[endpoint]
        return {
            "provider": llm.provider_key,
            "model": llm.config.model,
            "endpoint": endpoint,
            "request_id": own["request_id"] if own is not None else None,
            "attempts": sum(1 if a.record is None else a.record["attempts"] for a in self.attempts),
            "headers_ms": shifted("headers_ms"),
            "first_progress_ms": shifted("first_progress_ms"),
            "first_text_ms": shifted("first_text_ms"),
            "duration_ms": round((time.monotonic() - self.started) * 1000, 3),
            "chunks": own["chunks"] if own is not None else 0,
            "input_tokens": own["input_tokens"] if own is not None else None,
            "output_tokens": own["output_tokens"] if own is not None else None,
            "cache_read_tokens": own["cache_read_tokens"] if own is not None else None,
            "finish_reason": own["finish_reason"] if own is not None and finished else None,
            "error_code": error_code,
            "cancelled": not finished and error_code is None,
        }

    async def close(self) -> None:
        """Cancel every attempt still open, wait for their tasks, close their streams."""
        if self.hedge_timer is not None:
            self.hedge_timer.cancel()
            self.hedge_timer = None
        for attempt in self.attempts:
            attempt.stop.set()
        tasks: list[asyncio.Future[Any]] = [a.task for a in self.attempts if a.task is not None]
        if self.watcher is not None:
            self.watcher.cancel()
            tasks.append(self.watcher)
        await asyncio.gather(*tasks, return_exceptions=True)
        for attempt in self.attempts:
            if attempt.events is not None:
                await attempt.events.aclose()


class FallbackLLM:
    """Several endpoints as one: failover, optional hedged requests, and a cooldown per endpoint.

    Endpoints are tried in the given order, skipping those cooling down. An error before the turn's
    first event starts the next endpoint at once (ConfigError from the call's own arguments is
    raised). With `hedge_after`, an attempt without progress after that many seconds gets the next
    endpoint started beside it; the first to make progress wins and the other is closed. Every turn
    starts with a `route` event; when every attempt failed, AllEndpointsFailedError carries their
    errors. docs/runtime.md ("FallbackLLM") is the contract.

    Args:
        llms: the endpoints (brainline providers), in order of preference.
        hedge_after: see docs/reference/fallback.md. Default: None (no hedging).
        cooldown: see docs/reference/fallback.md. Default: 30.

    Raises:
        ConfigError: `llms` is not a non-empty list of providers, or an option is out of range.
    """

    def __init__(
        self,
        llms: Sequence[BaseLLM],
        *,
        hedge_after: float | None = _DEFAULTS.hedge_after,
        cooldown: float = _DEFAULTS.cooldown,
        on_metrics: Callable[[TurnMetrics], object] | None = None,
    ) -> None:
        if (
            not isinstance(llms, (list, tuple))
            or not llms
            or not all(isinstance(llm, BaseLLM) for llm in llms)
        ):
            raise make_error("invalid_llms")
        self._config = build_fallback_config(
            hedge_after=hedge_after, cooldown=cooldown, on_metrics=on_metrics
        )
        self._llms: tuple[BaseLLM, ...] = tuple(llms)
        self._cooling_until = [0.0] * len(self._llms)  # time.monotonic() deadlines

    @property
    def llms(self) -> tuple[BaseLLM, ...]:
        """The endpoints, in order of preference."""
        return self._llms

    @property
    def config(self) -> FallbackConfig:
        """The resolved options (read-only)."""
        return self._config

    def __repr__(self) -> str:
        endpoints = ", ".join(f"{llm.provider_key}:{llm.config.model}" for llm in self._llms)
        config = self._config
        return f"FallbackLLM([{endpoints}], hedge_after={config.hedge_after!r}, cooldown={config.cooldown!r})"

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        # Its endpoints hold API keys: no pickle, copy or deepcopy that could carry them along.
        raise TypeError("a FallbackLLM cannot be pickled or copied (its endpoints hold keys)")

    def _order(self) -> list[int]:
        now = time.monotonic()
        ready = [i for i, until in enumerate(self._cooling_until) if until <= now]
        return ready or list(range(len(self._llms)))

    def _failed(self, endpoint: int, error: BrainlineError) -> None:
        if _cools_down(error) and self._config.cooldown > 0:
            self._cooling_until[endpoint] = time.monotonic() + self._config.cooldown

    async def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        cancel_event: asyncio.Event | None = None,
        call_id: str | None = None,
        caller: str | None = None,
        callee: str | None = None,
    ) -> AsyncIterator[Event]:
        """Stream one turn from the first endpoint that answers: a `route` event, then the
        winner's events as its own stream() yields them.

        Setting `cancel_event` cancels every attempt (each connection closed) and ends the
        iteration quietly. Raises ConfigError for bad call arguments (before anything is sent),
        AllEndpointsFailedError when every attempt failed before the first event, and the
        winner's own error when it fails later.
        """
        _check_call_arguments(messages, tools, call_id, caller, callee)
        call = {
            "messages": messages,
            "tools": tools,
            "call_id": call_id,
            "caller": caller,
            "callee": callee,
        }
        if cancel_event is not None and cancel_event.is_set():
            self._deliver(_Race(self, [], call, None).metrics(None))  # no attempt, no task
            return
        race = _Race(self, self._order(), call, cancel_event)
        winner: _Attempt | None = None
        record: TurnMetrics | None = None
        error_code: str | None = None
        try:
            winner = await race.winner()
            if winner is None:
                return
            self._cooling_until[winner.endpoint] = 0.0
            for event in (race.route(winner), *winner.held):
                if cancel_event is not None and cancel_event.is_set():
                    return  # a barge-in as the race ended: nothing more, not even the route
                if event["type"] == "finish":
                    event, record = self._finished(race, winner, event)
                yield event
            if not winner.done:
                assert winner.events is not None
                async for event in winner.events:
                    if event["type"] == "finish":
                        event, record = self._finished(race, winner, event)
                    yield event
        except Exception as exc:
            error_code = error_code_of(exc)
            raise
        finally:
            await race.close()
            if record is None:  # failed or cancelled: a finished turn delivered its record
                decider = (
                    winner
                    or (race.attempts[-1] if error_code else None)
                    or (race.attempts[0] if race.attempts else None)
                )
                self._deliver(race.metrics(decider, error_code=error_code))

    def _finished(self, race: _Race, winner: _Attempt, event: Event) -> tuple[Event, TurnMetrics]:
        """The finish event with the turn's record in place of the endpoint's (delivered now)."""
        record = race.metrics(winner, finished=True)
        self._deliver(record)
        return cast(Event, {**event, "metrics": record}), record

    def _deliver(self, record: TurnMetrics) -> None:
        deliver(self._config.on_metrics, record)

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        cancel_event: asyncio.Event | None = None,
        call_id: str | None = None,
        caller: str | None = None,
        callee: str | None = None,
    ) -> Turn:
        """Run one turn to its end and return it assembled (the route event is not part of it);
        finish_reason is None when cancelled."""
        return await collect_turn(
            self.stream(
                messages,
                tools,
                cancel_event=cancel_event,
                call_id=call_id,
                caller=caller,
                callee=callee,
            )
        )

    async def warmup(self) -> None:
        """Warm every endpoint at once (each GET {base_url}/models). Never raises."""
        await asyncio.gather(*(llm.warmup() for llm in self._llms))

    async def aclose(self) -> None:
        """Close every endpoint's connection pool."""
        await asyncio.gather(*(llm.aclose() for llm in self._llms))

    async def __aenter__(self) -> FallbackLLM:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
