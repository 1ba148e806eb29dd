"""The mock server on its own: raw sockets for the exact bytes, httpx for a real client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import brainline.testing
from brainline.testing import MockServer, ScriptError, compile_script

CHAT = "/v1/chat/completions"
REQUEST_BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'


def _port(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


def _request(path: str = CHAT, body: bytes = REQUEST_BODY, extra: str = "") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-Trace: one\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers


async def _read_chunks(reader: asyncio.StreamReader) -> list[bytes]:
    """Read a chunked body; one list item per chunk (the server writes one chunk per piece)."""
    chunks = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        if size == 0:
            assert await reader.readexactly(2) == b"\r\n"
            return chunks
        chunks.append(await reader.readexactly(size))
        assert await reader.readexactly(2) == b"\r\n"


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status, headers = await _read_head(reader)
    if headers.get("transfer-encoding") == "chunked":
        return status, headers, b"".join(await _read_chunks(reader))
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    return status, headers, await reader.read()


async def _settle(server: MockServer, predicate: object, timeout: float = 2.0) -> None:
    assert callable(predicate)
    assert await server.wait_for_async(predicate, timeout), "condition not reached in time"


# -- raw sockets: exact bytes ----------------------------------------------------------------------


async def test_raw_pieces_are_chunks_written_as_is() -> None:
    pieces = ['data: {"a":', "1}\r\n\r\n", ": comment\n", "data: [DONE]\n\n"]
    async with MockServer({"sse": pieces, "delay_ms": 5}) as url:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
        writer.write(_request())
        status, headers = await _read_head(reader)
        assert status == 200
        assert headers["content-type"] == "text/event-stream"
        assert headers["transfer-encoding"] == "chunked"
        assert await _read_chunks(reader) == [p.encode() for p in pieces]
        writer.close()


async def test_piece_forms() -> None:
    script = {
        "sse": [
            {"hex": "e2 98"},
            {"b64": "lQ=="},
            {"repeat": "ab", "count": 3},
            {"data": {"k": "v"}},
            {"data": "line1\nline2", "event": "error", "id": "7"},
            {"concat": ["x", {"hex": "0a"}]},
        ]
    }
    async with MockServer(script) as url:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
        writer.write(_request())
        await _read_head(reader)
        assert await _read_chunks(reader) == [
            b"\xe2\x98",
            b"\x95",
            b"ababab",
            b'data: {"k":"v"}\n\n',
            b"event: error\nid: 7\ndata: line1\ndata: line2\n\n",
            b"x\n",
        ]
        writer.close()


async def test_keep_alive_and_pipelining_on_one_connection() -> None:
    async with MockServer([{"text": ["a"]}, {"text": ["b"]}, {"json": {"n": 3}}]) as url:
        server_port = _port(url)
        reader, writer = await asyncio.open_connection("127.0.0.1", server_port)
        for _ in range(3):
            writer.write(_request())
            status, _, body = await _read_response(reader)
            assert status == 200 and body
        writer.write(_request() + _request())  # two requests in one write (pipelined)
        bodies = [(await _read_response(reader))[2] for _ in range(2)]
        assert bodies == [b'{"n":3}', b'{"n":3}']  # the last response repeats
        writer.close()
    # the server is stopped; records survive
    assert server_port


async def test_records_requests_and_connections() -> None:
    server = MockServer({"text": ["x"]})
    url = await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
        writer.write(_request(CHAT + "?a=1&b=2", extra="X-Trace: two\r\n"))
        await _read_response(reader)
        writer.write(_request(CHAT, body=b"not json"))
        await _read_response(reader)
        writer.close()
        await _settle(server, lambda: server.connections_open == 0)
        first, second = server.requests
        assert (first.method, first.path, first.query) == ("POST", CHAT, "a=1&b=2")
        assert first.headers[:2] == [("host", "127.0.0.1"), ("content-type", "application/json")]
        assert first.header_values("x-trace") == ["one", "two"]
        assert first.body == REQUEST_BODY
        assert list(first.json) == ["model", "messages", "stream"]
        assert second.json is None and second.body == b"not json"
        assert first.connection == second.connection
        assert first.completed and not first.client_closed and first.closed_at is None
        assert server.connections_total == 1
        (conn,) = server.connections
        assert conn.closed_by == "client" and conn.requests == [first.index, second.index]
        assert json.loads(json.dumps(server.snapshot()))["connections_total"] == 1
    finally:
        await server.stop()


async def test_chunked_request_body_and_expect_continue() -> None:
    async with MockServer({"json": {}}) as url:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        status, _ = await _read_head(reader)
        assert status == 100
        writer.write(b'3\r\n{"a\r\n4\r\n":1}\r\n0\r\n\r\n')
        status, _, body = await _read_response(reader)
        assert status == 200 and body == b"{}"
        writer.close()


async def test_transfer_close_and_content_length() -> None:
    script = {
        "routes": {
            "/close/": {"sse": ["a", "b"], "transfer": "close"},
            "/len/": {"sse": ["a", "b"], "transfer": "content-length"},
        }
    }
    async with MockServer(script) as url:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
        writer.write(_request("/len/v1/chat/completions"))
        _, headers, body = await _read_response(reader)
        assert headers["content-length"] == "2" and body == b"ab"
        writer.write(_request("/close/v1/chat/completions"))
        _, headers, body = await _read_response(reader)
        assert headers["connection"] == "close" and body == b"ab"
        writer.close()


async def test_drop_after_closes_without_terminating_chunk() -> None:
    async with MockServer({"sse": ["one\n", "two\n", "three\n"], "drop_after": 2}) as url:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
        writer.write(_request())
        await _read_head(reader)
        rest = await reader.read()  # until the server closes
        assert rest == b"4\r\none\n\r\n4\r\ntwo\n\r\n"
        writer.close()


async def test_bad_request_gets_400_and_server_survives() -> None:
    async with MockServer({"json": {"ok": True}}) as url:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
        writer.write(b"NONSENSE\r\n\r\n")
        status, _, _ = await _read_response(reader)
        assert status == 400
        writer.close()
        async with httpx.AsyncClient() as client:
            assert (await client.post(url + "/chat/completions", json={})).json() == {"ok": True}


async def test_clients_vanishing_at_any_moment_do_not_crash_it() -> None:
    rng = random.Random(7)
    script = {"sse": ["data: {}\n\n"] * 5, "delay_ms": 2, "delay_before_headers_ms": 3}
    async with MockServer(script) as url:
        full = _request()
        for _ in range(60):
            _reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
            writer.write(full[: rng.randrange(len(full) + 1)])
            if rng.random() < 0.5:
                await asyncio.sleep(rng.random() * 0.02)
            if rng.random() < 0.3:
                writer.transport.abort()  # RST-like
            else:
                writer.close()
        async with httpx.AsyncClient() as client:
            response = await client.post(url + "/chat/completions", json={})
            assert response.status_code == 200


# -- httpx: a real client --------------------------------------------------------------------------


async def test_convenience_turn_over_httpx() -> None:
    script = {
        "text": ["Hel", "lo"],
        "reasoning": ["think"],
        "tool_calls": [{"id": "c1", "name": "f", "arguments": ['{"a"', ":1}"]}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
        "model": "m1",
    }
    async with MockServer(script) as url, httpx.AsyncClient() as client:
        response = await client.post(url + "/chat/completions", json={"model": "m"})
    datas = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    deltas = [c["choices"][0]["delta"] if c["choices"] else None for c in chunks]
    assert deltas == [
        {"reasoning_content": "think"},
        {"content": "Hel"},
        {"content": "lo"},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "f", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]},
        {},
        None,
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 2}
    assert {c["model"] for c in chunks} == {"m1"}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


async def test_convenience_without_done_or_finish_and_non_stream() -> None:
    script = {
        "routes": {
            "/a/": {"text": ["x"], "done": False, "finish_reason": None},
            "/b/": {
                "text": ["x", "y"],
                "stream": False,
                "usage": {"prompt_tokens": 1},
                "tool_calls": [{"id": "c", "name": "f", "arguments": "{}"}],
            },
        }
    }
    async with MockServer(script) as url, httpx.AsyncClient() as client:
        origin = url.removesuffix("/v1")
        a = await client.post(origin + "/a" + CHAT, json={})
        b = await client.post(origin + "/b" + CHAT, json={})
    assert "[DONE]" not in a.text and '"finish_reason":null' in a.text
    assert a.text.count("data: ") == 1
    assert b.headers["content-type"] == "application/json"
    body = b.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "xy"
    assert body["choices"][0]["message"]["tool_calls"][0]["function"] == {
        "name": "f",
        "arguments": "{}",
    }
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["usage"] == {"prompt_tokens": 1}


async def test_status_headers_json_and_body() -> None:
    script = {
        "routes": {
            "/429/": {
                "status": 429,
                "headers": {"Retry-After": "2"},
                "json": {"error": {"message": "slow down"}},
            },
            "/raw/": {"status": 502, "body": "Bad gateway ☹"},
        }
    }
    async with MockServer(script) as url, httpx.AsyncClient() as client:
        origin = url.removesuffix("/v1")
        limited = await client.post(origin + "/429" + CHAT, json={})
        raw = await client.post(origin + "/raw" + CHAT, json={})
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "2"
    assert limited.headers["content-type"] == "application/json"
    assert limited.json() == {"error": {"message": "slow down"}}
    assert raw.status_code == 502 and raw.text == "Bad gateway ☹"


async def test_responses_in_order_last_repeats_and_routes_count_separately() -> None:
    script = {
        "responses": [{"json": 1}, {"json": 2}],
        "routes": {"/r/": [{"json": "r1"}, {"json": "r2"}], "/r/deeper/": {"json": "deep"}},
    }
    async with MockServer(script) as url, httpx.AsyncClient() as client:
        origin = url.removesuffix("/v1")

        async def get(path: str) -> object:
            return (await client.post(origin + path, json={})).json()

        assert [await get(CHAT) for _ in range(3)] == [1, 2, 2]
        assert [await get("/r" + CHAT) for _ in range(3)] == ["r1", "r2", "r2"]
        assert await get("/r/deeper" + CHAT) == "deep"


async def test_models_and_not_found() -> None:
    script = {"routes": {"/only/": {"json": {}}}, "models": ["a", "b"]}
    async with MockServer(script) as url, httpx.AsyncClient() as client:
        models = await client.get(url + "/models")
        routed = await client.get(url.removesuffix("/v1") + "/only/v1/models")
        missing = await client.post(url + "/chat/completions", json={})
    assert [m["id"] for m in models.json()["data"]] == ["a", "b"]
    assert routed.json()["object"] == "list"
    assert missing.status_code == 404
    assert "no scripted response" in missing.json()["error"]["message"]


async def test_httpx_reuses_one_connection() -> None:
    server = MockServer({"text": ["a", "b"], "usage": {"prompt_tokens": 1}})
    url = await server.start()
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(10):
                async with client.stream("POST", url + "/chat/completions", json={}) as response:
                    async for _chunk in response.aiter_raw():
                        pass
            assert server.connections_total == 1
            assert server.connections_open == 1
        await _settle(server, lambda: server.connections_open == 0)
        assert {r.connection for r in server.requests} == {1}
        assert all(r.completed and not r.client_closed for r in server.requests)
    finally:
        await server.stop()


async def test_delays() -> None:
    script = {"sse": ["a", "b", "c"], "delay_before_headers_ms": 150, "delay_ms": 100}
    async with MockServer(script) as url, httpx.AsyncClient() as client:
        start = time.monotonic()
        async with client.stream("POST", url + "/chat/completions", json={}) as response:
            headers_at = time.monotonic() - start
            arrivals = []
            async for _chunk in response.aiter_raw():
                arrivals.append(time.monotonic() - start)
    assert headers_at >= 0.14
    assert arrivals[-1] - headers_at >= 0.19


@pytest.mark.parametrize("stall", [0, 1, "headers", True])
async def test_stall_holds_until_the_client_closes(stall: object) -> None:
    server = MockServer({"sse": ["data: {}\n\n", "data: [DONE]\n\n"], "stall": stall})
    url = await server.start()
    try:
        async with httpx.AsyncClient(timeout=0.3) as client:
            received = b""
            with pytest.raises(httpx.ReadTimeout):
                async with client.stream("POST", url + "/chat/completions", json={}) as response:
                    async for chunk in response.aiter_raw():
                        received += chunk
            closed_by_client = time.monotonic()
        after_one_piece = stall == 1 and not isinstance(stall, bool)
        expected = b"data: {}\n\n" if after_one_piece else b""
        assert received == expected
        await _settle(server, lambda: server.connections_open == 0)
        (request,) = server.requests
        assert request.client_closed and not request.completed
        assert request.closed_at is not None
        assert request.received_at < request.closed_at <= closed_by_client + 0.5
        assert server.connections[0].closed_by == "client"
    finally:
        await server.stop()


async def test_client_close_during_delay_before_headers_is_recorded() -> None:
    server = MockServer({"text": ["x"], "delay_before_headers_ms": 5000})
    url = await server.start()
    try:
        async with httpx.AsyncClient() as client:
            task = asyncio.create_task(client.post(url + "/chat/completions", json={}))
            await _settle(server, lambda: len(server.requests) == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await _settle(server, lambda: server.requests[0].client_closed)
        assert server.connections_open == 0
    finally:
        await server.stop()


@pytest.mark.parametrize("reset", [False, True])
async def test_drop_after_breaks_the_body_for_httpx(reset: bool) -> None:
    script = {"text": ["a", "b", "c"], "drop_after": 1, "drop_reset": reset}
    server = MockServer(script)
    url = await server.start()
    try:
        async with httpx.AsyncClient() as client:
            received = b""
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                async with client.stream("POST", url + "/chat/completions", json={}) as response:
                    async for chunk in response.aiter_raw():
                        received += chunk
        assert b'"content":"a"' in received and b'"content":"b"' not in received
        (request,) = server.requests
        assert request.dropped and not request.completed and not request.client_closed
        assert server.connections[0].closed_by == "server"
    finally:
        await server.stop()


def test_thread_mode_with_a_sync_client() -> None:
    server = MockServer({"json": {"hello": "thread"}})
    with server as url, httpx.Client() as client:
        assert client.post(url + "/chat/completions", json={"a": 1}).json() == {"hello": "thread"}
        assert server.wait_for(lambda: len(server.requests) == 1)
        server.set_script({"json": "second"})
        assert client.post(url + "/chat/completions", json={}).json() == "second"
        server.add_route("/x/", {"json": "routed"})
        assert client.post(url.removesuffix("/v1") + "/x" + CHAT, json={}).json() == "routed"
    assert server.requests[0].json == {"a": 1}
    assert server.connections_open == 0


async def test_control_endpoints() -> None:
    server = MockServer()
    url = await server.start()
    origin = url.removesuffix("/v1")
    try:
        async with httpx.AsyncClient() as client:
            demo = await client.post(url + "/chat/completions", json={})
            assert "mock server." in demo.text
            set_script = await client.post(origin + "/__mock/script", json={"json": "new"})
            assert set_script.json() == {"ok": True}
            bad = await client.post(origin + "/__mock/script", json={"nonsense": 1})
            assert bad.status_code == 400
            assert (await client.post(url + "/chat/completions", json={})).json() == "new"
            snapshot = (await client.get(origin + "/__mock/requests")).json()
            assert [r["path"] for r in snapshot["requests"]] == [CHAT, CHAT]
            await client.post(origin + "/__mock/reset")
            assert (await client.get(origin + "/__mock/requests")).json()["requests"] == []
    finally:
        await server.stop()


@pytest.mark.parametrize(
    "script",
    [
        {"unknown": 1},
        {"sse": "not a list"},
        {"sse": [], "text": ["both"]},
        {"json": {}, "body": "x"},
        {"status": "200"},
        {"sse": ["a"], "stall": 2},
        {"sse": ["a"], "drop_after": -1},
        {"sse": [{"hex": "zz"}]},
        {"sse": [{"what": 1}]},
        {"headers": {"a": "b\r\nc"}, "json": {}},
        {"routes": {"no-slash": {"json": {}}}},
        {"responses": []},
        {"tool_calls": [{"id": "x", "extra": 1}]},
        {"delay_ms": -5, "json": {}},
        {"transfer": "gzip", "json": {}},
    ],
)
def test_invalid_scripts_are_rejected(script: object) -> None:
    with pytest.raises(ScriptError):
        compile_script(script)


@contextlib.contextmanager
def _cli(*args: str, stdin: int = subprocess.PIPE) -> Iterator[subprocess.Popen[str]]:
    """`python -m brainline.testing ARGS` importing this checkout's brainline; killed if still up."""
    src = Path(brainline.testing.__file__).parents[2]  # the directory brainline imports from
    with subprocess.Popen(
        [sys.executable, "-m", "brainline.testing", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(src)},
        text=True,
    ) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()


def test_cli_prints_the_url_and_stops_at_stdin_eof(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"text": ["from", " cli"]}))
    with _cli("--port", "0", "--script", str(script)) as process:
        assert process.stdout is not None and process.stdin is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        response = httpx.post(url + "/chat/completions", json={})
        assert '"content":" cli"' in response.text
        process.stdin.close()
        assert process.wait(10) == 0


def test_cli_stops_on_sigterm() -> None:
    with _cli("--ignore-stdin", stdin=subprocess.DEVNULL) as process:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        demo = httpx.post(url + "/chat/completions", json={})
        assert "mock server." in demo.text  # the demo turn when there is no script
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0


def test_cli_stopped_by_sigterm_while_watching_stdin_exits_cleanly() -> None:
    """A signal while the stdin watcher waits: no "Fatal Python error" at shutdown."""
    with _cli() as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().startswith("http://127.0.0.1:")
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert "Fatal Python error" not in process.stderr.read()
