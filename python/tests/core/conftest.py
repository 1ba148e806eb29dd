"""A small raw-bytes HTTP/1.1 server on 127.0.0.1 for the client tests, and config builders.

Each test installs a handler: an async function (request, connection) -> keep_alive. It writes
whatever bytes it likes, so the tests control framing, splits, stalls and drops exactly, and the
server records every request, every connection, and when the client closed each connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from brainline._generated.options import LLMConfig


def make_config(**overrides: Any) -> LLMConfig:
    """An LLMConfig with every option unset except what the test gives."""
    values: dict[str, Any] = {
        "provider_key": "openai_compatible",
        "api_key": None,
        "api_key_env": None,
        "base_url": "http://127.0.0.1:9/v1",
        "model": "test-model",
        "timeout": 5.0,
        "extra_headers": None,
        "user_agent": "brainline/test",
        "session_user_prefix": None,
        "session_id_header": None,
        "session_id_prefix": "",
        "session_key_header": None,
        "session_key": None,
        "session_key_factory": None,
        "session_key_from": None,
        # Transport: the spec's defaults, except no retries unless a test asks for them.
        "max_retries": 0,
        "retry_budget": 2.0,
        "stream_options": "auto",
        "max_tokens_field": "auto",
    }
    values.update({f.name: None for f in dataclasses.fields(LLMConfig) if f.name not in values})
    values.update(overrides)
    return LLMConfig(**values)


@dataclass
class Request:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Connection:
    """One accepted connection; `eof_at` is the loop time the client closed it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: int = 0
    eof_at: float | None = None
    chunked: bool = False

    async def head(
        self,
        status: int = 200,
        headers: list[tuple[str, str]] | None = None,
        *,
        chunked: bool = True,
        content_type: str | None = "text/event-stream",
    ) -> None:
        lines = [f"HTTP/1.1 {status} X"]
        if content_type is not None:
            lines.append(f"Content-Type: {content_type}")
        lines += [f"{k}: {v}" for k, v in headers or []]
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        self.chunked = chunked
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self.writer.drain()

    async def send(self, data: bytes) -> None:
        if self.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self.writer.write(data)
        await self.writer.drain()

    async def end(self) -> None:
        if self.chunked:
            self.writer.write(b"0\r\n\r\n")
            await self.writer.drain()

    async def respond(
        self,
        status: int,
        body: bytes,
        headers: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> None:
        extra = [*(headers or []), ("Content-Length", str(len(body)))]
        await self.head(status, extra, chunked=False, content_type=content_type)
        self.writer.write(body)
        await self.writer.drain()

    async def hold(self, timeout: float = 5.0) -> bool:
        """Wait for the client to close the connection; False when it did not within timeout."""
        loop = asyncio.get_running_loop()

        async def to_eof() -> None:
            while await self.reader.read(65536):
                pass

        try:
            await asyncio.wait_for(to_eof(), timeout)
        except asyncio.TimeoutError:
            return False
        except ConnectionError:
            pass
        self.eof_at = loop.time()
        return True

    def reset(self) -> None:
        """Close with a TCP RST instead of a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.close()


Handler = Callable[[Request, Connection], Awaitable[bool]]


async def _default_handler(request: Request, conn: Connection) -> bool:
    await conn.respond(404, b"{}")
    return True


class LoopbackServer:
    def __init__(self) -> None:
        self.handler: Handler = _default_handler
        self.requests: list[Request] = []
        self.connections: list[Connection] = []
        self.request_seen = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for conn in self.connections:
            conn.writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Connection(reader, writer)
        self.connections.append(conn)
        try:
            while conn.eof_at is None:
                request = await self._read_request(reader)
                if request is None:
                    break
                conn.requests += 1
                self.requests.append(request)
                self.request_seen.set()
                if not await self.handler(request, conn):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if conn.eof_at is None:
                conn.eof_at = asyncio.get_running_loop().time()
            writer.close()
            self._tasks.discard(task)

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name, value.strip()))
        length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
        body = await reader.readexactly(length) if length else b""
        return Request(method, path, headers, body, head)


@pytest.fixture
async def server() -> AsyncIterator[LoopbackServer]:
    srv = LoopbackServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def sse(*chunks: Any, done: bool = True) -> bytes:
    """SSE bytes: one `data:` event per chunk (dicts as compact JSON), then `[DONE]`."""
    out = b""
    for chunk in chunks:
        data = chunk if isinstance(chunk, str) else json.dumps(chunk, separators=(",", ":"))
        out += b"data: " + data.encode() + b"\n\n"
    if done:
        out += b"data: [DONE]\n\n"
    return out


def text_chunk(content: str, finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish_reason}]
    }
