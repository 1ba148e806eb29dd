"""SSEDecoder against the WHATWG event-stream rules, at every split of the input."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brainline._core.errors import StreamError
from brainline._core.sse import ServerSentEvent, SSEDecoder
from brainline._generated.constants import SSE_MAX_EVENT_BYTES, SSE_MAX_LINE_BYTES


def decode_all(pieces: list[bytes], **limits: int) -> list[ServerSentEvent]:
    decoder = SSEDecoder(**limits)
    events: list[ServerSentEvent] = []
    for piece in pieces:
        events += decoder.decode(piece)
    return events + decoder.flush()


def ev(data: str, event: str | None = None) -> ServerSentEvent:
    return ServerSentEvent(event, data)


# A stream exercising most rules: comments, named events, multi-line data, no space after the
# colon, a two- and a three-byte character, an empty-data event, unknown fields, and no final
# line end (flush).
SAMPLE_LINES = [
    ": hello",
    'data: {"a":"Caffè ☕"}',
    "",
    "event: hermes.tool.progress",
    "id: 7",
    "retry: 100",
    "data:first",
    "data:  second",
    "",
    "",
    "event: ignored without data",
    "",
    "data",
    "",
    "foo: bar",
    "data: 日本",
    "",
    "data: [DONE]",
]
SAMPLE_EVENTS = [
    ev('{"a":"Caffè ☕"}'),
    ev("first\n second", "hermes.tool.progress"),
    ev(""),
    ev("日本"),
    ev("[DONE]"),
]


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_every_line_ending(eol: str) -> None:
    stream = eol.join(SAMPLE_LINES).encode()
    assert decode_all([stream]) == SAMPLE_EVENTS
    # Terminated instead of flushed: the same events.
    assert decode_all([stream + (eol * 2).encode()]) == SAMPLE_EVENTS


def test_mixed_line_endings() -> None:
    stream = b"data: a\rdata: b\r\n\ndata: c\n\r\r\n"
    assert decode_all([stream]) == [ev("a\nb"), ev("c")]


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_split_at_every_byte_position(eol: str) -> None:
    stream = eol.join(SAMPLE_LINES).encode()
    for at in range(len(stream) + 1):
        assert decode_all([stream[:at], stream[at:]]) == SAMPLE_EVENTS, at


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_one_byte_per_read(eol: str) -> None:
    stream = eol.join(SAMPLE_LINES).encode()
    assert decode_all([stream[i : i + 1] for i in range(len(stream))]) == SAMPLE_EVENTS


def test_three_way_splits_inside_a_four_byte_character() -> None:
    stream = "data: 🎉!\n\n".encode()
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            assert decode_all([stream[:i], stream[i:j], stream[j:]]) == [ev("🎉!")], (i, j)


@given(st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    stream = "\r\n".join(SAMPLE_LINES).encode() + b"\r"
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert decode_all(pieces) == SAMPLE_EVENTS


def test_cr_at_the_end_of_one_read_and_lf_at_the_start_of_the_next_are_one_line_end() -> None:
    # Read as two line ends, the blank line between them would dispatch "a" on its own.
    assert decode_all([b"data: a\r", b"\ndata: b\n\n"]) == [ev("a\nb")]
    # An empty read in between does not lose the pending CR.
    assert decode_all([b"data: a\r", b"", b"\ndata: b\n\n"]) == [ev("a\nb")]
    # A CR followed by something else is a line end of its own.
    assert decode_all([b"data: a\r", b"\r"]) == [ev("a")]


def test_incremental_dispatch_returns_each_event_when_its_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.decode(b"data: one\n") == []
    assert decoder.decode(b"\n") == [ev("one")]
    assert decoder.decode(b"data: two\n\ndata: thr") == [ev("two")]
    assert decoder.decode(b"ee\n\n") == [ev("three")]
    assert decoder.flush() == []


def test_comments_are_ignored_and_do_not_dispatch() -> None:
    assert decode_all([b": keepalive\n\n: OPENROUTER PROCESSING\n\n"]) == []
    assert decode_all([b"data: a\n: comment inside\ndata: b\n\n"]) == [ev("a\nb")]
    assert decode_all([b":\n\n"]) == []


def test_one_optional_space_after_the_colon() -> None:
    assert decode_all([b"data:x\n\n"]) == [ev("x")]
    assert decode_all([b"data: x\n\n"]) == [ev("x")]
    assert decode_all([b"data:  x\n\n"]) == [ev(" x")]
    assert decode_all([b"data:\tx\n\n"]) == [ev("\tx")]
    assert decode_all([b"event:  e\ndata: x\n\n"]) == [ev("x", " e")]
    assert decode_all([b"data: a:b: c\n\n"]) == [ev("a:b: c")]


def test_blank_line_without_data_does_not_dispatch_and_resets_the_name() -> None:
    assert decode_all([b"event: foo\n\n"]) == []
    assert decode_all([b"event: foo\n\ndata: x\n\n"]) == [ev("x")]
    assert decode_all([b"\n\n\n\r\n\r"]) == []


def test_empty_data_lines_dispatch_empty_or_joined_data() -> None:
    assert decode_all([b"data:\n\n"]) == [ev("")]
    assert decode_all([b"data\n\n"]) == [ev("")]
    assert decode_all([b"data:\ndata:\n\n"]) == [ev("\n")]
    assert decode_all([b"data: a\ndata:\n\n"]) == [ev("a\n")]


def test_event_name_applies_to_one_event_only() -> None:
    stream = b"event: error\ndata: {}\n\ndata: {}\n\nevent:\ndata: x\n\n"
    assert decode_all([stream]) == [ev("{}", "error"), ev("{}"), ev("x")]


def test_other_fields_are_ignored() -> None:
    assert decode_all([b"id: 1\nretry: 5\nfoo: bar\nData: no\ndata : no\n\n"]) == []


def test_flush_dispatches_a_pending_line_and_event() -> None:
    decoder = SSEDecoder()
    assert decoder.decode(b"data: x") == []
    assert decoder.flush() == [ev("x")]
    decoder = SSEDecoder()
    assert decoder.decode(b"data: x\n") == []
    assert decoder.flush() == [ev("x")]
    assert SSEDecoder().flush() == []
    decoder = SSEDecoder()
    assert decoder.decode(b"data: x\r") == []
    assert decoder.flush() == [ev("x")]


def test_invalid_utf8_becomes_replacement_characters() -> None:
    assert decode_all([b"data: a\xffb\n\n"]) == [ev("a\ufffdb")]
    # An incomplete character at the very end of the input.
    assert decode_all([b"data: a\xe2\x98"]) == [ev("a\ufffd")]


def test_a_leading_byte_order_mark_is_dropped_once() -> None:
    bom = b"\xef\xbb\xbf"
    assert decode_all([bom + b"data: x\n\n"]) == [ev("x")]
    assert decode_all([bom[:1], bom[1:2], bom[2:] + b"data: x\n\n"]) == [ev("x")]
    # Later, a BOM is part of the line: here it spoils the field name, so "y" is not data.
    assert decode_all([b"data: x\n\n" + bom + b"data: y\n\n"]) == [ev("x")]
    assert decode_all([bom + bom + b"data: x\n\n"]) == []  # the second one starts a field name
    assert decode_all([b"\xef\xbb", b"data: x\n\n"]) == []


def test_line_over_the_limit_raises_too_large() -> None:
    assert decode_all([b"data: 1234\n\n"], max_line_bytes=10) == [ev("1234")]  # 10 bytes: ok
    with pytest.raises(StreamError) as info:
        decode_all([b"data: 12345\n\n"], max_line_bytes=10)
    assert info.value.code == "too_large"
    assert str(info.value) == "a stream line exceeded 10 bytes"
    assert info.value.partial_text == ""


def test_unterminated_line_over_the_limit_raises_before_it_ends() -> None:
    decoder = SSEDecoder(max_line_bytes=10)
    assert decoder.decode(b"data: 1234") == []
    with pytest.raises(StreamError, match="line exceeded 10 bytes"):
        decoder.decode(b"5")
    decoder = SSEDecoder(max_line_bytes=10)
    with pytest.raises(StreamError, match="line exceeded"):
        decoder.decode(b"data: a\ndata: 12345678")  # no event was complete before the tail
    decoder = SSEDecoder(max_line_bytes=10)
    assert decoder.decode(b"data: a\n\ndata: 12345678") == [ev("a")]  # this one was
    with pytest.raises(StreamError, match="line exceeded"):
        decoder.flush()
    # A comment is a line like any other.
    with pytest.raises(StreamError, match="line exceeded"):
        decode_all([b": " + b"x" * 20 + b"\n"], max_line_bytes=10)


def test_limit_counts_bytes_not_characters() -> None:
    line = "data: ☕☕".encode()  # 12 bytes, 8 characters
    with pytest.raises(StreamError, match="line exceeded 10 bytes"):
        decode_all([line + b"\n\n"], max_line_bytes=10)


def test_event_data_over_the_limit_raises_too_large() -> None:
    assert decode_all([b"data: 1234\ndata: 5\n\n"], max_event_bytes=6) == [ev("1234\n5")]
    with pytest.raises(StreamError) as info:
        decode_all([b"data: 1234\ndata: 56\n\n"], max_event_bytes=6)
    assert info.value.code == "too_large"
    assert str(info.value) == "a stream event exceeded 6 bytes"
    # The limit is per event: the size starts again after each dispatch.
    assert decode_all([b"data: 123456\n\ndata: 123456\n\n"], max_event_bytes=6) == [
        ev("123456"),
        ev("123456"),
    ]


def test_events_before_the_oversized_line_come_first_then_the_error() -> None:
    decoder = SSEDecoder(max_line_bytes=10)
    events = decoder.decode(b"data: a\n\ndata: 123456789\n\ndata: b\n\n")
    assert events == [ev("a")]
    assert decoder.error is not None
    assert decoder.error.code == "too_large"
    with pytest.raises(StreamError, match="line exceeded"):
        decoder.decode(b"data: c\n\n")
    with pytest.raises(StreamError, match="line exceeded"):
        decoder.flush()


def test_default_limits_come_from_the_spec() -> None:
    decoder = SSEDecoder()
    line = b"data: " + b"x" * (SSE_MAX_LINE_BYTES - 6)
    assert decoder.decode(line + b"\n\n") == [ev("x" * (SSE_MAX_LINE_BYTES - 6))]
    with pytest.raises(StreamError, match=f"line exceeded {SSE_MAX_LINE_BYTES} bytes"):
        SSEDecoder().decode(line + b"x\n")
    # Five lines of almost 1 MiB exceed the 4 MiB event limit.
    piece = line + b"\n"
    decoder = SSEDecoder()
    with pytest.raises(StreamError, match=f"event exceeded {SSE_MAX_EVENT_BYTES} bytes"):
        for _ in range(5):
            decoder.decode(piece)


def test_a_long_line_in_many_small_reads() -> None:
    decoder = SSEDecoder()
    payload = b"y" * 300_000
    events = []
    events += decoder.decode(b"data: ")
    for i in range(0, len(payload), 1000):
        events += decoder.decode(payload[i : i + 1000])
    events += decoder.decode(b"\n\n")
    assert events == [ev("y" * 300_000)]


# -- against a straightforward model of the WHATWG rules -----------------------------------------


def reference(stream: bytes) -> list[ServerSentEvent]:
    """The rules applied the slow, obvious way: decode everything, then line by line."""
    if stream.startswith(b"\xef\xbb\xbf"):
        stream = stream[3:]
    lines = re.split("\r\n|\r|\n", stream.decode("utf-8", "replace"))
    if lines[-1] == "":
        lines.pop()  # the input ended with a line end: no pending line
    events, data, name = [], None, None
    for line in [*lines, ""]:
        if line == "":
            if data is not None:
                events.append(ev("\n".join(data), name or None))
            data, name = None, None
            continue
        if line.startswith(":"):
            continue
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            data = [*(data or []), value]
        elif field == "event":
            name = value
    return events


TOKENS = [
    b"data: ",
    b"data:",
    b"data",
    b"event: ",
    b"event:x",
    b"id: 1",
    b": c",
    b"retry: 5",
    b"x",
    b'{"a":1}',
    b" ",
    b"\xc3\xa9",
    b"\xe2\x98\x95",
    b"\xff",
    b"\xef\xbb\xbf",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"\r\n\r\n",
    b"data: [DONE]\n\n",
    b"data: {}\n\n",
]


@given(
    st.lists(st.sampled_from(TOKENS), max_size=40),
    st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_matches_the_reference_at_any_split(tokens: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(tokens)
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert decode_all(pieces) == reference(stream)


@given(
    st.lists(
        st.sampled_from([b"data: {}\n\n", b"data: \xc3\xa9x\n\n", b"data: \n\n"]),
        min_size=1,
        max_size=10,
    )
)
def test_fast_path_reads_of_whole_events(events: list[bytes]) -> None:
    decoder = SSEDecoder()
    got = [e for chunk in events for e in decoder.decode(chunk)]
    assert got == reference(b"".join(events))
    assert SSEDecoder().decode(b"".join(events)) == got
