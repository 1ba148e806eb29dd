"""A scripted OpenAI-compatible streaming server on 127.0.0.1, for tests and demos.

Real HTTP/1.1 on asyncio streams, standard library only. Each request is answered from a script
(see docs/testing.md): SSE bytes in chosen pieces, convenience text / tool-call / usage turns, JSON
or raw bodies, delays, stalls and drops. Every request and every connection is recorded so a test
can assert what the client sent, that it reused connections, and that it closed the socket when it
was cancelled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "ConnectionRecord",
    "MockServer",
    "RecordedRequest",
    "ScriptError",
    "compile_script",
]

JSONValue: TypeAlias = Any

HOST = "127.0.0.1"
CONTROL_PREFIX = "/__mock/"
DEFAULT_MODEL = "mock-model"
DEFAULT_TEXT = ["Hello", " from the", " brainline", " mock server."]
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024

_RESPONSE_KEYS = frozenset(
    {
        "status",
        "headers",
        "sse",
        "text",
        "reasoning",
        "reasoning_field",
        "tool_calls",
        "usage",
        "finish_reason",
        "done",
        "model",
        "id",
        "stream",
        "json",
        "body",
        "transfer",
        "delay_before_headers_ms",
        "delay_ms",
        "stall",
        "drop_after",
        "drop_before_headers",
        "drop_reset",
        "keep_alive",
    }
)
_CONVENIENCE_KEYS = frozenset(
    {
        "text",
        "reasoning",
        "reasoning_field",
        "tool_calls",
        "usage",
        "finish_reason",
        "done",
        "stream",
    }
)
_SCRIPT_KEYS = frozenset({"responses", "routes", "models"})


class ScriptError(ValueError):
    """The script handed to MockServer is not valid."""


# -- the script ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Response:
    status: int
    headers: tuple[tuple[str, str], ...]
    pieces: tuple[bytes, ...]
    transfer: Literal["chunked", "content-length", "close"]
    delay_before_headers: float
    delay: float
    stall: int | None
    drop_after: int | None
    drop_before_headers: bool
    drop_reset: bool
    keep_alive: bool


@dataclass(frozen=True)
class _Script:
    responses: tuple[_Response, ...]
    routes: tuple[tuple[str, tuple[_Response, ...]], ...]
    models: tuple[str, ...]
    source: JSONValue


def _piece_bytes(piece: object, where: str) -> bytes:
    """One piece of a body: a string (UTF-8), bytes, or an object form."""
    if isinstance(piece, bytes):
        return piece
    if isinstance(piece, str):
        return piece.encode("utf-8")
    if isinstance(piece, Mapping):
        keys = set(piece)
        if keys == {"hex"}:
            try:
                return bytes.fromhex(str(piece["hex"]))
            except ValueError as exc:
                raise ScriptError(f"{where}: bad hex: {exc}") from None
        if keys == {"b64"}:
            try:
                return base64.b64decode(str(piece["b64"]), validate=True)
            except ValueError as exc:
                raise ScriptError(f"{where}: bad base64: {exc}") from None
        if keys == {"repeat", "count"}:
            count = piece["count"]
            if not isinstance(count, int) or count < 0:
                raise ScriptError(f"{where}: count must be a non-negative integer")
            return _piece_bytes(piece["repeat"], where) * count
        if "data" in keys and keys <= {"data", "event", "id"}:
            return _sse_event(piece["data"], piece.get("event"), piece.get("id"))
        if keys == {"concat"} and isinstance(piece["concat"], list):
            return b"".join(_piece_bytes(p, where) for p in piece["concat"])
    raise ScriptError(
        f"{where}: a piece is a string or one of {{hex}}, {{b64}}, {{repeat, count}}, "
        f"{{data[, event, id]}}, {{concat}}; got {piece!r}"
    )


def _compact(value: JSONValue) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _sse_event(data: JSONValue, event: object = None, event_id: object = None) -> bytes:
    text = data if isinstance(data, str) else _compact(data)
    lines = []
    if event is not None:
        lines.append(f"event: {event}")
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in text.split("\n"))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def _tool_call_deltas(calls: object, where: str) -> list[list[dict[str, Any]]]:
    """The tool_calls deltas of each chunk: one chunk per argument piece of each call."""
    if not isinstance(calls, list):
        raise ScriptError(f"{where}: tool_calls must be a list")
    chunks: list[list[dict[str, Any]]] = []
    for position, call in enumerate(calls):
        if not isinstance(call, Mapping):
            raise ScriptError(f"{where}: each tool call is an object")
        unknown = set(call) - {"id", "name", "arguments", "index"}
        if unknown:
            raise ScriptError(f"{where}: unknown tool call keys {sorted(unknown)}")
        index = call.get("index", position)
        call_id = call.get("id", f"call_{position}")
        name = call.get("name")
        arguments = call.get("arguments", "")
        # An explicit null index or name is left out of the deltas (servers that omit them).
        first: dict[str, Any] = {} if index is None else {"index": index}
        first.update(id=call_id, type="function")
        function: dict[str, Any] = {} if name is None else {"name": name}
        first["function"] = function
        more: dict[str, Any] = {} if index is None else {"index": index}
        if isinstance(arguments, str):
            function["arguments"] = arguments
            chunks.append([first])
        elif isinstance(arguments, list) and all(isinstance(a, str) for a in arguments):
            function["arguments"] = ""
            chunks.append([first])
            chunks.extend([{**more, "function": {"arguments": a}}] for a in arguments)
        else:
            raise ScriptError(f"{where}: tool call arguments are a string or a list of strings")
    return chunks


def _strings(value: object, key: str, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ScriptError(f"{where}: {key} must be a string or a list of strings")


def _convenience(spec: Mapping[str, Any], where: str) -> tuple[list[bytes], str]:
    """Turn text / reasoning / tool_calls / usage / finish_reason into SSE pieces or one JSON."""
    model = spec.get("model", DEFAULT_MODEL)
    chunk_id = spec.get("id", "chatcmpl-mock")
    text = _strings(spec.get("text"), "text", where)
    reasoning = _strings(spec.get("reasoning"), "reasoning", where)
    reasoning_field = spec.get("reasoning_field", "reasoning_content")
    calls = spec.get("tool_calls") or []
    usage = spec.get("usage")
    default_finish = "tool_calls" if calls else "stop"
    finish = spec.get("finish_reason", default_finish)
    if spec.get("stream", True) is False:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
        if reasoning:
            message[reasoning_field] = "".join(reasoning)
        if calls:
            merged = []
            for deltas in _tool_call_deltas(calls, where):
                for delta in deltas:
                    if "id" in delta:
                        merged.append(json.loads(_compact(delta)))
                    else:
                        merged[-1]["function"]["arguments"] += delta["function"]["arguments"]
            message["tool_calls"] = merged
        body: dict[str, Any] = {
            "id": chunk_id,
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        }
        if usage is not None:
            body["usage"] = usage
        return [_compact(body).encode("utf-8")], "application/json"

    def chunk(delta: dict[str, Any], finish_reason: object = None) -> bytes:
        return _sse_event(
            {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
        )

    pieces = [chunk({reasoning_field: r}) for r in reasoning]
    pieces += [chunk({"content": t}) for t in text]
    pieces += [chunk({"tool_calls": deltas}) for deltas in _tool_call_deltas(calls, where)]
    if finish is not None:
        pieces.append(chunk({}, finish))
    if usage is not None:
        pieces.append(
            _sse_event(
                {
                    "id": chunk_id,
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        )
    if spec.get("done", True):
        pieces.append(b"data: [DONE]\n\n")
    return pieces, "text/event-stream"


def _headers(value: object, where: str) -> list[tuple[str, str]]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, list) and all(
        isinstance(p, list | tuple) and len(p) == 2 for p in value
    ):
        items = [(p[0], p[1]) for p in value]
    else:
        raise ScriptError(f"{where}: headers are an object or a list of [name, value] pairs")
    out = []
    for name, val in items:
        if not isinstance(name, str) or not isinstance(val, str | int | float):
            raise ScriptError(f"{where}: header {name!r} must map a string to a string")
        text = str(val)
        if any(c in f"{name}{text}" for c in "\r\n\0"):
            raise ScriptError(f"{where}: header {name!r} contains CR, LF or NUL")
        out.append((name, text))
    return out


def _ms(spec: Mapping[str, Any], key: str, where: str) -> float:
    value = spec.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ScriptError(f"{where}: {key} must be a non-negative number of milliseconds")
    return float(value) / 1000.0


def _compile_response(spec: object, where: str) -> _Response:
    if not isinstance(spec, Mapping):
        raise ScriptError(f"{where}: a response is an object")
    unknown = set(spec) - _RESPONSE_KEYS
    if unknown:
        raise ScriptError(f"{where}: unknown response keys {sorted(unknown)}")
    forms = [k for k in ("sse", "json", "body") if k in spec]
    if len(forms) > 1 or (forms and _CONVENIENCE_KEYS & set(spec)):
        raise ScriptError(f"{where}: use one of sse, json, body or the convenience keys")
    status = spec.get("status", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 999:
        raise ScriptError(f"{where}: status must be an integer HTTP status")
    if "sse" in spec:
        raw = spec["sse"]
        if not isinstance(raw, list):
            raise ScriptError(f"{where}: sse is a list of pieces")
        pieces = [_piece_bytes(p, f"{where}.sse[{i}]") for i, p in enumerate(raw)]
        content_type = "text/event-stream"
        transfer = "chunked"
    elif "json" in spec:
        pieces = [_compact(spec["json"]).encode("utf-8")]
        content_type = "application/json"
        transfer = "content-length"
    elif "body" in spec:
        raw = spec["body"]
        items = raw if isinstance(raw, list) else [raw]
        pieces = [_piece_bytes(p, f"{where}.body") for p in items]
        content_type = "text/plain; charset=utf-8"
        transfer = "content-length"
    else:
        pieces, content_type = _convenience(spec, where)
        transfer = "chunked" if content_type == "text/event-stream" else "content-length"
    pieces = [p for p in pieces if p]
    transfer = spec.get("transfer", transfer)
    if transfer not in ("chunked", "content-length", "close"):
        raise ScriptError(f"{where}: transfer is chunked, content-length or close")
    headers = _headers(spec.get("headers"), where)
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.insert(0, ("content-type", content_type))
        if content_type == "text/event-stream":
            headers.insert(1, ("cache-control", "no-cache"))
    stall = spec.get("stall")
    if stall is True or stall == "headers":
        stall = 0
    elif stall is False:
        stall = None
    for key, value in (("stall", stall), ("drop_after", spec.get("drop_after"))):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= len(pieces)
        ):
            raise ScriptError(
                f"{where}: {key} is a piece count between 0 and {len(pieces)} (0 = after headers)"
            )
    drop_before_headers = spec.get("drop_before_headers", False)
    if not isinstance(drop_before_headers, bool):
        raise ScriptError(f"{where}: drop_before_headers is true or false")
    return _Response(
        status=status,
        headers=tuple(headers),
        pieces=tuple(pieces),
        transfer=transfer,
        delay_before_headers=_ms(spec, "delay_before_headers_ms", where),
        delay=_ms(spec, "delay_ms", where),
        stall=stall,
        drop_after=spec.get("drop_after"),
        drop_before_headers=drop_before_headers,
        drop_reset=bool(spec.get("drop_reset", False)),
        keep_alive=bool(spec.get("keep_alive", True)),
    )


def _compile_list(value: object, where: str) -> tuple[_Response, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ScriptError(f"{where}: at least one response is needed")
    return tuple(_compile_response(item, f"{where}[{i}]") for i, item in enumerate(items))


def compile_script(script: object) -> _Script:
    """Validate a script (see docs/testing.md) and turn it into the server's internal form.

    Accepted shapes: None (a demo turn), a list of responses, one response object, or an object
    with ``responses`` (served in order, the last one repeats), ``routes`` (path prefix ->
    responses, the longest matching prefix wins) and ``models`` (ids listed by ``GET .../models``).
    """
    if script is None:
        script = {"responses": [{"text": DEFAULT_TEXT, "usage": _demo_usage()}]}
    if isinstance(script, list):
        script = {"responses": script}
    if not isinstance(script, Mapping):
        raise ScriptError("a script is an object or a list of responses")
    if not set(script) <= _SCRIPT_KEYS:
        script = {"responses": [script]}
    responses = _compile_list(script["responses"], "responses") if "responses" in script else ()
    routes_raw = script.get("routes") or {}
    if not isinstance(routes_raw, Mapping):
        raise ScriptError("routes is an object: path prefix -> responses")
    routes = []
    for prefix, value in routes_raw.items():
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise ScriptError(f"route {prefix!r} must be a path starting with '/'")
        routes.append((prefix, _compile_list(value, f"routes[{prefix!r}]")))
    routes.sort(key=lambda item: -len(item[0]))
    models: object = script.get("models", [DEFAULT_MODEL])
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ScriptError("models is a list of strings")
    return _Script(tuple(responses), tuple(routes), tuple(str(m) for m in models), script)


def _demo_usage() -> dict[str, int]:
    return {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}


# -- what the server records -----------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request as the server received it, and what became of its response.

    ``headers`` keeps the wire order, names lowercased. ``json`` is the parsed body (key order
    preserved) or None when the body is not JSON. Times are ``time.monotonic()`` values.
    """

    index: int
    connection: int
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    json: JSONValue
    received_at: float
    route: str | None = None
    status: int | None = None
    completed: bool = False
    client_closed: bool = False
    closed_at: float | None = None
    dropped: bool = False
    finished_at: float | None = None

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)

    def header_values(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key == wanted]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "connection": self.connection,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": [list(h) for h in self.headers],
            "body": self.body.decode("utf-8", errors="replace"),
            "json": self.json,
            "received_at": self.received_at,
            "route": self.route,
            "status": self.status,
            "completed": self.completed,
            "client_closed": self.client_closed,
            "closed_at": self.closed_at,
            "dropped": self.dropped,
            "finished_at": self.finished_at,
        }


@dataclass
class ConnectionRecord:
    """One TCP connection: when it opened and closed, who closed it, which requests it carried."""

    id: int
    opened_at: float
    closed_at: float | None = None
    closed_by: Literal["client", "server"] | None = None
    requests: list[int] = field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.closed_at is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "closed_by": self.closed_by,
            "requests": list(self.requests),
        }


# -- one connection --------------------------------------------------------------------------------


class _BadRequest(Exception):
    pass


class _ClientGone(Exception):
    pass


class _Connection:
    """Reads the socket in the background so a client close is seen at any moment."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        record: ConnectionRecord,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.record = record
        self.buffer = bytearray()
        self.eof = False
        self.server_closing = False
        self.data = asyncio.Event()
        self.gone = asyncio.Event()
        self.current: RecordedRequest | None = None

    async def pump(self) -> None:
        try:
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    break
                self.buffer += chunk
                self.data.set()
                if len(self.buffer) > MAX_BODY_BYTES + MAX_HEAD_BYTES:
                    break
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.eof = True
            now = time.monotonic()
            if self.record.closed_at is None:
                self.record.closed_at = now
                self.record.closed_by = "server" if self.server_closing else "client"
            request = self.current
            if request is not None and not request.completed and not self.server_closing:
                request.client_closed = True
                request.closed_at = now
            self.data.set()
            self.gone.set()

    async def read_until(self, separator: bytes, limit: int) -> bytes | None:
        while True:
            at = self.buffer.find(separator)
            if at >= 0:
                out = bytes(self.buffer[: at + len(separator)])
                del self.buffer[: at + len(separator)]
                return out
            if len(self.buffer) > limit:
                raise _BadRequest("request head too large")
            if self.eof:
                return None
            self.data.clear()
            await self.data.wait()

    async def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if self.eof:
                raise _ClientGone
            self.data.clear()
            await self.data.wait()
        out = bytes(self.buffer[:size])
        del self.buffer[:size]
        return out

    async def sleep(self, seconds: float) -> None:
        """Wait, but stop at once when the client goes away."""
        if seconds <= 0:
            if self.eof:
                raise _ClientGone
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.gone.wait(), seconds)
        if self.eof:
            raise _ClientGone

    async def write(self, data: bytes) -> None:
        if self.eof or self.writer.is_closing():
            raise _ClientGone
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (OSError, RuntimeError) as exc:
            raise _ClientGone from exc

    def close(self, reset: bool = False) -> None:
        self.server_closing = True
        if self.record.closed_at is None:
            self.record.closed_at = time.monotonic()
            self.record.closed_by = "server"
        transport = self.writer.transport
        if reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            self.writer.close()


# -- the server ------------------------------------------------------------------------------------


class MockServer:
    """A scripted OpenAI-compatible server on 127.0.0.1.

    ``async with MockServer(script) as url:`` runs it on the current event loop; ``with
    MockServer(script) as url:`` (or ``start_in_thread()``) runs it on a background thread. ``url``
    is the base URL, ending in ``/v1``. The script can be replaced at any time (``set_script``) and
    routes added (``add_route``); records stay until ``reset()``.
    """

    def __init__(self, script: object = None, *, port: int = 0) -> None:
        self._script = compile_script(script)
        self._requested_port = port
        self._counters: dict[str | None, int] = {}
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._request_seq = 0
        self._connections: list[ConnectionRecord] = []
        self._live: dict[int, tuple[_Connection, asyncio.Task[None]]] = {}
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._thread_stop: asyncio.Event | None = None
        self.port: int = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` (no path)."""
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL to hand to a client: ``http://127.0.0.1:PORT/v1``."""
        return f"{self.origin}/v1"

    async def start(self) -> str:
        """Start serving on the running loop; returns the base URL."""
        if self._server is not None:
            return self.url
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(
            self._handle, HOST, self._requested_port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.url

    async def stop(self) -> None:
        """Stop listening and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for conn, task in list(self._live.values()):
            conn.close()
            task.cancel()
        tasks = [task for _, task in self._live.values()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def start_in_thread(self) -> str:
        """Serve from a daemon thread with its own event loop; returns the base URL."""
        if self._thread is not None:
            return self.url
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            self._thread_stop = asyncio.Event()
            try:
                await self.start()
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            await self._thread_stop.wait()
            await self.stop()

        self._thread = threading.Thread(
            target=lambda: asyncio.run(serve()), name="brainline-mock-server", daemon=True
        )
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self.url

    def stop_thread(self) -> None:
        """Stop a server started with start_in_thread()."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stop = self._loop, self._thread_stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        thread.join(10)

    def __enter__(self) -> str:
        return self.start_in_thread()

    def __exit__(self, *exc_info: object) -> None:
        self.stop_thread()

    # -- script and records ------------------------------------------------------------------

    def set_script(self, script: object) -> None:
        """Replace the whole script; response counters restart."""
        compiled = compile_script(script)
        with self._lock:
            self._script = compiled
            self._counters = {}

    def add_route(self, prefix: str, responses: object) -> None:
        """Add or replace one route (path prefix -> responses); its counter restarts."""
        compiled = compile_script({"routes": {prefix: responses}}).routes[0]
        with self._lock:
            routes = [r for r in self._script.routes if r[0] != prefix] + [compiled]
            routes.sort(key=lambda item: -len(item[0]))
            self._script = _Script(
                self._script.responses, tuple(routes), self._script.models, self._script.source
            )
            self._counters.pop(prefix, None)

    def reset(self) -> None:
        """Forget recorded requests and closed connections; response counters restart."""
        with self._lock:
            self._requests.clear()
            self._connections = [c for c in self._connections if c.open]
            self._counters = {}

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def requests_under(self, prefix: str) -> list[RecordedRequest]:
        """The requests whose path starts with ``prefix``."""
        return [r for r in self.requests if r.path.startswith(prefix)]

    @property
    def last_request(self) -> RecordedRequest | None:
        with self._lock:
            return self._requests[-1] if self._requests else None

    @property
    def connections(self) -> list[ConnectionRecord]:
        with self._lock:
            return list(self._connections)

    @property
    def connections_open(self) -> int:
        """Connections open right now."""
        with self._lock:
            return sum(1 for c in self._connections if c.open)

    @property
    def connections_total(self) -> int:
        """Connections opened since the start (or the last reset, plus those still open)."""
        with self._lock:
            return len(self._connections)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
        """Poll ``predicate`` from any thread until it holds or ``timeout`` s pass."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    async def wait_for_async(self, predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
        """``wait_for`` for coroutines: polls without blocking the event loop."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)

    def snapshot(self, prefix: str = "") -> dict[str, Any]:
        """Requests (those under ``prefix``) and connections as JSON-able data.

        This is what ``GET /__mock/requests[?prefix=/path]`` returns.
        """
        with self._lock:
            return {
                "requests": [r.to_dict() for r in self._requests if r.path.startswith(prefix)],
                "connections": [c.to_dict() for c in self._connections],
                "connections_open": sum(1 for c in self._connections if c.open),
                "connections_total": len(self._connections),
            }

    # -- serving -----------------------------------------------------------------------------

    def _pick(self, method: str, path: str) -> tuple[str | None, _Response | None]:
        with self._lock:
            script = self._script
            route = next((r for r in script.routes if path.startswith(r[0])), None)
            if method == "GET" and path.endswith("/models") and (route is None or route[0] != path):
                return None, None
            if route is not None:
                key, responses = route
            elif script.responses:
                key, responses = None, script.responses
            else:
                return None, _not_found(method, path)
            count = self._counters.get(key, 0)
            self._counters[key] = count + 1
            return key, responses[min(count, len(responses) - 1)]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            record = ConnectionRecord(id=len(self._connections) + 1, opened_at=time.monotonic())
            if self._connections:
                record.id = self._connections[-1].id + 1
            self._connections.append(record)
        conn = _Connection(reader, writer, record)
        pump = asyncio.create_task(self._pump(conn))
        task = asyncio.current_task()
        assert task is not None
        self._live[record.id] = (conn, task)
        try:
            await self._serve_connection(conn)
        except (_ClientGone, asyncio.CancelledError):
            pass
        except _BadRequest as exc:
            with contextlib.suppress(_ClientGone):
                await conn.write(_simple_response(400, {"error": {"message": str(exc)}}))
        except Exception:  # never let one bad connection take the server down
            pass
        finally:
            conn.close()
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump
            self._live.pop(record.id, None)

    async def _pump(self, conn: _Connection) -> None:
        await conn.pump()

    async def _serve_connection(self, conn: _Connection) -> None:
        while True:
            head = await conn.read_until(b"\r\n\r\n", MAX_HEAD_BYTES)
            if head is None:
                return
            head = head.lstrip(b"\r\n")
            if not head.strip():
                continue
            method, target, headers = _parse_head(head)
            body = await _read_body(conn, headers)
            split = urlsplit(target)
            path, query = split.path or "/", split.query
            try:
                parsed: JSONValue = json.loads(body) if body else None
            except ValueError:
                parsed = None
            client_close = any(n == "connection" and "close" in v.lower() for n, v in headers)
            if path.startswith(CONTROL_PREFIX):
                await conn.write(self._control(method, path, query, body))
                if client_close:
                    return
                continue
            with self._lock:
                self._request_seq += 1
                request = RecordedRequest(
                    index=self._request_seq,
                    connection=conn.record.id,
                    method=method,
                    path=path,
                    query=query,
                    headers=headers,
                    body=body,
                    json=parsed,
                    received_at=time.monotonic(),
                )
                self._requests.append(request)
                conn.record.requests.append(request.index)
            conn.current = request
            route, response = self._pick(method, path)
            request.route = route
            if response is None:
                response = _models_response(self._script.models)
            request.status = response.status
            keep = await self._respond(conn, request, response)
            conn.current = None
            if not keep or client_close:
                return

    async def _respond(
        self, conn: _Connection, request: RecordedRequest, response: _Response
    ) -> bool:
        """Write one response; returns whether the connection may carry another request."""
        await conn.sleep(response.delay_before_headers)
        if response.drop_before_headers:  # the request was read; not one byte of an answer
            request.dropped = True
            request.finished_at = time.monotonic()
            conn.close(reset=response.drop_reset)
            return False
        pieces = response.pieces
        keep_alive = response.keep_alive and response.transfer != "close"
        lines = [f"HTTP/1.1 {response.status} {_reason(response.status)}"]
        lines += [f"{name}: {value}" for name, value in response.headers]
        names = {name.lower() for name, _ in response.headers}
        if response.transfer == "chunked" and "transfer-encoding" not in names:
            lines.append("transfer-encoding: chunked")
        elif response.transfer == "content-length" and "content-length" not in names:
            lines.append(f"content-length: {sum(len(p) for p in pieces)}")
        if not keep_alive and "connection" not in names:
            lines.append("connection: close")
        await conn.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        chunked = response.transfer == "chunked"
        for count in range(len(pieces) + 1):
            if response.drop_after == count:
                if count > 0:  # delay_ms also separates the last piece from the drop
                    await conn.sleep(response.delay)
                request.dropped = True
                request.finished_at = time.monotonic()
                conn.close(reset=response.drop_reset)
                return False
            if response.stall == count:
                await conn.gone.wait()
                raise _ClientGone
            if count == len(pieces):
                break
            if count > 0:
                await conn.sleep(response.delay)
            piece = pieces[count]
            await conn.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            await conn.write(b"0\r\n\r\n")
        request.completed = True
        request.finished_at = time.monotonic()
        return keep_alive

    def _control(self, method: str, path: str, query: str, body: bytes) -> bytes:
        """``/__mock/...``: read the records or change the script over HTTP (from any language)."""
        name = path[len(CONTROL_PREFIX) :].strip("/")
        try:
            if method == "GET" and name == "requests":
                prefix = parse_qs(query).get("prefix", [""])[0]
                return _simple_response(200, self.snapshot(prefix))
            if method == "POST" and name == "script":
                self.set_script(json.loads(body or b"null"))
                return _simple_response(200, {"ok": True})
            if method == "POST" and name == "route":
                payload = json.loads(body or b"null")
                if not isinstance(payload, dict) or not isinstance(payload.get("prefix"), str):
                    raise ScriptError('a route is {"prefix": "/path/", "responses": ...}')
                self.add_route(payload["prefix"], payload.get("responses"))
                return _simple_response(200, {"ok": True})
            if method == "POST" and name == "reset":
                self.reset()
                return _simple_response(200, {"ok": True})
        except (ValueError, ScriptError) as exc:
            return _simple_response(400, {"error": {"message": str(exc)}})
        return _simple_response(404, {"error": {"message": f"no control endpoint {path}"}})


# -- HTTP helpers ----------------------------------------------------------------------------------


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _parse_head(head: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(f"bad request line {lines[0]!r}")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(f"bad header line {line!r}")
        headers.append((name.lower(), value.strip(" \t")))
    return parts[0], parts[1], headers


async def _read_body(conn: _Connection, headers: Sequence[tuple[str, str]]) -> bytes:
    values = dict(headers)
    if values.get("expect", "").lower() == "100-continue":
        await conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in values.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_line = await conn.read_until(b"\r\n", 4096)
            if size_line is None:
                raise _ClientGone
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise _BadRequest("bad chunk size") from None
            if size == 0:
                while True:  # trailers, up to the blank line
                    trailer = await conn.read_until(b"\r\n", MAX_HEAD_BYTES)
                    if trailer is None:
                        raise _ClientGone
                    if trailer == b"\r\n":
                        return bytes(body)
            if len(body) + size > MAX_BODY_BYTES:
                raise _BadRequest("request body too large")
            body += await conn.read_exactly(size)
            await conn.read_exactly(2)
    length = values.get("content-length")
    if length is None:
        return b""
    try:
        size = int(length)
    except ValueError:
        raise _BadRequest("bad content-length") from None
    if not 0 <= size <= MAX_BODY_BYTES:
        raise _BadRequest("bad content-length")
    return await conn.read_exactly(size)


def _simple_response(status: int, payload: JSONValue) -> bytes:
    body = _compact(payload).encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {_reason(status)}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _not_found(method: str, path: str) -> _Response:
    return _compile_response(
        {
            "status": 404,
            "json": {
                "error": {
                    "message": f"brainline mock server: no scripted response for {method} {path}",
                    "type": "not_found",
                }
            },
        },
        "not_found",
    )


def _models_response(models: Sequence[str]) -> _Response:
    return _compile_response(
        {
            "json": {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "brainline"}
                    for m in models
                ],
            }
        },
        "models",
    )
