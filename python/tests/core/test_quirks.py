"""TurnState and SSEDecoder against real-endpoint quirks; typescript/test/core/quirks.test.ts mirrors it.

Keep-alives, named events, errors inside a 200 stream, whole JSON answers, usage placement,
reasoning fields and `<think>` blocks split anywhere (every split of the content is tried).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from brainline._core.chunks import TurnState
from brainline._core.errors import StreamError
from brainline._core.events import Event
from brainline._core.sse import ServerSentEvent, SSEDecoder


def chunk(content: str | None = None, finish_reason: str | None = None, **fields: Any) -> str:
    delta: dict[str, Any] = dict(fields)
    if content is not None:
        delta["content"] = content
    return json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})


def texts(events: list[Event]) -> list[tuple[str, str]]:
    """(type, content) of the text and reasoning events, merged by type, in order."""
    out: list[tuple[str, str]] = []
    for event in events:
        if event["type"] in ("text", "reasoning"):
            content = event["content"]
            if out and out[-1][0] == event["type"]:
                out[-1] = (event["type"], out[-1][1] + content)
            else:
                out.append((event["type"], content))
    return out


def run_contents(pieces: list[str], reasoning: str = "emit") -> list[Event]:
    state = TurnState(reasoning)
    events: list[Event] = []
    for piece in pieces:
        events += state.feed_event(None, chunk(piece))
    return events + state.finish(True)


# -- keep-alives and named events -----------------------------------------------------------------


@pytest.mark.parametrize(
    "data", ["", " ", "\r\n\t", ": keepalive", ":", "  : OPENROUTER PROCESSING", ":ping"]
)
def test_blank_and_colon_data_are_keep_alives(data: str) -> None:
    state = TurnState()
    assert state.feed_event(None, data) == []
    assert state.feed_event("message", data) == []
    assert state.feed_event("hermes.tool.progress", data) == []
    assert state.feed_event("error", data) == []  # nothing to report: not an error either


def test_non_json_data_that_is_not_a_keep_alive_is_malformed_with_the_partial_text() -> None:
    state = TurnState()
    state.feed_event(None, chunk("Hel"))
    with pytest.raises(StreamError) as info:
        state.feed_event(None, "Number of choices must be greater than 0.")
    assert info.value.code == "malformed"
    assert str(info.value) == (
        "malformed stream: data is not JSON: Number of choices must be greater than 0."
    )
    assert info.value.partial_text == "Hel"
    with pytest.raises(StreamError, match=r"data is not JSON: x{200}$"):
        TurnState().feed_event(None, "x" * 300)


def test_named_events_are_progress_events_never_text() -> None:
    state = TurnState()
    data = '{"tool_call_id":"t1","name":"search","status":"running"}'
    assert state.feed_event("hermes.tool.progress", data) == [
        {
            "type": "progress",
            "event": "hermes.tool.progress",
            "data": {"tool_call_id": "t1", "name": "search", "status": "running"},
        }
    ]
    assert state.feed_event("status", "still working") == [
        {"type": "progress", "event": "status", "data": "still working"}
    ]
    # Chunk-shaped data under another name is still not text.
    assert state.feed_event("delta", chunk("hi")) == [
        {"type": "progress", "event": "delta", "data": json.loads(chunk("hi"))}
    ]
    assert state.feed_event("message", chunk("hi")) == [{"type": "text", "content": "hi"}]
    assert state.text == "hi"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('{"error":{"message":"overloaded","code":502}}', "overloaded"),
        ('{"message":"no error key"}', "no error key"),
        ("upstream timed out", "upstream timed out"),
        ('{"error":"Input validation error"}', "Input validation error"),
        ('{"error":{"code":500}}', '{"code":500}'),
    ],
)
def test_event_error_is_server_error_with_the_server_message(data: str, message: str) -> None:
    state = TurnState()
    state.feed_event(None, chunk("Par"))
    with pytest.raises(StreamError) as info:
        state.feed_event("error", data)
    assert info.value.code == "server_error"
    assert str(info.value) == f"the server reported an error: {message}"
    assert info.value.partial_text == "Par"


def test_error_objects_inside_chunks() -> None:
    for data, message in [
        ('{"error":{"message":"Compute error."},"message":"Compute error."}', "Compute error."),
        ('{"error":"Input validation error","error_type":"validation"}', "Input validation error"),
        (
            '{"choices":[{"index":0,"delta":{},"finish_reason":"error"}],'
            '"error":{"message":"model failed"}}',
            "model failed",
        ),
    ]:
        with pytest.raises(StreamError, match=f"error: {message}$") as info:
            TurnState().feed_event(None, data)
        assert info.value.code == "server_error"
    # finish_reason "error" without an error object is a finish, not an exception.
    state = TurnState()
    assert state.feed_event(None, chunk(None, "error")) == []
    assert state.finish(True) == [{"type": "finish", "reason": "error"}]


def test_llamacpp_error_field_is_an_error_event() -> None:
    decoder = SSEDecoder()
    events = decoder.decode(b'error: {"code":500,"message":"boom"}\n\n')
    assert events == [ServerSentEvent("error", '{"code":500,"message":"boom"}')]
    assert decoder.decode(b"errors: x\n\ndata: a\n\n") == [ServerSentEvent(None, "a")]
    with pytest.raises(StreamError, match=r"error: boom$"):
        TurnState().feed_event(events[0].event, events[0].data)


# -- whole JSON answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ("", "empty response body"),
        (" \r\n\t", "empty response body"),
        ("{oops", "data is not JSON: {oops"),
        ('{"status":"ok"}', 'not a chat completion: {"status":"ok"}'),
        ("[]", "not a chat completion: []"),
        ('{"error":null}', 'not a chat completion: {"error":null}'),
    ],
)
def test_feed_body_never_a_silent_empty_turn(body: str, detail: str) -> None:
    with pytest.raises(StreamError) as info:
        TurnState().feed_body(body)
    assert info.value.code == "malformed"
    assert str(info.value) == f"malformed stream: {detail}"


def test_feed_body_error_completion_and_lone_chunk() -> None:
    with pytest.raises(StreamError, match=r"error: model not loaded$"):
        TurnState().feed_body('{"error":{"message":"model not loaded"}}')
    completion = {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "<think>hm</think>Hi"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }
    assert TurnState().feed_body(json.dumps(completion)) == [
        {"type": "reasoning", "content": "hm"},
        {"type": "text", "content": "Hi"},
        {"type": "usage", "input_tokens": 3, "output_tokens": 2, "cache_read_tokens": 0},
        {"type": "finish", "reason": "stop"},
    ]
    assert TurnState().feed_body(chunk("Hi", "length")) == [
        {"type": "text", "content": "Hi"},
        {"type": "finish", "reason": "length"},
    ]
    assert TurnState().feed_body('{"choices":[]}') == [{"type": "finish", "reason": "stop"}]


# -- usage ----------------------------------------------------------------------------------------


def test_x_groq_usage_and_usage_beside_an_empty_delta() -> None:
    state = TurnState()
    state.feed_event(None, chunk("a"))
    state.feed({"choices": [], "x_groq": {"id": "r", "usage": {"prompt_tokens": 9}}})
    state.feed({"choices": [], "x_groq": {"id": "r"}})  # no usage there: the last one stays
    assert state.finish(True)[0] == {
        "type": "usage",
        "input_tokens": 9,
        "output_tokens": 0,
        "cache_read_tokens": 0,
    }
    # A top-level usage is preferred to x_groq's in the same chunk.
    state = TurnState()
    state.feed(
        {
            "choices": [{"index": 0, "delta": {}, "finish_reason": None}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1},
            "x_groq": {"usage": {"prompt_tokens": 99}},
        }
    )
    assert state.finish(True)[0]["input_tokens"] == 5  # type: ignore[typeddict-item]


# -- reasoning ------------------------------------------------------------------------------------


def test_reasoning_fields_one_per_chunk_and_reasoning_details() -> None:
    state = TurnState()
    details = [{"type": "reasoning.text", "text": "A"}, {"type": "reasoning.text", "text": "B"}]
    assert state.feed_event(None, chunk(None, reasoning_details=details)) == [
        {"type": "reasoning", "content": "AB"}
    ]
    both = chunk(None, reasoning="C", reasoning_details=[{"text": "C"}])
    assert state.feed_event(None, both) == [{"type": "reasoning", "content": "C"}]
    odd = chunk(None, reasoning_details=[{"type": "reasoning.encrypted", "data": "x"}, 3, None])
    assert state.feed_event(None, odd) == []
    assert state.feed_event(None, chunk(None, reasoning_details="text")) == []
    assert state.text == ""


def test_reasoning_drop_emits_no_reasoning_events() -> None:
    state = TurnState("drop")
    events = state.feed_event(None, chunk("<think>a</think>b", reasoning_content="r"))
    events += state.feed_event(None, chunk(None, reasoning_details=[{"text": "d"}]))
    events += state.finish(True)
    assert events == [{"type": "text", "content": "b"}, {"type": "finish", "reason": "stop"}]


THINK = "Hi <think>plan a</think> there<b> </think> x<"


@pytest.mark.parametrize("cut", range(1, len(THINK)))
def test_think_block_split_at_every_position(cut: int) -> None:
    expected = [("text", "Hi "), ("reasoning", "plan a"), ("text", " there<b> </think> x<")]
    assert texts(run_contents([THINK[:cut], THINK[cut:]])) == expected


def test_think_block_one_character_per_chunk() -> None:
    events = run_contents(list(THINK))
    assert texts(events) == [
        ("text", "Hi "),
        ("reasoning", "plan a"),
        ("text", " there<b> </think> x<"),
    ]
    assert not any(e["type"] == "text" and "think" in e["content"] for e in events)


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        # A leading </think>: the server left out the opening tag.
        (["</think>Hello"], [("text", "Hello")]),
        (["</", "think>", "\n\nHello"], [("text", "\n\nHello")]),
        # Not the first thing in the content: text, as it came.
        (["Hi</think>"], [("text", "Hi</think>")]),
        (["Hi", "</think>"], [("text", "Hi</think>")]),
        ([" </think>"], [("text", " </think>")]),
        # Looks like a tag start, turns out not to be.
        (["</b>"], [("text", "</b>")]),
        (["<", "b"], [("text", "<b")]),
        (["</thi"], [("text", "</thi")]),
        # Unclosed block: all reasoning, a held partial tag included.
        (["<think>a</thi"], [("reasoning", "a</thi")]),
        # Two blocks, text between.
        (
            ["<think>a</think>b<think>c</think>d"],
            [("reasoning", "a"), ("text", "b"), ("reasoning", "c"), ("text", "d")],
        ),
        # A stray </think> after a block is text.
        (["<think>a</think></think>"], [("reasoning", "a"), ("text", "</think>")]),
    ],
)
def test_think_rules(pieces: list[str], expected: list[tuple[str, str]]) -> None:
    assert texts(run_contents(pieces)) == expected


def test_partial_text_excludes_reasoning_and_held_tag_starts() -> None:
    state = TurnState()
    state.feed_event(None, chunk("Hi <think>x"))
    state.feed_event(None, chunk("</think> yo <"))
    assert state.text == "Hi  yo "
    with pytest.raises(StreamError) as info:
        state.feed_event(None, '{"error":{"message":"m"}}')
    assert info.value.partial_text == "Hi  yo "
