"""TurnState: chunks in, events out; usage maths, tool-call indexes, finish reasons."""

from __future__ import annotations

import json
from typing import Any

import pytest

from brainline._core.chunks import TurnState, _loads, completion_to_chunk
from brainline._core.errors import StreamError
from brainline._core.events import Event, ToolCall, assemble_tool_calls


def delta(finish_reason: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": finish_reason}]}


def tool(
    index: int | None = None,
    id: str | None = None,
    name: str | None = None,
    arguments: str | None = None,
) -> dict[str, Any]:
    call: dict[str, Any] = {"type": "function", "function": {}}
    if index is not None:
        call["index"] = index
    if id is not None:
        call["id"] = id
    if name is not None:
        call["function"]["name"] = name
    if arguments is not None:
        call["function"]["arguments"] = arguments
    return call


def feed_all(*chunks: object, done: bool = True) -> list[Event]:
    state = TurnState()
    events: list[Event] = []
    for chunk in chunks:
        events += state.feed(chunk)
    return events + state.finish(done)


def test_text_reasoning_and_order_within_a_chunk() -> None:
    state = TurnState()
    events = state.feed(
        delta(reasoning_content="think", content="Hi", tool_calls=[tool(0, "c1", "f", "{}")])
    )
    assert events == [
        {"type": "reasoning", "content": "think"},
        {"type": "text", "content": "Hi"},
        {"type": "tool_call", "index": 0, "id": "c1", "name": "f", "arguments": "{}"},
    ]
    assert state.text == "Hi"


def test_reasoning_field_variants() -> None:
    assert TurnState().feed(delta(reasoning="r")) == [{"type": "reasoning", "content": "r"}]
    assert TurnState().feed(delta(reasoning_content="", reasoning="r")) == [
        {"type": "reasoning", "content": "r"}
    ]
    assert TurnState().feed(delta(reasoning_content="a", reasoning="b")) == [
        {"type": "reasoning", "content": "a"}
    ]
    assert TurnState().feed(delta(reasoning_content=None, reasoning=5)) == []


def test_empty_and_odd_chunks_give_nothing() -> None:
    state = TurnState()
    for chunk in [
        {},
        {"choices": []},
        {"choices": None},
        {"choices": [None]},
        {"choices": [{"delta": None}]},
        {"choices": [{}]},
        {"id": "", "choices": [], "prompt_filter_results": [{}]},
        delta(content=""),
        delta(content=None),
        delta(content=3),
        delta(role="assistant"),
        [1, 2],
        "text",
        None,
        7,
        {"error": None},
    ]:
        assert state.feed(chunk) == [], chunk
    assert state.text == ""
    assert state.finish(True) == [{"type": "finish", "reason": "stop"}]


def test_text_accumulates_for_partial_text() -> None:
    state = TurnState()
    for piece in ["Par", "tial", " text"]:
        state.feed(delta(content=piece))
    assert state.text == "Partial text"
    state.feed(delta(content="!"))
    assert state.text == "Partial text!"


def test_error_key_raises_server_error_with_partial_text() -> None:
    state = TurnState()
    state.feed(delta(content="Par"))
    with pytest.raises(StreamError) as info:
        state.feed({"error": {"message": "Compute error.", "code": 502}})
    assert info.value.code == "server_error"
    assert str(info.value) == "the server reported an error: Compute error."
    assert info.value.partial_text == "Par"
    with pytest.raises(StreamError, match=r'error: \{"code":502,"msg":"é"\}$'):
        TurnState().feed({"error": {"code": 502, "msg": "é"}})
    # TGI: the error is a string; it is the message as-is.
    with pytest.raises(StreamError, match=r"error: Input validation error$"):
        TurnState().feed({"error": "Input validation error", "error_type": "validation"})
    with pytest.raises(StreamError, match=r"error: \{\"message\":3\}$"):
        TurnState().feed({"error": {"message": 3}})


# -- usage -------------------------------------------------------------------------------------


def usage_of(*chunks: object) -> list[Event]:
    return [e for e in feed_all(*chunks) if e["type"] == "usage"]


def test_usage_last_wins_and_cached_is_subtracted() -> None:
    first = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}
    last = {
        "choices": [],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "prompt_tokens_details": {"cached_tokens": 30},
        },
    }
    assert usage_of(first, last) == [
        {"type": "usage", "input_tokens": 70, "output_tokens": 20, "cache_read_tokens": 30}
    ]


def test_usage_on_every_chunk_is_not_summed() -> None:
    chunks = [
        {**delta(content="a"), "usage": {"prompt_tokens": 10, "completion_tokens": n}}
        for n in (1, 2, 3)
    ]
    assert usage_of(*chunks) == [
        {"type": "usage", "input_tokens": 10, "output_tokens": 3, "cache_read_tokens": 0}
    ]


def test_usage_never_below_zero_and_missing_counts_are_zero() -> None:
    assert usage_of(
        {"usage": {"prompt_tokens": 3, "prompt_tokens_details": {"cached_tokens": 10}}}
    ) == [{"type": "usage", "input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 10}]
    assert usage_of({"usage": {}}) == [
        {"type": "usage", "input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0}
    ]
    assert usage_of(
        {"usage": {"prompt_tokens": "7", "completion_tokens": True, "prompt_tokens_details": None}}
    ) == [{"type": "usage", "input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0}]
    assert usage_of({"usage": {"prompt_tokens": 7.0, "completion_tokens": 2}}) == [
        {"type": "usage", "input_tokens": 7, "output_tokens": 2, "cache_read_tokens": 0}
    ]


def test_null_usage_does_not_replace_an_earlier_one() -> None:
    assert usage_of({"usage": {"prompt_tokens": 4}}, {"usage": None, **delta(content="x")}) == [
        {"type": "usage", "input_tokens": 4, "output_tokens": 0, "cache_read_tokens": 0}
    ]


def test_no_usage_no_usage_event_and_usage_comes_before_finish() -> None:
    events = feed_all(delta(content="x", finish_reason="stop"))
    assert [e["type"] for e in events] == ["text", "finish"]
    events = feed_all({**delta(content="x", finish_reason="stop"), "usage": {"prompt_tokens": 1}})
    assert [e["type"] for e in events] == ["text", "usage", "finish"]


# -- finish reasons ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        ("stop", "stop"),
        ("end_turn", "stop"),
        ("eos", "stop"),
        ("stop_sequence", "stop"),
        ("length", "length"),
        ("max_tokens", "length"),
        ("tool_calls", "tool_calls"),
        ("function_call", "tool_calls"),
        ("content_filter", "content_filter"),
        ("error", "error"),
        ("something_new", "other"),
        ("", "other"),
    ],
)
def test_finish_reason_mapping(server: str, reason: str) -> None:
    assert feed_all(delta(finish_reason=server))[-1] == {"type": "finish", "reason": reason}
    # The same without [DONE]: a finish_reason was seen, so the end is not "truncated".
    assert feed_all(delta(finish_reason=server), done=False)[-1]["reason"] == reason  # type: ignore[typeddict-item]


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        ("stop", "tool_calls"),
        ("something_new", "tool_calls"),
        ("length", "length"),
        ("content_filter", "content_filter"),
        ("error", "error"),
        (None, "tool_calls"),
    ],
)
def test_tool_calls_turn_stop_and_other_into_tool_calls(server: str | None, reason: str) -> None:
    events = feed_all(delta(tool_calls=[tool(0, "c", "f", "{}")]), delta(finish_reason=server))
    assert events[-1] == {"type": "finish", "reason": reason}


def test_no_finish_reason_is_stop_after_done_and_truncated_without() -> None:
    assert feed_all(delta(content="x"))[-1] == {"type": "finish", "reason": "stop"}
    assert feed_all(delta(content="x"), done=False)[-1] == {"type": "finish", "reason": "truncated"}
    assert feed_all(done=False) == [{"type": "finish", "reason": "truncated"}]
    events = feed_all(delta(tool_calls=[tool(0, "c", "f")]), done=False)
    assert events[-1] == {"type": "finish", "reason": "truncated"}


def test_last_non_null_finish_reason_wins() -> None:
    events = feed_all(delta(finish_reason="length"), delta(finish_reason=None), {"choices": []})
    assert events[-1] == {"type": "finish", "reason": "length"}
    events = feed_all(delta(finish_reason="length"), delta(finish_reason="stop"))
    assert events[-1] == {"type": "finish", "reason": "stop"}


# -- tool calls --------------------------------------------------------------------------------


def calls_of(*chunks: object) -> list[tuple[int, str | None, str | None, str]]:
    return [
        (e["index"], e["id"], e["name"], e["arguments"])
        for e in feed_all(*chunks)
        if e["type"] == "tool_call"
    ]


def test_tool_call_deltas_with_index_are_passed_through() -> None:
    assert calls_of(
        delta(tool_calls=[tool(0, "a", "f", '{"x":'), tool(1, "b", "g", "")]),
        delta(tool_calls=[tool(0, arguments="1}")]),
        delta(tool_calls=[tool(1, arguments="{}")]),
    ) == [(0, "a", "f", '{"x":'), (1, "b", "g", ""), (0, None, None, "1}"), (1, None, None, "{}")]


def test_missing_arguments_are_empty_and_object_arguments_compact_json() -> None:
    assert calls_of(delta(tool_calls=[tool(0, "a", "f")])) == [(0, "a", "f", "")]
    chunk = delta(tool_calls=[{"index": 0, "function": {"arguments": {"tz": "UTC", "n": 1}}}])
    assert calls_of(chunk) == [(0, None, None, '{"tz":"UTC","n":1}')]
    assert calls_of(delta(tool_calls=[{"index": 0, "function": None}, "junk"])) == [
        (0, None, None, "")
    ]


def test_index_assigned_when_missing_ollama_style() -> None:
    # A new slot when the id or name changes; else the last slot.
    assert calls_of(
        delta(tool_calls=[tool(id="call_1", name="get_time", arguments='{"tz":')]),
        delta(tool_calls=[tool(arguments='"UTC"}')]),
        delta(tool_calls=[tool(id="call_2", name="get_time", arguments="{}")]),
        delta(tool_calls=[tool(id="call_2", arguments="")]),
        delta(tool_calls=[tool(name="other", arguments="[]")]),
    ) == [
        (0, "call_1", "get_time", '{"tz":'),
        (0, None, None, '"UTC"}'),
        (1, "call_2", "get_time", "{}"),
        (1, "call_2", None, ""),
        (2, None, "other", "[]"),
    ]


def test_index_assigned_for_two_calls_in_one_chunk_and_after_explicit_indexes() -> None:
    assert calls_of(
        delta(tool_calls=[tool(id="a", name="f", arguments="1"), tool(id="b", name="f")]),
    ) == [(0, "a", "f", "1"), (1, "b", "f", "")]
    # A missing index after explicit ones continues the last slot, or opens max + 1.
    assert calls_of(
        delta(tool_calls=[tool(3, "x", "f", "")]),
        delta(tool_calls=[tool(arguments="more")]),
        delta(tool_calls=[tool(id="y", arguments="")]),
    ) == [(3, "x", "f", ""), (3, None, None, "more"), (4, "y", None, "")]


def test_name_arriving_after_the_arguments_stays_in_the_slot() -> None:
    assert calls_of(
        delta(tool_calls=[tool(arguments='{"a":')]),
        delta(tool_calls=[tool(id="c", name="late", arguments="1}")]),
    ) == [(0, None, None, '{"a":'), (0, "c", "late", "1}")]


def test_float_index_from_json_is_an_integer() -> None:
    [(index, *_)] = calls_of(delta(tool_calls=[{"index": 2.0, "function": {"arguments": ""}}]))
    assert index == 2 and isinstance(index, int)
    # A boolean is not an index.
    assert calls_of(delta(tool_calls=[{"index": True, "id": "a"}])) == [(0, "a", None, "")]


def test_assemble_tool_calls() -> None:
    events = feed_all(
        delta(tool_calls=[tool(1, "b", "g", "[")]),
        delta(tool_calls=[tool(0, "", "", "{")]),
        delta(tool_calls=[tool(0, "a", "f", "}"), tool(1, "b2", "g", "]")]),
    )
    assert assemble_tool_calls(events) == [
        ToolCall(0, "a", "f", "{}"),
        ToolCall(1, "b", "g", "[]"),
    ]
    assert assemble_tool_calls([]) == []
    assert assemble_tool_calls([{"type": "text", "content": "x"}]) == []
    only_args: list[Event] = [
        {"type": "tool_call", "index": 0, "id": None, "name": None, "arguments": "x"}
    ]
    assert assemble_tool_calls(only_args) == [ToolCall(0, None, None, "x")]


# -- a whole chat.completion -------------------------------------------------------------------


def test_completion_to_chunk_gives_the_stream_events() -> None:
    body = {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello",
                    "reasoning_content": "hmm",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        },
                        {
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "g", "arguments": "[]"},
                        },
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": 2},
        },
    }
    state = TurnState()
    events = state.feed(completion_to_chunk(body)) + state.finish(True)
    assert events == [
        {"type": "reasoning", "content": "hmm"},
        {"type": "text", "content": "Hello"},
        {"type": "tool_call", "index": 0, "id": "c1", "name": "f", "arguments": "{}"},
        {"type": "tool_call", "index": 1, "id": "c2", "name": "g", "arguments": "[]"},
        {"type": "usage", "input_tokens": 7, "output_tokens": 4, "cache_read_tokens": 2},
        {"type": "finish", "reason": "tool_calls"},
    ]
    assert body["choices"][0]["message"]["tool_calls"][0].get("index") is None  # not mutated


def test_completion_to_chunk_edge_cases() -> None:
    assert completion_to_chunk([1]) == [1]
    assert completion_to_chunk({"error": {"message": "x"}}) == {
        "error": {"message": "x"},
        "choices": [],
    }
    assert completion_to_chunk({"choices": [{"message": None, "finish_reason": "stop"}]}) == {
        "choices": [{"delta": {}, "finish_reason": "stop"}]
    }
    with pytest.raises(StreamError, match=r"error: x$"):
        TurnState().feed(completion_to_chunk({"error": {"message": "x"}}))


# -- the fast paths give what the general path gives ------------------------------------------------

_TEXT = {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}


def _piece(call: dict[str, Any]) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}


_OPEN_CALL = _piece({"index": 0, "id": "c1", "type": "function", "function": {"name": "f"}})


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        # Plain text: the fast path.
        ([_TEXT], [{"type": "text", "content": "hi"}]),
        # What the fast path must leave to the general path, and the general path's answer.
        (
            [{"choices": [{"delta": {"content": "a<think>b"}}]}],
            [{"type": "text", "content": "a"}, {"type": "reasoning", "content": "b"}],
        ),
        (
            [{**_TEXT, "usage": {"prompt_tokens": 3}}],
            [
                {"type": "text", "content": "hi"},
                {"type": "usage", "input_tokens": 3, "output_tokens": 0, "cache_read_tokens": 0},
            ],
        ),
        (
            [{"choices": [{"delta": {"content": "hi"}, "finish_reason": "stop"}]}],
            [{"type": "text", "content": "hi"}, {"type": "finish", "reason": "stop"}],
        ),
        ([{**_TEXT, "error": {"message": "boom"}}], "server_error"),
        (
            [_OPEN_CALL, _piece({"index": 0, "function": {"arguments": "{}"}})],
            [
                {"type": "tool_call", "index": 0, "id": "c1", "name": "f", "arguments": ""},
                {"type": "tool_call", "index": 0, "id": None, "name": None, "arguments": "{}"},
            ],
        ),
        (
            [{"choices": [{"delta": {"content": "hi", "reasoning": "r"}}]}],
            [{"type": "reasoning", "content": "r"}, {"type": "text", "content": "hi"}],
        ),
        # No index: the open call's slot, through the general path.
        (
            [_OPEN_CALL, _piece({"function": {"arguments": "x"}})],
            [
                {"type": "tool_call", "index": 0, "id": "c1", "name": "f", "arguments": ""},
                {"type": "tool_call", "index": 0, "id": None, "name": None, "arguments": "x"},
            ],
        ),
        # Another index than the open call's: a new slot, through the general path.
        (
            [_OPEN_CALL, _piece({"index": 1, "function": {"arguments": "{}"}})],
            [
                {"type": "tool_call", "index": 0, "id": "c1", "name": "f", "arguments": ""},
                {"type": "tool_call", "index": 1, "id": None, "name": None, "arguments": "{}"},
            ],
        ),
        # An index of 0.0 or True, a name with the arguments, arguments as an object.
        (
            [_OPEN_CALL, _piece({"index": 0.0, "function": {"arguments": "x"}})],
            [
                {"type": "tool_call", "index": 0, "id": "c1", "name": "f", "arguments": ""},
                {"type": "tool_call", "index": 0, "id": None, "name": None, "arguments": "x"},
            ],
        ),
        (
            [_OPEN_CALL, _piece({"index": True, "function": {"arguments": "x"}})],
            [
                {"type": "tool_call", "index": 0, "id": "c1", "name": "f", "arguments": ""},
                {"type": "tool_call", "index": 0, "id": None, "name": None, "arguments": "x"},
            ],
        ),
        (
            [_OPEN_CALL, _piece({"index": 0, "function": {"name": "f", "arguments": "x"}})],
            [
                {"type": "tool_call", "index": 0, "id": "c1", "name": "f", "arguments": ""},
                {"type": "tool_call", "index": 0, "id": None, "name": "f", "arguments": "x"},
            ],
        ),
        (
            [_OPEN_CALL, _piece({"index": 0, "function": {"arguments": {"a": 1}}})],
            [
                {"type": "tool_call", "index": 0, "id": "c1", "name": "f", "arguments": ""},
                {"type": "tool_call", "index": 0, "id": None, "name": None, "arguments": '{"a":1}'},
            ],
        ),
        # Arguments before any open call: the general path opens slot 0.
        (
            [_piece({"index": 0, "function": {"arguments": "x"}})],
            [{"type": "tool_call", "index": 0, "id": None, "name": None, "arguments": "x"}],
        ),
    ],
)
def test_fast_paths_match_the_general_path(chunks: list[Any], expected: Any) -> None:
    state = TurnState()
    if expected == "server_error":
        with pytest.raises(StreamError) as info:
            state.feed(chunks[0])
        assert info.value.code == "server_error"
        return
    events = [event for chunk in chunks for event in state.feed(chunk)] + state.finish(False)
    if expected[-1]["type"] != "finish":  # no finish_reason and no [DONE]
        expected = [*expected, {"type": "finish", "reason": "truncated"}]
    assert events == expected


@pytest.mark.parametrize(
    "data",
    [
        '{"a": 1}',
        ' {"a": 1}',
        '{"a": 1} ',
        "\t[1, 2]\r\n",
        "NaN",
        "-Infinity",
        "1e400",
        '"\\ud800"',
        "12345678901234567890123456789",
        "\ufeff{}",
        "",
        "   ",
        "{",
        '{"a": 1} x',
        "[1,]",
        "nul",
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_loads_is_json_loads(data: str) -> None:
    def outcome(loads: Any) -> Any:
        try:
            return ("value", repr(loads(data)))
        except (ValueError, RecursionError) as exc:
            return (type(exc).__name__, str(exc))

    assert outcome(_loads) == outcome(json.loads)
