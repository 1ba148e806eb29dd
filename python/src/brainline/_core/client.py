"""The OpenAI-compatible streaming client; typescript/src/core/client.ts mirrors it.

One httpx.AsyncClient per BaseLLM, created on first use and shared by all its turns (keep-alive).
docs/runtime.md is the contract: request bytes, event order, error mapping and cancellation.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import re
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NoReturn, SupportsIndex, TypeVar, cast
from urllib.parse import quote

import httpx

from .._generated.constants import (
    CONNECT_TIMEOUT_CAP,
    ERROR_BODY_MAX_BYTES,
    KEEPALIVE_EXPIRY,
    PROGRESS_CLOCK_GRACE,
    SESSION_KEY_MAX_LENGTH,
    SSE_MAX_EVENT_BYTES,
    WARMUP_TIMEOUT,
)
from .._generated.options import BODY_FIELDS, LLMConfig
from .chunks import TurnState
from .errors import APIStatusError, BrainlineError, StreamError, make_error
from .events import Event, Turn, collect_turn
from .log import logger, setup_from_env
from .metrics import TurnMeter, TurnMetrics, error_code_of, request_id_of
from .session import SessionContext, hash_caller, resolve_session_key
from .sse import SSEDecoder
from .telemetry import telemetry_for

__all__ = ["BaseLLM"]


def _lazy_module(name: str) -> ModuleType:
    """`name` as imported, or, when nothing imported it yet, a module that loads on first use
    (the standard library's LazyLoader). asyncio takes about 25 ms to import and `import httpx`
    defers it too, so `import brainline` stays close to a bare `import httpx`; any turn loads it.
    """
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    import asyncio
else:
    asyncio = _lazy_module("asyncio")


_HEADER_UNSAFE = re.compile(r"[\r\n\x00]")
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_STREAM_OPTIONS = {"include_usage": True}
_MAX_TOKENS_WIRE = "max_completion_tokens"  # the wire key of max_tokens in BODY_FIELDS
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_RETRY_BACKOFF = 0.2  # seconds before the first retry without Retry-After; doubled each time
_DIALECT_STATUSES = frozenset({400, 422})
_PROGRESS = frozenset({"text", "tool_call", "reasoning"})
# What a body read raises: the connection lost or timed out, or a compressed body that is corrupt.
_BODY_ERRORS = (httpx.TransportError, httpx.DecodingError)
_CORRUPT_BODY = "the compressed body does not decompress"


def _mapping_as_dict(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# One encoder: json.dumps builds a new one per call whenever an option is not the default.
_encode = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), default=_mapping_as_dict
).encode

_HeaderList = list[tuple[str, str]]
_T = TypeVar("_T")


class _Hidden(Generic[_T]):
    """A value no serializer shows: repr and str are "***", copy and pickle refuse.

    BaseLLM keeps its header lists (the Authorization header) in these, so that vars(llm) dumped
    with json.dumps(..., default=str), or a debugger's view of the instance, shows no key.
    """

    __slots__ = ("value",)

    def __init__(self, value: _T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "***"

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError("a value hidden from serializers cannot be copied or pickled")


_HEADER_GRACE = 0.1  # seconds


async def _close_stranded(client: httpx.AsyncClient) -> None:
    """Close the pool's connections that were made for a request cancelled before it went out.

    encode/httpcore#1093: a request cancelled after its connection was made but before the
    request was written leaves that connection in the pool in state NEW, which is never available,
    idle or expired: it keeps a socket and a pool slot for ever, and once the pool (100) is full of
    them every later turn fails with a pool timeout. A running request whose connection is closed
    here in the same instant gets httpcore's ConnectionNotAvailable, on which the pool gives it
    another connection. Reaches into httpx's transport (its pool is not public); a client without
    one (a proxy mount, another httpx) is left alone.
    """
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    for connection in list(getattr(pool, "connections", ())):
        if ", NEW, " in connection.info():
            await connection.aclose()


def _undo_own_cancel(task: asyncio.Task[Any] | None) -> bool:
    """Undo a cancel brainline requested on `task`; False when someone else cancelled it too."""
    if task is None:
        return False
    uncancel = getattr(task, "uncancel", None)
    if uncancel is None:  # Python 3.10: no count of cancel requests
        return True
    remaining: int = uncancel()
    # Before 3.11 the count cannot be trusted (a backported Task under anyio, which cancels
    # tasks without uncancelling them there): then the request is only balanced.
    return remaining == 0 or sys.version_info < (3, 11)


class _Barge:
    """Barge-in for one turn: a watcher task that ends the turn when cancel_event is set.

    When the generator is waiting on the network, the watcher cancels the task running it (the
    CancelledError unwinds httpx, which closes the connection, and stream() absorbs it); when the
    generator is suspended at a yield, the watcher closes the response itself.
    """

    __slots__ = ("at_yield", "cancelled_task", "closing", "event", "response", "task", "watcher")

    def __init__(self, event: asyncio.Event) -> None:
        self.event = event
        self.task = asyncio.current_task()
        self.at_yield = False
        self.response: httpx.Response | None = None
        self.cancelled_task = False
        self.closing = False
        self.watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        await self.event.wait()
        if self.at_yield:
            if self.response is not None:
                self.closing = True
                await self.response.aclose()
        elif self.task is not None:
            self.cancelled_task = True
            self.task.cancel()

    def resume(self) -> bool:
        """Back from a yield; True when the turn was cancelled meanwhile."""
        self.at_yield = False
        self.task = asyncio.current_task()
        return self.event.is_set()

    def absorb(self) -> bool:
        """For a caught CancelledError: True when it is only the barge-in's own (then undone)."""
        return self.cancelled_task and _undo_own_cancel(self.task)

    async def stop(self) -> None:
        if self.closing:
            try:
                await self.watcher
            except Exception as exc:  # the close failed: the connection is gone either way
                logger.debug("closing a cancelled response failed: %s", type(exc).__name__)
        else:
            self.watcher.cancel()


class _Deadline:
    """The first-token, idle and total clocks of one turn, on one timer (loop.call_at).

    The progress clocks (first-token, then idle) always run: unset, each is `timeout` plus
    PROGRESS_CLOCK_GRACE. A progress chunk restarts the idle clock when brainline next waits (the
    next read), so the time the caller spends over its events does not count; noting it costs no
    clock read per chunk. When a clock runs out while the turn waits on the
    network (or between retries), the timer cancels the task running it, as _Barge does, and
    stream() raises the APITimeoutError naming the clock. When the total clock runs out while the
    caller holds an event, nothing happens then: the next read checks the clocks first (`due`) and
    fails at once, as TypeScript's next wait does.
    """

    __slots__ = (
        "armed_at",
        "at_yield",
        "cancelled_task",
        "fired",
        "first",
        "handle",
        "idle",
        "idle_span",
        "loop",
        "phase",
        "phase_at",
        "progressed",
        "stopped",
        "task",
        "total",
        "total_at",
    )

    def __init__(self, config: LLMConfig) -> None:
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        now = self.loop.time()
        timeout = config.timeout
        first, idle = config.first_token_timeout, config.idle_timeout
        # What the errors name, and how long each progress clock runs.
        self.first = timeout if first is None else first
        self.idle = timeout if idle is None else idle
        first_span = timeout + PROGRESS_CLOCK_GRACE if first is None else first
        self.idle_span = timeout + PROGRESS_CLOCK_GRACE if idle is None else idle
        self.total = config.total_timeout
        self.total_at = math.inf if self.total is None else now + self.total
        self.phase_at = now + first_span
        self.phase = "first_token_timeout"
        self.progressed = False
        self.at_yield = False
        self.stopped = False
        self.fired: str | None = None
        self.cancelled_task = False
        self.handle: asyncio.TimerHandle | None = None
        self.armed_at = math.inf
        self._arm()

    def progress(self) -> None:
        """A chunk carried text, a tool call or reasoning: the idle clock starts over at the next
        wait (`due`)."""
        self.progressed = True

    def resume(self) -> None:
        """Back from a yield."""
        self.at_yield = False
        self.task = asyncio.current_task()
        if self.handle is None:
            self._arm()

    def _arm(self) -> None:
        at = min(self.total_at, self.phase_at)
        if at < math.inf and self.fired is None and not self.stopped:
            self.armed_at = at
            self.handle = self.loop.call_at(at, self._fire)

    def due(self) -> bool:
        """Before a read: True when a clock ran out meanwhile (TypeScript checks the same).

        After progress, the idle clock starts over now."""
        now = self.loop.time()
        if self.progressed:
            self.progressed = False
            self.phase = "idle_timeout"
            self.phase_at = now + self.idle_span
            # A timer armed for an earlier deadline re-arms itself for this one when it fires;
            # one armed for a later one (the total, or a longer first-token clock) is moved up.
            if self.handle is not None and self.phase_at < self.armed_at:
                self.handle.cancel()
                self.handle = None
                self._arm()
        if now >= self.total_at:
            self.fired = "total_timeout"
        elif now >= self.phase_at:
            self.fired = self.phase
        return self.fired is not None

    def _fire(self) -> None:
        self.handle = None
        if self.at_yield:
            return
        if not self.due():
            self._arm()
            return
        if self.task is not None:
            self.cancelled_task = True
            self.task.cancel()

    def absorb(self) -> bool:
        """For a caught CancelledError: True when the timer cancelled the task (then undone)."""
        return self.cancelled_task and _undo_own_cancel(self.task)

    def error(self, url: str) -> BrainlineError:
        code = self.fired or "total_timeout"
        if code == "total_timeout":
            timeout = self.total
        elif code == "first_token_timeout":
            timeout = self.first
        else:
            timeout = self.idle
        return make_error(code, url=url, timeout=timeout)

    def stop(self) -> None:
        self.stopped = True
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class BaseLLM:
    """The OpenAI-compatible streaming client every generated provider extends.

    Constructed with one resolved LLMConfig; all turns share one keep-alive connection pool.
    """

    provider_key: ClassVar[str] = ""
    """The provider's key in the catalog; each generated class sets its own."""
    genai_provider_name: ClassVar[str] = ""
    """OpenTelemetry's gen_ai.provider.name for it (spec: `genai_provider_name`, else the key)."""

    def __init__(self, config: LLMConfig) -> None:
        setup_from_env()
        self._config = config
        self._client: httpx.AsyncClient | None = None
        # The proxy the client sends the turns through (URL without credentials), read in _open.
        self._proxy: str | None = None
        timeout = config.timeout
        # Set on every request: a client given as `http_client` keeps its own defaults otherwise.
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_CAP))
        self._timeouts = self._timeout.as_dict()
        self._sweeps: set[asyncio.Task[None]] = set()  # _close_stranded runs after a cancel
        base = config.base_url.rstrip("/")
        query = _query_string(config.extra_query)
        self._url = base + "/chat/completions"  # in messages: without extra_query
        self._models_url = base + "/models" + query
        self._request_url = httpx.URL(self._url + query)
        # The dialect this endpoint speaks; in "auto" mode a 400/422 naming a field changes it.
        self._stream_options = config.stream_options != "off"
        self._max_tokens_key = (
            "max_tokens" if config.max_tokens_field == "max_tokens" else _MAX_TOKENS_WIRE
        )
        headers: _HeaderList = [
            ("Content-Type", "application/json"),
            ("Accept", "text/event-stream"),
            ("User-Agent", config.user_agent),
        ]
        if config.api_key:
            headers.append(("Authorization", f"Bearer {config.api_key}"))
        for name, value in (config.extra_headers or {}).items():
            _set_header(headers, name, value)
        self._headers = _Hidden(headers)
        self._encoded_headers = _Hidden(_encode_headers(headers))  # turns without session headers
        # OpenTelemetry spans and metrics (telemetry.py): None when off, the usual case.
        genai_name = type(self).genai_provider_name or config.provider_key
        self._telemetry = telemetry_for(genai_name, config)
        self._sampling: list[tuple[str, Any]] = [
            (wire, value)
            for field, wire in BODY_FIELDS
            if (value := getattr(config, field)) is not None
        ]

    @property
    def config(self) -> LLMConfig:
        """The resolved configuration (read-only)."""
        return self._config

    def __repr__(self) -> str:
        """The provider, model and base URL: never a key (TypeScript's toJSON shows the same)."""
        config = self._config
        return (
            f"{type(self).__name__}(provider={self.provider_key!r}, model={config.model!r}, "
            f"base_url={config.base_url!r})"
        )

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        """copy, deepcopy and pickle refuse: a copy would share the pool, and pickle's bytes
        would hold the keys in clear."""
        raise TypeError(
            f"{type(self).__name__} cannot be copied or pickled (it holds a connection pool and "
            "the keys): construct another with the same options"
        )

    async def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        cancel_event: asyncio.Event | None = None,
        call_id: str | None = None,
        caller: str | None = None,
        callee: str | None = None,
        _failover: bool = False,
        _metrics_sink: Callable[[TurnMetrics], object] | None = None,
    ) -> AsyncIterator[Event]:
        """Stream one turn: reasoning, text and tool-call events as they arrive, then one usage
        event (when the server sent usage) and a finish event.

        Setting `cancel_event` ends the turn at once: the connection is closed and the iteration
        stops quietly, without a finish event. Call arguments are checked before anything is sent
        (ConfigError); failures raise APIConnectionError, APITimeoutError, APIStatusError or
        StreamError.
        """
        _check_call_arguments(messages, tools, call_id, caller, callee)
        headers, session_key = self._request_headers(call_id, caller, callee)
        body = self._request_body(messages, tools, call_id)
        config = self._config
        meter = TurnMeter(
            self.provider_key,
            config.model,
            config.on_metrics if _metrics_sink is None else _both(_metrics_sink, config.on_metrics),
        )
        if cancel_event is not None and cancel_event.is_set():
            meter.finish(cancelled=True)
            return
        client = self._client or self._open()
        barge = None if cancel_event is None else _Barge(cancel_event)
        deadline = _Deadline(config)
        telemetry = self._telemetry
        state = (
            TurnState(config.reasoning) if telemetry is None else telemetry.start(meter, messages)
        )
        response: httpx.Response | None = None
        failure: BaseException | None = None
        try:
            response = await self._send(
                client, headers, body, messages, tools, call_id, _failover, meter
            )
            if barge is not None:
                barge.response = response

            if _is_json(response.headers.get("content-type")):
                meter.chunks = 1
                for event in await self._read_json(response, state):
                    if event["type"] == "finish":
                        self._finished(meter, state, event)
                    elif meter.text_at is None and event["type"] in _PROGRESS:
                        meter.progressed([event])
                    if barge is not None:
                        if barge.event.is_set():
                            return
                        barge.at_yield = True
                    deadline.at_yield = True
                    yield event
                    deadline.resume()
                    if barge is not None and barge.resume():
                        return
                return

            raw = _body_chunks(response)
            decoder = SSEDecoder()
            done = end = False
            while not end:
                if deadline.due():
                    raise deadline.error(self._url)
                try:
                    chunk: bytes | None = await anext(raw)
                except StopAsyncIteration:
                    chunk = None
                except _BODY_ERRORS as exc:
                    raise self._body_error(exc, state) from exc
                end = chunk is None
                for sse in decoder.flush() if chunk is None else decoder.decode(chunk):
                    data = sse.data
                    if data == "[DONE]":
                        done = True
                        break
                    meter.chunks += 1
                    events = state.feed_event(sse.event, data)
                    if _has_progress(events) or state.take_dropped():
                        deadline.progress()
                        if meter.text_at is None:
                            meter.progressed(events)
                    for event in events:
                        if barge is not None:
                            if barge.event.is_set():
                                return
                            barge.at_yield = True
                        deadline.at_yield = True
                        yield event
                        deadline.resume()
                        if barge is not None and barge.resume():
                            return
                if done:
                    break
                if decoder.error is not None:
                    raise decoder.error

            deadline.stop()  # the answer is complete: no clock runs while the caller reads it
            if done and not end:
                # Read the rest, so the connection goes back to the pool.
                try:
                    async for _ in raw:
                        pass
                except _BODY_ERRORS as exc:
                    logger.debug("reading past [DONE] failed: %s", type(exc).__name__)
            for event in state.finish(done):
                if barge is not None:
                    if barge.event.is_set():
                        return
                    barge.at_yield = True
                if event["type"] == "finish":
                    self._finished(meter, state, event)
                yield event
                if barge is not None and barge.resume():
                    return
        except asyncio.CancelledError:
            timed_out = deadline.absorb()
            if barge is not None and barge.cancelled_task:
                if not barge.absorb():
                    raise
                logger.debug("turn cancelled")
            elif timed_out:
                failure = deadline.error(self._url)
                raise failure from None
            else:
                raise
        except Exception as exc:
            if barge is not None and barge.cancelled_task:
                # Our cancel surfaced as another error (anyio's connect on Python 3.10 turns
                # it into a ValueError): the turn was cancelled all the same.
                deadline.absorb()
                barge.absorb()
                logger.debug("turn cancelled (%s)", type(exc).__name__)
                return
            if deadline.cancelled_task:
                deadline.absorb()  # our timer's cancel, surfaced as another error
                _strip_requests(exc)
                failure = deadline.error(self._url)
                raise failure from exc
            if client.is_closed:
                # aclose() during the turn ends it as if cancelled.
                logger.debug("turn ended by aclose() (%s)", type(exc).__name__)
                return
            if isinstance(exc, BrainlineError):
                if isinstance(exc, StreamError):
                    exc.partial_text = state.text
                    exc.request_id = meter.request_id
                self._scrub(exc, session_key)
            failure = exc
            raise
        finally:
            if meter.record is None:  # failed or cancelled: finished turns have their record
                meter.finish(
                    usage=state.usage_counts(),
                    error_code=None if failure is None else error_code_of(failure),
                    cancelled=failure is None,
                )
            deadline.stop()
            if barge is not None:
                await barge.stop()
            if response is not None:
                await response.aclose()

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
        """Run one turn to its end and return it assembled; finish_reason is None when cancelled."""
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
        """Open a connection ahead of the first turn: GET {base_url}/models. Never raises."""
        try:
            await asyncio.wait_for(self._warmup(), WARMUP_TIMEOUT)
        except Exception as exc:
            logger.debug("warmup failed (best-effort): %s", type(exc).__name__)

    async def aclose(self) -> None:
        """Close the connection pool; turns still running end as if cancelled.

        The instance stays usable: a later turn opens a new pool. A client given as `http_client`
        is left open (its owner closes it), and so are the turns running on it.
        """
        client, self._client = self._client, None
        if self._sweeps:
            await asyncio.gather(*self._sweeps, return_exceptions=True)
        if client is not None and client is not self._config.http_client:
            await client.aclose()

    async def __aenter__(self) -> BaseLLM:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the request ---------------------------------------------------------------------------

    def _open(self) -> httpx.AsyncClient:
        """The caller's `http_client`, else a new client. Either way httpx reads HTTPS_PROXY,
        HTTP_PROXY, ALL_PROXY and NO_PROXY (trust_env) when the client is made, once."""
        client = self._config.http_client
        if client is None:
            client = httpx.AsyncClient(
                timeout=self._timeout,
                # httpx's connection limits, with the spec's idle expiry (httpx: 5 s, which races
                # the 5 s keep-alive timeout of uvicorn and Node servers).
                limits=httpx.Limits(
                    max_connections=100,
                    max_keepalive_connections=20,
                    keepalive_expiry=KEEPALIVE_EXPIRY,
                ),
            )
        self._client = client
        self._proxy = _proxy_of(client, self._request_url)
        return client

    async def _send(
        self,
        client: httpx.AsyncClient,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None,
        call_id: str | None,
        failover: bool = False,
        meter: TurnMeter | None = None,
    ) -> httpx.Response:
        """POST the turn and return the 2xx response (its body not read yet).

        Retries happen only here, so only before any byte of a body reached the caller: a
        connection error or HTTP 429/502/503/504, at most max_retries times, waiting Retry-After or
        a backoff within what is left of retry_budget; and, in "auto" dialect mode, once per field
        for a 400/422 that names `stream_options` / `include_usage` or `max_completion_tokens`.
        """
        config = self._config
        retries = 0
        budget = config.retry_budget
        while True:
            request = httpx.Request(
                "POST",
                self._request_url,
                headers=headers,
                content=body,
                extensions={"timeout": self._timeouts},
            )
            attempt = retries + 1
            if meter is not None:
                meter.attempts += 1
                attempt = meter.attempts
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("request POST %s attempt %d", self._url, attempt)
            try:
                response = await self._send_once(client, request)
            except httpx.TransportError as exc:
                error = self._transport_error(exc)
                if error.code != "connection_error" or retries >= config.max_retries:
                    raise error from exc
                if isinstance(exc, httpx.ConnectError):  # no connection: the server is down
                    wait = min(_RETRY_BACKOFF * 2.0**retries, budget)
                elif _stale_connection(exc):  # a pooled connection the server had closed
                    wait = 0.0
                else:  # a fresh connection took the request: it may have run
                    raise error from exc
            else:
                if "transfer-encoding" in response.headers and "content-length" in response.headers:
                    # How request smuggling and response splitting begin (RFC 9112 section 6.3):
                    # refused, as TypeScript's transport refuses it (h11 would let chunked win).
                    await response.aclose()
                    raise make_error("connection_error", url=self._url)
                if meter is not None:
                    meter.answered(response.headers)
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug(
                        "answer HTTP %d from %s attempt %d request_id=%s",
                        response.status_code,
                        self._url,
                        attempt,
                        request_id_of(response.headers) or "-",
                    )
                if 200 <= response.status_code < 300:
                    return response
                if response.status_code == 407 and self._proxy is not None:
                    # Only the proxy sends 407 (to an http request in absolute form): not retried.
                    await response.aclose()
                    raise make_error(
                        "proxy_error", url=self._url, proxy=self._proxy, detail=_proxy_answered(407)
                    )
                try:
                    error = await self._status_error(response)
                finally:
                    await response.aclose()
                assert isinstance(error, APIStatusError)
                if self._adapt_dialect(error):
                    body = self._request_body(messages, tools, call_id)
                    logger.debug(
                        "HTTP %d names a field the endpoint rejects: retrying", error.status
                    )
                    continue
                retry_wait = _retry_wait(error, retries, config.max_retries, budget)
                if retry_wait is None:
                    raise error
                wait = retry_wait
            if failover and wait > 0:  # inside a FallbackLLM: the next endpoint now, not a wait
                raise error
            retries += 1
            budget -= wait
            logger.debug("retry %d in %.3f s (%s)", retries, wait, error.code)
            if wait > 0:
                await asyncio.sleep(wait)

    async def _send_once(self, client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
        """client.send, with the whole wait for the headers bounded by `timeout` (httpx bounds each
        read only, so headers trickling in would otherwise hold the turn), as TypeScript's timer
        does: expiry is APITimeoutError read_timeout."""
        timeout = self._config.timeout
        task = asyncio.current_task()
        fired = False

        def expire() -> None:
            nonlocal fired
            fired = True
            if task is not None:
                task.cancel()

        # A grace period lets httpx's own connect/read timeouts (the same `timeout`) speak first
        # when the wait was a plain silence; this clock only ends waits that kept receiving bytes.
        handle = asyncio.get_running_loop().call_later(timeout + _HEADER_GRACE, expire)
        try:
            return await client.send(request, stream=True)
        except asyncio.CancelledError:
            self._sweep(client)
            if fired and _undo_own_cancel(task):
                raise make_error("read_timeout", url=self._url, timeout=timeout) from None
            raise
        finally:
            handle.cancel()

    def _sweep(self, client: httpx.AsyncClient) -> None:
        """After a cancel before the response: _close_stranded, in a task of its own (the cancelled
        turn returns at once)."""
        sweep = asyncio.get_running_loop().create_task(_close_stranded(client))
        self._sweeps.add(sweep)
        sweep.add_done_callback(self._sweeps.discard)

    def _adapt_dialect(self, error: APIStatusError) -> bool:
        """In "auto" mode, drop or rename a field a 400/422 names; True when the body changed.

        The choice is kept on the instance (one base URL), so later turns send the working form.
        """
        if error.status not in _DIALECT_STATUSES:
            return False
        config = self._config
        text = error.body
        changed = False
        if (
            config.stream_options == "auto"
            and self._stream_options
            and ("stream_options" in text or "include_usage" in text)
        ):
            self._stream_options = False
            changed = True
        if (
            config.max_tokens_field == "auto"
            and config.max_tokens is not None
            and self._max_tokens_key == _MAX_TOKENS_WIRE
            and _MAX_TOKENS_WIRE in text
        ):
            self._max_tokens_key = "max_tokens"
            changed = True
        return changed

    def _request_headers(
        self, call_id: str | None, caller: str | None, callee: str | None
    ) -> tuple[list[tuple[bytes, bytes]], str | None]:
        """The headers of one turn, and the memory-scope key among them (a secret)."""
        config = self._config
        with_session_id = bool(config.session_id_header and call_id)
        if not with_session_id and not config.session_key_header:
            return self._encoded_headers.value, None
        headers = self._headers.value.copy()
        if with_session_id:
            assert config.session_id_header is not None and call_id is not None
            _set_header(headers, config.session_id_header, config.session_id_prefix + call_id)
        session_key = None
        if config.session_key_header:
            ctx = SessionContext(call_id, caller, callee, hash_caller(caller))
            key: object = resolve_session_key(config, ctx)
            if key:
                option = "session_key_factory" if config.session_key_factory else "session_key"
                if not isinstance(key, str):  # the value is not echoed: it may be the key
                    raise make_error("invalid_secret_type", option=option, expected="a string")
                if _HEADER_UNSAFE.search(key):
                    raise make_error("invalid_header_value", option=option)
                if len(key) > SESSION_KEY_MAX_LENGTH:
                    raise make_error(
                        "too_long", option=option, maximum=SESSION_KEY_MAX_LENGTH, length=len(key)
                    )
                _set_header(headers, config.session_key_header, key)
                session_key = key
        return _encode_headers(headers), session_key

    def _request_body(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None,
        call_id: str | None,
    ) -> bytes:
        config = self._config
        body: dict[str, Any] = {
            "model": config.model,
            "messages": messages,
            "stream": True,
        }
        if self._stream_options:
            body["stream_options"] = _STREAM_OPTIONS
        if tools:
            body["tools"] = tools
        max_tokens_key = self._max_tokens_key
        for wire, value in self._sampling:
            body[max_tokens_key if wire == _MAX_TOKENS_WIRE else wire] = value
        if config.session_user_prefix and call_id:
            body["user"] = config.session_user_prefix + call_id
        if config.extra_body:
            body.update(config.extra_body)  # last: its keys override ours in place
        return _encode(body).encode()

    # -- the answer ----------------------------------------------------------------------------

    def _transport_error(self, exc: httpx.TransportError) -> BrainlineError:
        """A request that failed before any response: a timeout, or no connection."""
        timeout = self._config.timeout
        if isinstance(exc, httpx.ConnectTimeout) or (
            isinstance(exc, httpx.TimeoutException) and _in_tunnel_setup(exc)
        ):
            return make_error(
                "connect_timeout", url=self._url, timeout=min(timeout, CONNECT_TIMEOUT_CAP)
            )
        if isinstance(exc, httpx.TimeoutException):
            return make_error("read_timeout", url=self._url, timeout=timeout)
        proxy = self._proxy
        if proxy is not None:
            if isinstance(exc, httpx.ProxyError):  # a non-2xx answer to CONNECT: "407 Proxy ..."
                status = str(exc).split(" ", 1)[0]
                detail = _proxy_answered(int(status)) if status.isdigit() else str(exc)
                return make_error("proxy_error", url=self._url, proxy=proxy, detail=detail)
            if isinstance(exc, httpx.ConnectError) and not _caused_by(exc, ssl.SSLError):
                # The only connection made before TLS with the endpoint is the one to the proxy.
                return make_error(
                    "proxy_error", url=self._url, proxy=proxy, detail=_PROXY_UNREACHABLE
                )
        return make_error("connection_error", url=self._url)

    def _body_error(self, exc: httpx.RequestError, state: TurnState) -> BrainlineError:
        """A body read that failed after the headers: a timeout, the connection lost, or a
        compressed body that does not decompress."""
        if isinstance(exc, httpx.DecodingError):
            return make_error("malformed", detail=_CORRUPT_BODY, partial_text=state.text)
        if isinstance(exc, httpx.TimeoutException):
            return make_error("read_timeout", url=self._url, timeout=self._config.timeout)
        return make_error("interrupted", partial_text=state.text)

    async def _status_error(self, response: httpx.Response) -> BrainlineError:
        """The error of a non-2xx answer, with at most ERROR_BODY_MAX_BYTES of its body."""
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in _body_chunks(response):
                parts.append(chunk)
                size += len(chunk)
                if size >= ERROR_BODY_MAX_BYTES:
                    break
        except _BODY_ERRORS:
            pass  # keep what arrived: the status is what matters
        body = b"".join(parts)[:ERROR_BODY_MAX_BYTES].decode("utf-8", "replace")
        detail = body
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            parsed = None
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            detail = error["message"]
        return make_error(
            "http_status",
            url=self._url,
            status=response.status_code,
            detail=detail[:200],
            body=body,
            retry_after=_retry_after(
                response.headers.get("retry-after"), response.headers.get("retry-after-ms")
            ),
            request_id=request_id_of(response.headers),
        )

    async def _read_json(self, response: httpx.Response, state: TurnState) -> list[Event]:
        """A whole 2xx JSON answer: an error object, or a chat.completion as stream events."""
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in _body_chunks(response):
                parts.append(chunk)
                size += len(chunk)
                if size > SSE_MAX_EVENT_BYTES:
                    raise make_error("too_large", what="event", limit=SSE_MAX_EVENT_BYTES)
        except _BODY_ERRORS as exc:
            raise self._body_error(exc, state) from exc
        return state.feed_body(b"".join(parts).decode("utf-8-sig", "replace"))

    def _finished(self, meter: TurnMeter, state: TurnState, event: Event) -> None:
        """The finish event gets the turn's metrics record (delivered to on_metrics now)."""
        finish = cast(dict[str, Any], event)
        finish["metrics"] = meter.finish(usage=state.usage_counts(), finish_reason=finish["reason"])

    def _scrub(self, exc: BrainlineError, session_key: str | None) -> None:
        """Keep keys out of an error, even when a server echoes them back, and out of its chain."""
        for secret in (self._config.api_key, self._config.session_key, session_key):
            if not secret:
                continue
            if secret in exc.message:
                exc.message = exc.message.replace(secret, "***")
                exc.args = (exc.message,)
            if isinstance(exc, APIStatusError) and secret in exc.body:
                exc.body = exc.body.replace(secret, "***")
        _strip_requests(exc)

    async def _warmup(self) -> None:
        config = self._config
        headers = [("User-Agent", config.user_agent)]
        if config.api_key:
            headers.append(("Authorization", f"Bearer {config.api_key}"))
        request = httpx.Request(
            "GET",
            self._models_url,
            headers=_encode_headers(headers),
            extensions={"timeout": httpx.Timeout(WARMUP_TIMEOUT).as_dict()},
        )
        client = self._client or self._open()
        try:
            response = await client.send(request, stream=True)
        except asyncio.CancelledError:  # warmup's own time limit, or the caller's
            self._sweep(client)
            raise
        try:
            async for _ in _body_chunks(response):  # to the end, so the connection stays pooled
                pass
        finally:
            await response.aclose()


def _check_call_arguments(
    messages: object, tools: object, call_id: object, caller: object, callee: object
) -> None:
    """The checks stream() runs on its arguments before anything is sent."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise make_error("invalid_messages")
    for message in messages:
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise make_error("invalid_messages")
    if tools is not None:
        if not isinstance(tools, (list, tuple)):
            raise make_error("invalid_tools")
        for tool in tools:
            if not isinstance(tool, Mapping):
                raise make_error("invalid_tools")
    for option, value in (("call_id", call_id), ("caller", caller), ("callee", callee)):
        if value is not None and not isinstance(value, str):
            # The caller's value is not echoed: it is a phone number.
            code = "invalid_secret_type" if option == "caller" else "invalid_type"
            raise make_error(code, option=option, expected="a string", value=value)
    if call_id and _HEADER_UNSAFE.search(cast(str, call_id)):
        raise make_error("invalid_header_value", option="call_id")


def _both(
    sink: Callable[[TurnMetrics], object], own: Callable[[TurnMetrics], object] | None
) -> Callable[[TurnMetrics], object]:
    """A FallbackLLM's sink, then the endpoint's own on_metrics (whose raise is logged)."""
    if own is None:
        return sink

    def deliver(record: TurnMetrics) -> None:
        sink(record)
        own(record)

    return deliver


_PROXY_UNREACHABLE = "no connection to the proxy"


def _proxy_answered(status: int) -> str:
    return f"the proxy answered HTTP {status}"


def _proxy_of(client: httpx.AsyncClient, url: httpx.URL) -> str | None:
    """The URL (without credentials) of the proxy `client` sends `url` through, else None.

    httpx chose it when the client was made (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY, or
    the client's own `proxy` / `mounts`) and keeps it private: the httpcore proxy pool of the
    transport mounted for the URL. None as well when a custom transport or another httpx hides it.
    """
    try:
        proxy_url = client._transport_for_url(url)._pool._proxy_url  # type: ignore[attr-defined]
        scheme, host, port = proxy_url.scheme, proxy_url.host, proxy_url.port
    except AttributeError:
        return None
    name = host.decode("ascii")
    if ":" in name:  # an IPv6 literal
        name = f"[{name}]"
    return f"{scheme.decode('ascii')}://{name}" + ("" if port is None else f":{port}")


def _in_tunnel_setup(exc: httpx.TransportError) -> bool:
    """Whether `exc` happened before a CONNECT tunnel was up (the proxy's answer, or TLS in it).

    httpx waits for a proxy's answer to CONNECT with the read timeout; brainline counts that wait
    as connecting, as TypeScript does. httpcore's tunnel connection, found in the traceback of
    the error httpx maps, says whether its tunnel is up.
    """
    tb = exc.__cause__.__traceback__ if exc.__cause__ is not None else None
    while tb is not None:
        connection: Any = tb.tb_frame.f_locals.get("self")
        if type(connection).__name__ == "AsyncTunnelHTTPConnection":
            return getattr(connection, "_connected", True) is False
        tb = tb.tb_next
    return False


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether `exc` or an exception in its chain is a `kind`."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, kind):
            return True
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return False


def _stale_connection(exc: httpx.TransportError) -> bool:
    """Whether a request failed on a reused keep-alive connection before any byte of an answer:
    the race with a server closing an idle connection, where the request never ran.

    httpx does not say whether the connection was reused; httpcore's HTTP/1.1 connection, found
    in the traceback of the error httpx maps, counts its requests and holds what it received.
    Anything it cannot tell is not stale: a request that may have run is never sent twice.
    """
    tb = exc.__cause__.__traceback__ if exc.__cause__ is not None else None
    while tb is not None:
        connection: Any = tb.tb_frame.f_locals.get("self")
        if type(connection).__name__ == "AsyncHTTP11Connection":
            state: Any = getattr(connection, "_h11_state", None)
            try:
                return bool(
                    connection._request_count > 1
                    and getattr(state.their_state, "__name__", "") == "SEND_RESPONSE"
                    and not state.trailing_data[0]
                )
            except AttributeError:
                return False
        tb = tb.tb_next
    return False


def _strip_requests(exc: BaseException) -> None:
    """Give every httpx error in the chain of `exc` a bare request (method and URL).

    The request httpx attaches holds the headers (Authorization, the memory-scope key), which
    pickling that error, or printing its request's headers, would show.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        link = todo.pop()
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        if isinstance(link, httpx.HTTPError):
            try:
                request = link.request
            except RuntimeError:  # none attached
                pass
            else:
                link.request = httpx.Request(request.method, request.url)
        todo += (link.__cause__, link.__context__)


def _encode_headers(headers: _HeaderList) -> list[tuple[bytes, bytes]]:
    """As bytes, in UTF-8: httpx would refuse anything but ASCII in a str value."""
    return [(name.encode(), value.encode()) for name, value in headers]


def _set_header(headers: _HeaderList, name: str, value: str) -> None:
    """Add a header, or replace one already there (case-insensitive) in its place."""
    lower = name.lower()
    for at, (existing, _) in enumerate(headers):
        if existing.lower() == lower:
            headers[at] = (name, value)
            return
    headers.append((name, value))


def _body_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body as it arrives: the raw bytes, decoded only when the server compressed them."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    return response.aiter_raw() if encoding in ("", "identity") else response.aiter_bytes()


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _has_progress(events: list[Event]) -> bool:
    # Most chunks give one event: test it before the general (generator) check.
    if len(events) == 1:
        return events[0]["type"] in _PROGRESS
    return any(event["type"] in _PROGRESS for event in events)


def _retry_wait(
    error: APIStatusError, retries: int, max_retries: int, budget: float
) -> float | None:
    """Seconds to wait before retrying a status error; None: raise it now.

    A Retry-After beyond what is left of the budget fails at once; without one the backoff is
    cut to what is left.
    """
    if error.status not in _RETRY_STATUSES or retries >= max_retries:
        return None
    if error.retry_after is None:
        return min(_RETRY_BACKOFF * 2.0**retries, budget)
    return error.retry_after if error.retry_after <= budget else None


def _query_string(params: Mapping[str, str] | None) -> str:
    """`?k=v&...`, percent-encoded except RFC 3986 unreserved characters (space as %20)."""
    if not params:
        return ""
    return "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())


def _retry_after(value: str | None, milliseconds: str | None = None) -> float | None:
    """Retry-After as seconds: `retry-after-ms`, else a number of seconds or an HTTP date (0 when
    already past)."""
    if milliseconds is not None and _SECONDS.fullmatch(milliseconds.strip()):
        return float(milliseconds.strip()) / 1000
    if value is None:
        return None
    text = value.strip()
    if _SECONDS.fullmatch(text):
        return float(text)
    # Imported here: email.utils costs `import brainline` about 7 ms, and dates are rare here.
    from datetime import timezone
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - time.time())
