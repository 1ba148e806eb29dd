"""What Python's throughput would be with brainline's own HTTP/1.1 transport, as TypeScript has.

    python tests/bench/py_transport_estimate.py [ROUNDS]

The evidence behind the one Python target `nox -s bench` misses (<= 0.7x raw httpx on a
20,000-chunk stream): brainline's real SSEDecoder and TurnState, fed by a minimal HTTP/1.1
protocol on asyncio that hands over one body piece per socket read (as typescript/src/core/
transport.ts does), against raw httpx and brainline on httpx, interleaved, on one reused
connection each. Only what the bench server sends is handled (Content-Length-free chunked
answers); it is a measurement, not a transport.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import hotspots  # noqa: E402
import py_bench  # noqa: E402

from brainline._core.chunks import TurnState  # noqa: E402
from brainline._core.sse import SSEDecoder  # noqa: E402

SCENARIO = "burst/20000"
BODY = json.dumps({"model": "bench", "messages": py_bench.MESSAGES, "stream": True}).encode()


class ChunkedProtocol(asyncio.Protocol):
    """The body of each chunked answer, one queue item per socket read (None at its end)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.pending = b""
        self.in_head = True
        self.size = -1  # -1: a size line is next; -2: the CRLF after a chunk's data

    def data_received(self, data: bytes) -> None:
        data = self.pending + data
        self.pending = b""
        at = 0
        if self.in_head:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.pending = data
                return
            self.in_head = False
            at = end + 4
        pieces: list[bytes] = []
        while at < len(data):
            if self.size > 0:
                n = min(self.size, len(data) - at)
                pieces.append(data[at : at + n])
                at += n
                self.size -= n
                if self.size == 0:
                    self.size = -2
                continue
            lf = data.find(b"\n", at)
            if lf < 0:
                self.pending = data[at:]
                break
            line, at = data[at:lf], lf + 1
            if self.size == -2:
                self.size = -1
                continue
            self.size = int(line.split(b";")[0], 16)
            if self.size == 0:  # the last chunk (the bench server sends no trailers)
                if pieces:
                    self.queue.put_nowait(b"".join(pieces))
                self.queue.put_nowait(None)
                self.in_head, self.size, self.pending = True, -1, data[at + 2 :]
                return
        if pieces:
            self.queue.put_nowait(b"".join(pieces))


async def own_turn(protocol: ChunkedProtocol, transport: asyncio.Transport) -> int:
    """One turn through SSEDecoder and TurnState; the number of text events."""
    path = f"/{SCENARIO}/chat/completions".encode()
    transport.write(
        b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path, len(BODY), BODY)
    )
    decoder, state, texts = SSEDecoder(), TurnState("emit"), 0
    while (piece := await protocol.queue.get()) is not None:
        for sse in decoder.decode(piece):
            if sse.data != "[DONE]":
                texts += sum(
                    event["type"] == "text" for event in state.feed_event(sse.event, sse.data)
                )
    return texts


async def main(port: int, rounds: int) -> None:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(ChunkedProtocol, "127.0.0.1", port)
    root = f"http://127.0.0.1:{port}"
    clients = {name: py_bench.ALL[name](root) for name in ("raw httpx", "brainline")}
    samples: dict[str, list[float]] = {"own HTTP/1.1": [], **{name: [] for name in clients}}
    for _ in range(rounds + 1):  # the first round warms up
        start = time.perf_counter()
        texts = await own_turn(protocol, transport)
        samples["own HTTP/1.1"].append(time.perf_counter() - start)
        assert texts == 20000, texts
        for name, client in clients.items():
            start = time.perf_counter()
            await py_bench.drain(client.turn(SCENARIO))
            samples[name].append(time.perf_counter() - start)
    raw = statistics.median(samples["raw httpx"][1:])
    for name, values in samples.items():
        median = statistics.median(values[1:])
        print(f"{name:14s} {median * 1e3:8.1f} ms  {median / raw:.2f}x raw httpx")
    transport.close()
    for client in clients.values():
        await client.close()


if __name__ == "__main__":
    server, port = hotspots.start_server()
    try:
        asyncio.run(main(port, int(sys.argv[1]) if len(sys.argv) > 1 else 10))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait()
