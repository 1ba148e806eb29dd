"""The benchmark's loopback server: a minimal HTTP/1.1 OpenAI-compatible SSE server (asyncio
protocols, standard library only), run in its own process and pinned to its own core.

MockServer records everything and is built for correctness, not speed; a fair benchmark needs a
server that costs as little as possible per chunk, so the responses here are prebuilt bytes.

The scenario is the base URL's path: clients use `http://127.0.0.1:PORT/<scenario>/<n>` as their
base URL and POST `<base>/chat/completions`.

| scenario  | response |
|---|---|
| `burst/N` | N text chunks, a finish chunk, a usage chunk and `[DONE]`, all in one write |
| `drip/N`  | the same events, one write each (the loop yields between writes) |
| `tools/N` | one tool call whose arguments come in N pieces, one write |
| `stallhead/0` | no response at all until the client closes (cancel before headers) |
| `stallmid/0`  | headers and one text chunk, then nothing until the client closes |

Every body is sent with `Transfer-Encoding: chunked`, one HTTP chunk per SSE event, as real servers
(uvicorn, vLLM, Ollama) send it, and the connection is kept alive.

`POST /next/<scenario>/<n>` makes the next chat request, whatever its path, answer that scenario
instead: before each measured turn the bench sends one small unmeasured turn on the candidate's
connection (it may reconnect, when a slower candidate's turn outlasted the client's keep-alive
expiry: httpx's is 5 s), then checks that the measured turn opened no connection.

`GET /stats` answers `{"connections": n, "closes": [monotonic_ns, ...], "stalled": n}`: `connections` counts the
connections that carried a chat request (so the bench can check that every candidate reuses its
connection), `closes` the times (CLOCK_MONOTONIC, the clock of Python's `time.monotonic_ns` and
Node's `process.hrtime.bigint`) at which clients closed a stalled response, `stalled` the stalled
responses still open (the bench cancels only once the server holds the request). `POST /reset` clears both.

Run: `python tests/bench/server.py [--cpu N]`; prints the port on its first line of stdout and
serves until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

WORD = "tok "
WORD_CHARS = 5  # every text chunk is "wNNN " (varied: litellm rejects a repeated chunk)
_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def _frame(data: bytes) -> bytes:
    """One SSE event as one HTTP chunk."""
    event = b"data: " + data + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def _chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "bench",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        },
        separators=(",", ":"),
    ).encode()


_USAGE = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench",
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46},
    },
    separators=(",", ":"),
).encode()


def text_frames(n: int) -> list[bytes]:
    frames = [_frame(_chunk({"role": "assistant", "content": ""}))]
    frames += [_frame(_chunk({"content": f"w{i % 1000:03d} "})) for i in range(n)]
    frames.append(_frame(_chunk({}, "stop")))
    frames.append(_frame(_USAGE))
    frames.append(_frame(b"[DONE]"))
    frames.append(b"0\r\n\r\n")
    return frames


def tool_frames(n: int) -> list[bytes]:
    first = {
        "role": "assistant",
        "tool_calls": [
            {
                "index": 0,
                "id": "call_bench",
                "type": "function",
                "function": {"name": "lookup", "arguments": ""},
            }
        ],
    }
    frames = [_frame(_chunk(first))]
    # The pieces join into one JSON object: {"k":"xx...x"}.
    pieces = ['{"k":"'] + ["x"] * (n - 2) + ['"}']
    frames += [
        _frame(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})) for p in pieces
    ]
    frames.append(_frame(_chunk({}, "tool_calls")))
    frames.append(_frame(_USAGE))
    frames.append(_frame(b"[DONE]"))
    frames.append(b"0\r\n\r\n")
    return frames


class Stats:
    def __init__(self) -> None:
        self.connections = 0
        self.closes: list[int] = []
        self.stalled = 0  # stalled responses whose connection is still open
        self.next: str | None = None  # answers the next chat request instead of its path


class BenchProtocol(asyncio.Protocol):
    """One connection: parse requests (Content-Length bodies only), answer from the cache."""

    def __init__(self, stats: Stats, cache: dict[str, list[bytes]]) -> None:
        self.stats = stats
        self.cache = cache
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.counted = False
        self.stalled = False
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stalled:
            self.stats.closes.append(time.monotonic_ns())
            self.stats.stalled -= 1
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length :]
            method, path = head.split(" ", 2)[:2]
            self.answer(method, path)

    def answer(self, method: str, path: str) -> None:
        transport = self.transport
        assert transport is not None
        if path == "/stats":
            body = json.dumps(
                {
                    "connections": self.stats.connections,
                    "closes": self.stats.closes,
                    "stalled": self.stats.stalled,
                }
            ).encode()
            transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            return
        if path == "/reset":
            self.stats.connections = 0
            self.stats.closes.clear()
            transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            return
        if path.startswith("/next/"):
            self.stats.next = path[len("/next/") :]
            transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            return
        parts = path.strip("/").split("/")
        if method != "POST" or len(parts) < 3 or parts[-1] != "completions":
            transport.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            return
        if not self.counted:
            self.counted = True
            self.stats.connections += 1
        scenario, n = parts[0], int(parts[1])
        if self.stats.next is not None:
            scenario, n = self.stats.next.split("/")[0], int(self.stats.next.split("/")[1])
            self.stats.next = None
        if scenario == "stallhead":
            self.stalled = True
            self.stats.stalled += 1
            return
        if scenario == "stallmid":
            self.stalled = True
            self.stats.stalled += 1
            transport.write(_HEAD + _frame(_chunk({"content": WORD})))
            return
        key = f"{scenario}/{n}"
        frames = self.cache.get(key)
        if frames is None:
            frames = tool_frames(n) if scenario == "tools" else text_frames(n)
            self.cache[key] = frames
        if scenario == "drip":
            self.task = asyncio.ensure_future(self.drip(frames))
        else:
            transport.write(_HEAD + b"".join(frames))

    async def drip(self, frames: list[bytes]) -> None:
        transport = self.transport
        assert transport is not None
        transport.write(_HEAD)
        for frame in frames:
            await asyncio.sleep(0)
            if transport.is_closing():
                return
            transport.write(frame)


async def serve(port: int) -> None:
    stats = Stats()
    cache: dict[str, list[bytes]] = {}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: BenchProtocol(stats, cache), "127.0.0.1", port, backlog=1024
    )
    sock = server.sockets[0]
    print(sock.getsockname()[1], flush=True)
    stdin_closed = loop.create_future()

    def on_stdin() -> None:
        if not sys.stdin.buffer.read1(4096) and not stdin_closed.done():  # type: ignore[attr-defined]
            stdin_closed.set_result(None)

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    try:
        await stdin_closed
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None, help="pin the server to this core")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
