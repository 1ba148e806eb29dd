"""BaseLLM against a real HTTP server on 127.0.0.1: the request on the wire, the events, the
errors, connection reuse, timeouts and barge-in (the server must see the close)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any, cast

import httpx
import pytest

from brainline._core.client import BaseLLM
from brainline._core.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConfigError,
    StreamError,
)
from brainline._core.events import Event, ToolCall, Turn, Usage
from brainline._core.session import SessionContext
from brainline._generated.constants import KEEPALIVE_EXPIRY

from .conftest import (
    Connection,
    Handler,
    LoopbackServer,
    Request,
    make_config,
    sse,
    text_chunk,
)

MESSAGES = [{"role": "user", "content": "Caffè ☕?"}]
KEY = "sk-test-secret-key-123"
CALLER = "+15551234567"
CLOSE_WITHIN = 0.1  # seconds between the barge-in and the server seeing the close


def make_llm(server: LoopbackServer, **overrides: Any) -> BaseLLM:
    return BaseLLM(make_config(base_url=server.base_url, **overrides))


async def collect(stream: AsyncIterator[Event]) -> list[Event]:
    return [plain(event) async for event in stream]


def plain(event: Event) -> Event:
    """The event without the finish event's metrics record (times; test_metrics.py checks it)."""
    if event["type"] == "finish" and "metrics" in event:
        return cast(Event, {k: v for k, v in event.items() if k != "metrics"})
    return event


def serve(
    *pieces: bytes,
    status: int = 200,
    headers: list[tuple[str, str]] | None = None,
    content_type: str = "text/event-stream",
    delay: float = 0.0,
) -> Handler:
    """A handler sending the pieces as chunks of a chunked body, then ending it (keep-alive)."""

    async def handler(request: Request, conn: Connection) -> bool:
        await conn.head(status, headers, content_type=content_type)
        for piece in pieces:
            if delay:
                await asyncio.sleep(delay)
            await conn.send(piece)
        await conn.end()
        return True

    return handler


def types(events: list[Event]) -> list[str]:
    return [e["type"] for e in events]


# -- the request -------------------------------------------------------------------------------


async def test_request_line_headers_and_body_in_contract_order(server: LoopbackServer) -> None:
    server.handler = serve(sse(text_chunk("ok")))
    llm = make_llm(
        server,
        api_key=KEY,
        extra_headers={"X-Extra": "1"},
        session_user_prefix="user-",
        session_id_header="X-Session-Id",
        session_id_prefix="call-",
        session_key_header="X-Memory",
        session_key_from="caller_hash",
        temperature=0.5,
        max_tokens=10,
        top_p=1.0,
        frequency_penalty=-1,
        presence_penalty=0,
        stop=("a", "b"),
        seed=7,
        response_format={"type": "json_object"},
        parallel_tool_calls=False,
        tool_choice="auto",
    )
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    async with llm:
        await collect(llm.stream(MESSAGES, tools, call_id="42", caller=CALLER, callee="+1800"))
    [request] = server.requests
    assert request.raw_head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert [name for name, _ in request.headers] == [
        "Host",
        "Content-Type",
        "Accept",
        "User-Agent",
        "Authorization",
        "X-Extra",
        "X-Session-Id",
        "X-Memory",
        "Content-Length",
    ]
    assert request.headers[1:-1] == [
        ("Content-Type", "application/json"),
        ("Accept", "text/event-stream"),
        ("User-Agent", "brainline/test"),
        ("Authorization", f"Bearer {KEY}"),
        ("X-Extra", "1"),
        ("X-Session-Id", "call-42"),
        ("X-Memory", "patter-caller-8a59780bb8cd2ba0"),
    ]
    expected = (
        '{"model":"test-model","messages":[{"role":"user","content":"Caffè ☕?"}],'
        '"stream":true,"stream_options":{"include_usage":true},'
        '"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],'
        '"temperature":0.5,"max_completion_tokens":10,"top_p":1.0,"frequency_penalty":-1,'
        '"presence_penalty":0,"stop":["a","b"],"seed":7,"response_format":{"type":"json_object"},'
        '"parallel_tool_calls":false,"tool_choice":"auto","user":"user-42"}'
    )
    assert request.body == expected.encode()
    assert request.header("Content-Length") == str(len(request.body))
    raw = request.raw_head + request.body
    assert CALLER.encode() not in raw and b"+1800" not in raw


async def test_minimal_request_keyless_has_no_authorization(server: LoopbackServer) -> None:
    server.handler = serve(sse(text_chunk("ok")))
    for key in (None, ""):
        llm = make_llm(server, api_key=key, session_id_header="X-Sid", session_key_header="X-K")
        await collect(llm.stream(MESSAGES, []))
        await llm.aclose()
    for request in server.requests:
        assert [n for n, _ in request.headers] == [
            "Host",
            "Content-Type",
            "Accept",
            "User-Agent",
            "Content-Length",
        ]
        assert request.json() == {
            "model": "test-model",
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        assert list(request.json()) == ["model", "messages", "stream", "stream_options"]


async def test_extra_headers_override_in_place(server: LoopbackServer) -> None:
    server.handler = serve(sse(text_chunk("ok")))
    llm = make_llm(
        server,
        api_key=KEY,
        extra_headers={"user-agent": "mine/1", "X-A": "a", "accept": "*/*"},
        session_id_header="x-a",
    )
    await collect(llm.stream(MESSAGES, call_id="9"))
    await llm.aclose()
    assert server.requests[0].headers[1:-1] == [
        ("Content-Type", "application/json"),
        ("accept", "*/*"),
        ("user-agent", "mine/1"),
        ("Authorization", f"Bearer {KEY}"),
        ("x-a", "9"),
    ]


@pytest.mark.parametrize("suffix", ["", "/", "//"])
async def test_one_slash_between_base_url_and_path(server: LoopbackServer, suffix: str) -> None:
    server.handler = serve(sse(text_chunk("ok")))
    llm = BaseLLM(make_config(base_url=server.base_url + suffix))
    await collect(llm.stream(MESSAGES))
    await llm.aclose()
    assert server.requests[0].path == "/v1/chat/completions"


async def test_user_and_session_id_only_with_a_call_id(server: LoopbackServer) -> None:
    server.handler = serve(sse(text_chunk("ok")))
    llm = make_llm(server, session_user_prefix="u-", session_id_header="X-Sid")
    await collect(llm.stream(MESSAGES))
    await collect(llm.stream(MESSAGES, call_id=""))
    await collect(llm.stream(MESSAGES, call_id="c"))
    await llm.aclose()
    first, second, third = server.requests
    for request in (first, second):
        assert "user" not in request.json() and request.header("X-Sid") is None
    assert third.json()["user"] == "u-c" and third.header("X-Sid") == "c"


async def test_session_key_factory_header(server: LoopbackServer) -> None:
    server.handler = serve(sse(text_chunk("ok")))
    seen: list[SessionContext] = []

    def factory(ctx: SessionContext) -> str | None:
        seen.append(ctx)
        return None if ctx.call_id == "none" else f"mem-{ctx.caller_hash}"

    llm = make_llm(server, session_key_header="X-Memory", session_key_factory=factory)
    await collect(llm.stream(MESSAGES, call_id="a", caller=CALLER, callee="+1800"))
    await collect(llm.stream(MESSAGES, call_id="none", caller=CALLER))
    await llm.aclose()
    assert seen[0] == SessionContext("a", CALLER, "+1800", "8a59780bb8cd2ba0")
    assert server.requests[0].header("X-Memory") == "mem-8a59780bb8cd2ba0"
    assert server.requests[1].header("X-Memory") is None


async def test_static_session_key_header(server: LoopbackServer) -> None:
    server.handler = serve(sse(text_chunk("ok")))
    llm = make_llm(server, session_key_header="X-Memory", session_key="static-key")
    await collect(llm.stream(MESSAGES))
    await llm.aclose()
    assert server.requests[0].header("X-Memory") == "static-key"


async def test_non_ascii_header_values_go_out_as_utf8(server: LoopbackServer) -> None:
    server.handler = serve(sse(text_chunk("ok")))
    llm = make_llm(server, session_id_header="X-Sid")
    await collect(llm.stream(MESSAGES, call_id="appel-é"))
    await llm.aclose()
    assert "X-Sid: appel-é".encode() in server.requests[0].raw_head


@pytest.mark.parametrize(
    ("args", "kwargs", "code", "message"),
    [
        (([],), {}, "invalid_messages", None),
        (("hi",), {}, "invalid_messages", None),
        (({"role": "user"},), {}, "invalid_messages", None),
        (([{"content": "x"}],), {}, "invalid_messages", None),
        (([{"role": 1}],), {}, "invalid_messages", None),
        (([{"role": "user"}, "x"],), {}, "invalid_messages", None),
        ((MESSAGES, {"type": "function"}), {}, "invalid_tools", None),
        ((MESSAGES, ["f"]), {}, "invalid_tools", None),
        ((MESSAGES,), {"call_id": 12}, "invalid_type", "call_id must be a string, got 12"),
        (
            (MESSAGES,),
            {"caller": 1555},
            "invalid_secret_type",
            "caller must be a string (the value is not shown: it may be a key or a phone number)",
        ),
        ((MESSAGES,), {"callee": b"x"}, "invalid_type", None),
        (
            (MESSAGES,),
            {"call_id": "a\r\nX-Evil: 1"},
            "invalid_header_value",
            "call_id must not contain CR, LF or NUL",
        ),
        ((MESSAGES,), {"call_id": "a\x00"}, "invalid_header_value", None),
    ],
)
async def test_call_arguments_are_checked_before_anything_is_sent(
    server: LoopbackServer,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    code: str,
    message: str | None,
) -> None:
    llm = make_llm(server)
    with pytest.raises(ConfigError) as info:
        await collect(llm.stream(*args, **kwargs))
    assert info.value.code == code
    if message is not None:
        assert str(info.value) == message
    assert server.requests == [] and server.connections == []


@pytest.mark.parametrize(
    ("result", "code"),
    [("bad\nvalue", "invalid_header_value"), (123, "invalid_secret_type")],
)
async def test_bad_factory_results_are_config_errors(
    server: LoopbackServer, result: object, code: str
) -> None:
    llm = make_llm(server, session_key_header="X-K", session_key_factory=lambda ctx: result)
    with pytest.raises(ConfigError) as info:
        await collect(llm.stream(MESSAGES))
    assert info.value.code == code
    assert "session_key_factory" in str(info.value)
    assert server.requests == []


# -- events ------------------------------------------------------------------------------------


async def test_a_streamed_turn(server: LoopbackServer) -> None:
    stream = sse(
        {"choices": [{"delta": {"role": "assistant"}}]},
        {"choices": [{"delta": {"reasoning_content": "think"}}]},
        text_chunk("Caffè "),
        text_chunk("☕", finish_reason="stop"),
        {
            "choices": [],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": 4},
            },
        },
    )
    # Split at every 7 bytes: inside lines, inside the multi-byte characters.
    server.handler = serve(*[stream[i : i + 7] for i in range(0, len(stream), 7)])
    llm = make_llm(server)
    events = await collect(llm.stream(MESSAGES))
    await llm.aclose()
    assert events == [
        {"type": "reasoning", "content": "think"},
        {"type": "text", "content": "Caffè "},
        {"type": "text", "content": "☕"},
        {"type": "usage", "input_tokens": 6, "output_tokens": 2, "cache_read_tokens": 4},
        {"type": "finish", "reason": "stop"},
    ]


async def test_comments_named_events_and_crlf_are_handled(server: LoopbackServer) -> None:
    stream = (
        b": keepalive\r\n\r\n"
        b'event: hermes.tool.progress\r\ndata: {"tool_call_id":"t","status":"running"}\r\n\r\n'
        b"data:" + json.dumps(text_chunk("hi")).encode() + b"\r\n\r\n"
        b"data:[DONE]\r\n\r\n"
    )
    server.handler = serve(stream)
    llm = make_llm(server)
    assert await collect(llm.stream(MESSAGES)) == [
        {
            "type": "progress",
            "event": "hermes.tool.progress",
            "data": {"tool_call_id": "t", "status": "running"},
        },
        {"type": "text", "content": "hi"},
        {"type": "finish", "reason": "stop"},
    ]
    await llm.aclose()


async def test_done_stops_the_turn_and_the_body_is_drained_for_reuse(
    server: LoopbackServer,
) -> None:
    after_done = b"data: {not json\n\n" + b"data: " + json.dumps(text_chunk("late")).encode()
    server.handler = serve(sse(text_chunk("a")), after_done, b"\n\ndata: [DONE]\n\n", delay=0.02)
    llm = make_llm(server)
    for _ in range(3):
        assert await collect(llm.stream(MESSAGES)) == [
            {"type": "text", "content": "a"},
            {"type": "finish", "reason": "stop"},
        ]
    await llm.aclose()
    # One keep-alive connection served all three turns: the rest of each body was read.
    assert len(server.connections) == 1
    assert server.connections[0].requests == 3


async def test_end_of_body_without_done_is_truncated_and_reuses(server: LoopbackServer) -> None:
    server.handler = serve(sse(text_chunk("a"), done=False))
    llm = make_llm(server)
    for _ in range(2):
        assert await collect(llm.stream(MESSAGES)) == [
            {"type": "text", "content": "a"},
            {"type": "finish", "reason": "truncated"},
        ]
    await llm.aclose()
    assert len(server.connections) == 1


async def test_pending_event_at_the_end_of_the_body_is_dispatched(server: LoopbackServer) -> None:
    last = b"data: " + json.dumps(text_chunk("b", "length")).encode()  # no blank line after it
    server.handler = serve(sse(text_chunk("a"), done=False) + last)
    llm = make_llm(server)
    events = await collect(llm.stream(MESSAGES))
    await llm.aclose()
    assert types(events) == ["text", "text", "finish"]
    assert events[-1] == {"type": "finish", "reason": "length"}


async def test_empty_body_is_a_truncated_turn(server: LoopbackServer) -> None:
    server.handler = serve()
    llm = make_llm(server)
    assert await collect(llm.stream(MESSAGES)) == [{"type": "finish", "reason": "truncated"}]
    await llm.aclose()


async def test_tool_calls_without_index_are_assembled_by_complete(server: LoopbackServer) -> None:
    def call(**fields: Any) -> dict[str, Any]:
        return {"choices": [{"delta": {"tool_calls": [fields]}}]}

    server.handler = serve(
        sse(
            call(id="c1", type="function", function={"name": "get_time", "arguments": '{"tz":'}),
            call(function={"arguments": '"UTC"}'}),
            call(id="c2", type="function", function={"name": "get_time", "arguments": "{}"}),
            {
                "choices": [{"delta": {}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            },
        )
    )
    llm = make_llm(server)
    turn = await llm.complete(MESSAGES)
    await llm.aclose()
    assert turn == Turn(
        text="",
        reasoning="",
        tool_calls=[
            ToolCall(0, "c1", "get_time", '{"tz":"UTC"}'),
            ToolCall(1, "c2", "get_time", "{}"),
        ],
        usage=Usage(3, 1, 0),
        finish_reason="tool_calls",
    )


async def test_complete_text_turn(server: LoopbackServer) -> None:
    server.handler = serve(
        sse(
            {"choices": [{"delta": {"reasoning": "r1"}}]},
            text_chunk("Hel"),
            text_chunk("lo", "stop"),
        )
    )
    llm = make_llm(server)
    turn = await llm.complete(MESSAGES)
    await llm.aclose()
    assert turn == Turn("Hello", "r1", [], None, "stop")


# -- 2xx JSON bodies -----------------------------------------------------------------------------


async def test_json_chat_completion_gives_the_stream_events(server: LoopbackServer) -> None:
    body = {
        "object": "chat.completion",
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": "Hi ☕",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3},
    }

    async def handler(request: Request, conn: Connection) -> bool:
        await conn.respond(
            200, json.dumps(body).encode(), content_type="application/json; charset=utf-8"
        )
        return True

    server.handler = handler
    llm = make_llm(server)
    assert await collect(llm.stream(MESSAGES)) == [
        {"type": "text", "content": "Hi ☕"},
        {"type": "tool_call", "index": 0, "id": "c", "name": "f", "arguments": "{}"},
        {"type": "usage", "input_tokens": 5, "output_tokens": 3, "cache_read_tokens": 0},
        {"type": "finish", "reason": "tool_calls"},
    ]
    await collect(llm.stream(MESSAGES))
    await llm.aclose()
    assert len(server.connections) == 1


async def test_json_error_body_with_200_is_a_server_error(server: LoopbackServer) -> None:
    async def handler(request: Request, conn: Connection) -> bool:
        await conn.respond(200, b'{"error":{"message":"model overloaded","code":503}}')
        return True

    server.handler = handler
    llm = make_llm(server)
    with pytest.raises(StreamError) as info:
        await collect(llm.stream(MESSAGES))
    await llm.aclose()
    assert info.value.code == "server_error"
    assert str(info.value) == "the server reported an error: model overloaded"


async def test_json_body_that_is_not_json_is_malformed(server: LoopbackServer) -> None:
    async def handler(request: Request, conn: Connection) -> bool:
        await conn.respond(200, b"<html>oops</html>", content_type="application/problem+json")
        return True

    server.handler = handler
    llm = make_llm(server)
    with pytest.raises(StreamError) as info:
        await collect(llm.stream(MESSAGES))
    await llm.aclose()
    assert info.value.code == "malformed"
    assert str(info.value) == "malformed stream: data is not JSON: <html>oops</html>"
    # No parser error in the chain: a JSONDecodeError keeps the whole server data in `doc`.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


# -- errors in the stream ----------------------------------------------------------------------


async def test_error_object_mid_stream_carries_the_partial_text(server: LoopbackServer) -> None:
    server.handler = serve(
        sse(text_chunk("Par"), {"error": {"message": "Compute error."}}, done=False)
    )
    llm = make_llm(server)
    events: list[Event] = []
    with pytest.raises(StreamError) as info:
        async for event in llm.stream(MESSAGES):
            events.append(event)
    await llm.aclose()
    assert events == [{"type": "text", "content": "Par"}]
    assert info.value.code == "server_error"
    assert info.value.partial_text == "Par"
    assert str(info.value) == "the server reported an error: Compute error."


async def test_named_error_event(server: LoopbackServer) -> None:
    server.handler = serve(
        sse(text_chunk("a"), done=False) + b'event: error\ndata: {"message":"bad","code":1}\n\n'
    )
    llm = make_llm(server)
    with pytest.raises(StreamError) as info:
        await collect(llm.stream(MESSAGES))
    await llm.aclose()
    assert info.value.code == "server_error"
    assert str(info.value) == "the server reported an error: bad"
    assert info.value.partial_text == "a"


async def test_non_json_data_is_malformed(server: LoopbackServer) -> None:
    junk = "Number of choices must be greater than 0. " * 10
    server.handler = serve(sse(text_chunk("x"), junk, done=False))
    llm = make_llm(server)
    with pytest.raises(StreamError) as info:
        await collect(llm.stream(MESSAGES))
    await llm.aclose()
    assert info.value.code == "malformed"
    assert str(info.value) == f"malformed stream: data is not JSON: {junk[:200]}"
    assert info.value.partial_text == "x"
    assert info.value.__cause__ is None  # a JSONDecodeError would keep the data in `doc`
    assert info.value.__context__ is None


async def test_line_over_the_limit_is_too_large(server: LoopbackServer) -> None:
    server.handler = serve(sse(text_chunk("x"), done=False), b"data: " + b"y" * (1 << 20))
    llm = make_llm(server)
    events: list[Event] = []
    with pytest.raises(StreamError) as info:
        async for event in llm.stream(MESSAGES):
            events.append(event)
    await llm.aclose()
    assert info.value.code == "too_large"
    assert str(info.value) == "a stream line exceeded 1048576 bytes"
    assert info.value.partial_text == "x"
    assert events == [{"type": "text", "content": "x"}]


async def test_connection_lost_mid_stream_is_interrupted(server: LoopbackServer) -> None:
    async def handler(request: Request, conn: Connection) -> bool:
        await conn.head()
        await conn.send(sse(text_chunk("Hel"), text_chunk("lo"), done=False))
        await asyncio.sleep(0.05)
        conn.writer.close()  # in the middle of the chunked body
        return False

    server.handler = handler
    llm = make_llm(server)
    events: list[Event] = []
    with pytest.raises(StreamError) as info:
        async for event in llm.stream(MESSAGES):
            events.append(event)
    assert info.value.code == "interrupted"
    assert info.value.partial_text == "Hello"
    assert isinstance(info.value.__cause__, httpx.TransportError)
    assert types(events) == ["text", "text"]
    # The instance serves the next turn.
    server.handler = serve(sse(text_chunk("ok")))
    assert types(await collect(llm.stream(MESSAGES))) == ["text", "finish"]
    await llm.aclose()


async def test_reset_mid_stream_is_interrupted(server: LoopbackServer) -> None:
    async def handler(request: Request, conn: Connection) -> bool:
        await conn.head()
        await conn.send(sse(text_chunk("Hel"), done=False))
        await asyncio.sleep(0.05)
        conn.reset()
        return False

    server.handler = handler
    llm = make_llm(server)
    with pytest.raises(StreamError) as info:
        await collect(llm.stream(MESSAGES))
    await llm.aclose()
    assert info.value.code == "interrupted"
    assert info.value.partial_text == "Hel"


# -- HTTP errors -------------------------------------------------------------------------------


async def test_non_2xx_is_a_status_error_with_retry_after(server: LoopbackServer) -> None:
    async def handler(request: Request, conn: Connection) -> bool:
        body = b'{"error":{"message":"Too many concurrent runs (max 10)","type":"rate"}}'
        await conn.respond(429, body, headers=[("Retry-After", "2")])
        return True

    server.handler = handler
    llm = make_llm(server)
    with pytest.raises(APIStatusError) as info:
        await collect(llm.stream(MESSAGES))
    error = info.value
    assert error.code == "http_status"
    assert error.status == 429
    assert error.retry_after == 2.0
    assert error.body.startswith('{"error":')
    url = f"{server.base_url}/chat/completions"
    assert str(error) == f"{url} answered HTTP 429: Too many concurrent runs (max 10)"
    # A short body read to its end leaves the connection reusable.
    with pytest.raises(APIStatusError):
        await collect(llm.stream(MESSAGES))
    await llm.aclose()
    assert len(server.connections) == 1


async def test_status_error_body_is_cut_and_detail_is_the_text(server: LoopbackServer) -> None:
    body = ("é" * 1500).encode()  # 3000 bytes; byte 2048 falls inside a character? no: even

    async def handler(request: Request, conn: Connection) -> bool:
        await conn.head(503, content_type="text/plain")
        await conn.send(b"x" + body[:1000])
        await conn.send(body[1000:])
        await conn.end()
        return True

    server.handler = handler
    llm = make_llm(server)
    with pytest.raises(APIStatusError) as info:
        await collect(llm.stream(MESSAGES))
    await llm.aclose()
    error = info.value
    # 2048 bytes: "x", 1023 whole "é", then the first byte of one more (replaced).
    assert error.body == "x" + "é" * 1023 + "\ufffd"
    assert len(error.body.encode("utf-8", "surrogatepass")) <= 2048 + 2
    assert error.retry_after is None
    assert str(error).endswith(f"answered HTTP 503: {('x' + 'é' * 1023)[:200]}")


async def test_retry_after_as_an_http_date(server: LoopbackServer) -> None:
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    past = format_datetime(datetime.now(timezone.utc) - timedelta(seconds=30), usegmt=True)
    values = iter([when, past, "soon"])

    async def handler(request: Request, conn: Connection) -> bool:
        await conn.respond(503, b"busy", headers=[("Retry-After", next(values))])
        return True

    server.handler = handler
    llm = make_llm(server)
    seen = []
    for _ in range(3):
        with pytest.raises(APIStatusError) as info:
            await collect(llm.stream(MESSAGES))
        seen.append(info.value.retry_after)
    await llm.aclose()
    assert seen[0] is not None and 27 < seen[0] <= 30
    assert seen[1:] == [0.0, None]
    assert str(info.value).endswith("answered HTTP 503: busy")


async def test_keys_never_appear_in_error_messages(server: LoopbackServer) -> None:
    async def handler(request: Request, conn: Connection) -> bool:
        body = json.dumps(
            {"error": {"message": f"Incorrect API key provided: {KEY}; session static-session-key"}}
        )
        await conn.respond(401, body.encode())
        return True

    server.handler = handler
    llm = make_llm(server, api_key=KEY, session_key_header="X-K", session_key="static-session-key")
    with pytest.raises(APIStatusError) as info:
        await collect(llm.stream(MESSAGES))
    await llm.aclose()
    assert KEY not in str(info.value) and KEY not in info.value.body
    assert "static-session-key" not in str(info.value)
    assert str(info.value).endswith("HTTP 401: Incorrect API key provided: ***; session ***")


# -- transport failures and timeouts -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_refused() -> None:
    port = free_port()
    llm = BaseLLM(make_config(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY))
    with pytest.raises(APIConnectionError) as info:
        await collect(llm.stream(MESSAGES))
    await llm.aclose()
    assert info.value.code == "connection_error"
    assert str(info.value) == f"could not connect to http://127.0.0.1:{port}/v1/chat/completions"
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_server_closing_before_the_response_is_a_connection_error(
    server: LoopbackServer,
) -> None:
    async def handler(request: Request, conn: Connection) -> bool:
        return False  # close without answering

    server.handler = handler
    llm = make_llm(server)
    with pytest.raises(APIConnectionError) as info:
        await collect(llm.stream(MESSAGES))
    await llm.aclose()
    assert info.value.code == "connection_error"


async def test_no_headers_within_timeout_is_a_read_timeout(server: LoopbackServer) -> None:
    async def handler(request: Request, conn: Connection) -> bool:
        await conn.hold()
        return False

    server.handler = handler
    llm = make_llm(server, timeout=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(APITimeoutError) as info:
        await collect(llm.stream(MESSAGES))
    assert 0.25 < loop.time() - started < 2
    await llm.aclose()
    assert info.value.code == "read_timeout"
    assert str(info.value) == f"no data from {server.base_url}/chat/completions for 0.3 s"
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


async def test_stall_mid_stream_is_a_read_timeout(server: LoopbackServer) -> None:
    async def handler(request: Request, conn: Connection) -> bool:
        await conn.head()
        for _ in range(3):  # keeps sending within the timeout, then stalls
            await conn.send(sse(text_chunk("a"), done=False))
            await asyncio.sleep(0.2)
        await conn.hold()
        return False

    server.handler = handler
    llm = make_llm(server, timeout=0.35)
    events: list[Event] = []
    with pytest.raises(APITimeoutError) as info:
        async for event in llm.stream(MESSAGES):
            events.append(event)
    await llm.aclose()
    assert info.value.code == "read_timeout"
    assert types(events) == ["text"] * 3


async def test_connect_timeout_is_capped() -> None:
    # A listening socket whose accept queue is full: the kernel drops further SYNs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.05)
        llm = BaseLLM(make_config(base_url=f"http://127.0.0.1:{port}/v1", timeout=0.3))
        with pytest.raises(APITimeoutError) as info:
            await collect(llm.stream(MESSAGES))
        await llm.aclose()
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    assert info.value.code == "connect_timeout"
    assert (
        str(info.value)
        == f"no connection to http://127.0.0.1:{port}/v1/chat/completions within 0.3 s"
    )
    assert isinstance(info.value.__cause__, httpx.ConnectTimeout)


async def test_timeouts_of_the_shared_client() -> None:
    llm = BaseLLM(make_config(timeout=60))
    client = llm._open()
    assert client.timeout == httpx.Timeout(60, connect=10)
    await llm.aclose()
    llm = BaseLLM(make_config(timeout=2.5))
    assert llm._open().timeout == httpx.Timeout(2.5, connect=2.5)
    await llm.aclose()


# -- barge-in ----------------------------------------------------------------------------------


async def wait_for(predicate: Any, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.002)


async def test_already_set_cancel_event_sends_nothing(server: LoopbackServer) -> None:
    llm = make_llm(server)
    cancel = asyncio.Event()
    cancel.set()
    assert await collect(llm.stream(MESSAGES, cancel_event=cancel)) == []
    assert await llm.complete(MESSAGES, cancel_event=cancel) == Turn()
    await llm.aclose()
    assert server.requests == [] and server.connections == []


async def test_cancel_before_headers(server: LoopbackServer) -> None:
    async def handler(request: Request, conn: Connection) -> bool:
        await conn.hold()
        return False

    server.handler = handler
    llm = make_llm(server)
    cancel = asyncio.Event()
    loop = asyncio.get_running_loop()
    turn = asyncio.ensure_future(collect(llm.stream(MESSAGES, cancel_event=cancel)))
    await server.request_seen.wait()
    await asyncio.sleep(0.02)
    cancel.set()
    cancelled_at = loop.time()
    assert await asyncio.wait_for(turn, 1) == []
    await wait_for(lambda: server.connections[0].eof_at is not None)
    assert server.connections[0].eof_at - cancelled_at < CLOSE_WITHIN  # type: ignore[operator]
    # The barge-in's own cancel request was taken back (Python 3.11+ counts them).
    if sys.version_info >= (3, 11):
        assert turn.cancelling() == 0
    await next_turn_works(server, llm)


async def next_turn_works(server: LoopbackServer, llm: BaseLLM) -> None:
    server.handler = serve(sse(text_chunk("again")))
    assert await collect(llm.stream(MESSAGES, cancel_event=asyncio.Event())) == [
        {"type": "text", "content": "again"},
        {"type": "finish", "reason": "stop"},
    ]
    await llm.aclose()


def stalling_handler(first: bytes) -> Handler:
    async def handler(request: Request, conn: Connection) -> bool:
        await conn.head()
        await conn.send(first)
        await conn.hold()
        return False

    return handler


async def test_cancel_during_a_stall(server: LoopbackServer) -> None:
    server.handler = stalling_handler(sse(text_chunk("Hel"), done=False))
    llm = make_llm(server)
    cancel = asyncio.Event()
    loop = asyncio.get_running_loop()
    events: list[Event] = []

    async def consume() -> None:
        async for event in llm.stream(MESSAGES, cancel_event=cancel):
            events.append(event)

    turn = asyncio.ensure_future(consume())
    await wait_for(lambda: events)
    await asyncio.sleep(0.05)  # the generator waits on the socket now
    cancel.set()
    cancelled_at = loop.time()
    await asyncio.wait_for(turn, 1)
    assert events == [{"type": "text", "content": "Hel"}]  # no finish event
    await wait_for(lambda: server.connections[0].eof_at is not None)
    assert server.connections[0].eof_at - cancelled_at < CLOSE_WITHIN  # type: ignore[operator]
    await next_turn_works(server, llm)


async def test_cancel_while_the_consumer_holds_an_event(server: LoopbackServer) -> None:
    server.handler = stalling_handler(sse(text_chunk("a"), text_chunk("b"), done=False))
    llm = make_llm(server)
    cancel = asyncio.Event()
    loop = asyncio.get_running_loop()
    events: list[Event] = []
    cancelled_at = 0.0
    async for event in llm.stream(MESSAGES, cancel_event=cancel):
        events.append(event)
        if len(events) == 1:
            # Barge-in from elsewhere while this consumer is busy: the generator sits at a yield.
            loop.call_later(0.02, cancel.set)
            await asyncio.sleep(0.02)
            cancelled_at = loop.time()
            await asyncio.sleep(0.25)
            assert server.connections[0].eof_at is not None  # closed before we came back
    assert events == [{"type": "text", "content": "a"}]  # "b" was ready but not yielded
    assert server.connections[0].eof_at - cancelled_at < CLOSE_WITHIN  # type: ignore[operator]
    await next_turn_works(server, llm)


async def test_cancel_set_by_the_consumer_itself(server: LoopbackServer) -> None:
    server.handler = stalling_handler(sse(text_chunk("a"), text_chunk("b"), done=False))
    llm = make_llm(server)
    cancel = asyncio.Event()
    events: list[Event] = []
    async for event in llm.stream(MESSAGES, cancel_event=cancel):
        events.append(event)
        cancel.set()
    assert events == [{"type": "text", "content": "a"}]
    await wait_for(lambda: server.connections[0].eof_at is not None, 0.5)
    await next_turn_works(server, llm)


async def test_complete_cancelled_has_no_finish_reason(server: LoopbackServer) -> None:
    server.handler = stalling_handler(sse(text_chunk("Hel"), done=False))
    llm = make_llm(server)
    cancel = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, cancel.set)
    turn = await llm.complete(MESSAGES, cancel_event=cancel)
    assert turn == Turn("Hel", "", [], None, None)
    current = asyncio.current_task()
    if sys.version_info >= (3, 11):  # the barge-in cancelled this task and took it back
        assert current is not None and current.cancelling() == 0
    await asyncio.sleep(0.01)  # and no cancellation is left pending
    await next_turn_works(server, llm)


@pytest.mark.parametrize("with_event", [False, True])
async def test_task_cancellation_propagates_and_closes(
    server: LoopbackServer, with_event: bool
) -> None:
    server.handler = stalling_handler(sse(text_chunk("Hel"), done=False))
    llm = make_llm(server)
    events: list[Event] = []
    cancel = asyncio.Event() if with_event else None

    async def consume() -> None:
        async for event in llm.stream(MESSAGES, cancel_event=cancel):
            events.append(event)

    task = asyncio.ensure_future(consume())
    await wait_for(lambda: events)
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    task.cancel()
    cancelled_at = loop.time()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: server.connections[0].eof_at is not None)
    assert server.connections[0].eof_at - cancelled_at < CLOSE_WITHIN  # type: ignore[operator]
    await next_turn_works(server, llm)


async def test_task_cancellation_before_headers_propagates(server: LoopbackServer) -> None:
    async def handler(request: Request, conn: Connection) -> bool:
        await conn.hold()
        return False

    server.handler = handler
    llm = make_llm(server)
    task = asyncio.ensure_future(collect(llm.stream(MESSAGES, cancel_event=asyncio.Event())))
    await server.request_seen.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: server.connections[0].eof_at is not None, 0.5)
    await next_turn_works(server, llm)


async def test_random_cancellations_leave_no_connection_open(server: LoopbackServer) -> None:
    async def handler(request: Request, conn: Connection) -> bool:
        await conn.head()
        for i in range(5):
            await conn.send(sse(text_chunk(str(i)), done=False))
            await asyncio.sleep(0.003)
        await conn.send(b"data: [DONE]\n\n")
        await conn.end()
        return True

    server.handler = handler
    llm = make_llm(server)
    loop = asyncio.get_running_loop()
    for i in range(40):
        cancel = asyncio.Event()
        loop.call_later((i % 8) * 0.003, cancel.set)
        events = await collect(llm.stream(MESSAGES, cancel_event=cancel))
        assert "finish" not in types(events) or len(events) == 6
    await llm.aclose()
    await wait_for(lambda: all(c.eof_at is not None for c in server.connections))


# -- warmup, close -----------------------------------------------------------------------------


async def test_warmup_gets_models_and_warms_the_pool(server: LoopbackServer) -> None:
    async def handler(request: Request, conn: Connection) -> bool:
        if request.method == "GET":
            await conn.respond(200, b'{"object":"list","data":[]}')
            return True
        return await serve(sse(text_chunk("ok")))(request, conn)

    server.handler = handler
    llm = make_llm(server, api_key=KEY, extra_headers={"X-Extra": "1"})
    await llm.warmup()
    await collect(llm.stream(MESSAGES))
    await llm.aclose()
    warm = server.requests[0]
    assert warm.raw_head.startswith(b"GET /v1/models HTTP/1.1\r\n")
    assert warm.headers == [
        ("Host", f"127.0.0.1:{server.port}"),
        ("User-Agent", "brainline/test"),
        ("Authorization", f"Bearer {KEY}"),
    ]
    assert len(server.connections) == 1 and server.connections[0].requests == 2


async def test_warmup_keyless_and_never_raises(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.handler = serve(status=500)
    llm = make_llm(server)
    await llm.warmup()
    assert [n for n, _ in server.requests[0].headers] == ["Host", "User-Agent"]
    await llm.aclose()
    caplog.set_level(logging.DEBUG, logger="brainline")
    refused = BaseLLM(make_config(base_url=f"http://127.0.0.1:{free_port()}/v1", api_key=KEY))
    await refused.warmup()
    await refused.aclose()
    assert "warmup failed" in caplog.text and KEY not in caplog.text


async def test_warmup_is_bounded(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import brainline._core.client as client_module

    async def handler(request: Request, conn: Connection) -> bool:
        await conn.hold()
        return False

    server.handler = handler
    monkeypatch.setattr(client_module, "WARMUP_TIMEOUT", 0.2)
    llm = make_llm(server)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await llm.warmup()
    assert loop.time() - started < 1
    await llm.aclose()


async def test_async_with_closes_the_pool(server: LoopbackServer) -> None:
    server.handler = serve(sse(text_chunk("ok")))
    async with make_llm(server) as llm:
        await collect(llm.stream(MESSAGES))
        assert server.connections[0].eof_at is None
    await wait_for(lambda: server.connections[0].eof_at is not None, 0.5)
    # Closed, yet usable: a later turn opens a new pool.
    await collect(llm.stream(MESSAGES))
    await llm.aclose()
    assert len(server.connections) == 2


@pytest.mark.parametrize("stage", ["before headers", "stall"])
async def test_aclose_ends_running_turns_as_if_cancelled(
    server: LoopbackServer, stage: str
) -> None:
    async def handler(request: Request, conn: Connection) -> bool:
        if stage == "stall":
            await conn.head()
            await conn.send(sse(text_chunk("Hel"), done=False))
        await conn.hold()
        return False

    server.handler = handler
    llm = make_llm(server)
    events: list[Event] = []

    async def consume() -> None:
        async for event in llm.stream(MESSAGES):
            events.append(event)

    turn = asyncio.ensure_future(consume())
    await server.request_seen.wait()
    await asyncio.sleep(0.05)
    await llm.aclose()
    await asyncio.wait_for(turn, 1)  # no error
    assert events == ([{"type": "text", "content": "Hel"}] if stage == "stall" else [])
    await wait_for(lambda: server.connections[0].eof_at is not None, 0.5)
    await next_turn_works(server, llm)


async def test_one_client_per_instance_is_reused(server: LoopbackServer) -> None:
    server.handler = serve(sse(text_chunk("ok")))
    llm = make_llm(server)
    await collect(llm.stream(MESSAGES))
    client = llm._client
    await llm.complete(MESSAGES)
    assert llm._client is client is not None
    await llm.aclose()
    assert llm._client is None


def test_config_and_provider_key() -> None:
    config = make_config()
    llm = BaseLLM(config)
    assert llm.config is config
    assert BaseLLM.provider_key == ""

    class Custom(BaseLLM):
        provider_key = "custom"

    assert Custom(config).provider_key == "custom"


async def test_nothing_secret_is_logged(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.handler = stalling_handler(sse(text_chunk("a"), done=False))
    llm = make_llm(server, api_key=KEY, session_key_header="X-K", session_key_from="caller_hash")
    cancel = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, cancel.set)
    await collect(llm.stream(MESSAGES, cancel_event=cancel, caller=CALLER))
    await llm.aclose()
    for secret in (KEY, CALLER, "8a59780bb8cd2ba0"):
        assert secret not in caplog.text


def test_import_defers_asyncio_and_a_turn_still_runs() -> None:
    # asyncio costs `import brainline` ~25 ms; it loads on first use (client.py _lazy_module).
    code = """
import sys
import brainline
assert "asyncio.base_events" not in sys.modules, "asyncio was loaded by import brainline"
import asyncio
from brainline.testing import MockServer

async def main():
    async with MockServer({"text": ["Hel", "lo"]}) as url:
        llm = brainline.CustomLLM(base_url=url, model="m")
        turn = await llm.complete([{"role": "user", "content": "hi"}])
        await llm.aclose()
    print(turn.text, turn.finish_reason)

asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Hello", "stop"]


async def test_idle_connections_expire_after_keepalive_expiry() -> None:
    # The spec's expiry (4 s), not httpx's 5 s, which races uvicorn's and Node's 5 s keep-alive.
    llm = BaseLLM(make_config(base_url="http://127.0.0.1:9/v1"))
    client = llm._open()
    try:
        pool = client._transport._pool  # type: ignore[attr-defined]
        assert pool._keepalive_expiry == KEEPALIVE_EXPIRY == 4
    finally:
        await llm.aclose()
