"""Property tests of the Python SSE decoder (typescript/test/reliability/sse.property.test.ts mirrors).

- a valid stream decodes to the same events however its bytes are split across reads;
- arbitrary bytes, split anywhere, under any limits, raise nothing but StreamError `too_large`,
  and once raised the decoder keeps raising it.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brainline._core.errors import StreamError
from brainline._core.sse import ServerSentEvent, SSEDecoder

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_END = st.sampled_from([b"\n", b"\r\n", b"\r"])
_VALUE = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=30
).map(lambda s: s.encode())
_LINE = st.one_of(
    st.tuples(st.sampled_from([b"data:", b"data: "]), _VALUE).map(b"".join),
    st.tuples(st.just(b"event: "), _VALUE).map(b"".join),
    st.tuples(st.just(b":"), _VALUE).map(b"".join),
    st.tuples(st.sampled_from([b"id: ", b"retry: ", b"other: ", b"data"]), _VALUE).map(b"".join),
    st.just(b""),
)


@st.composite
def valid_streams(draw: st.DrawFn) -> bytes:
    """Lines with any mix of LF, CRLF and CR ends, maybe a BOM, maybe an unterminated last line."""
    lines = draw(st.lists(st.tuples(_LINE, _END), max_size=15))
    body = b"".join(line + end for line, end in lines)
    if draw(st.booleans()):
        body += draw(_LINE)
    if draw(st.integers(0, 9)) == 0:
        body = b"\xef\xbb\xbf" + body
    return body


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    pieces, last = [], 0
    for cut in cuts:
        pieces.append(data[last:cut])
        last = cut
    pieces.append(data[last:])
    return pieces


def _decode(pieces: list[bytes], **limits: int) -> list[ServerSentEvent]:
    decoder = SSEDecoder(**limits)
    events: list[ServerSentEvent] = []
    for piece in pieces:
        events.extend(decoder.decode(piece))
    events.extend(decoder.flush())
    return events


@SETTINGS
@given(st.data(), valid_streams())
def test_any_split_decodes_like_the_whole(data: st.DataObject, stream: bytes) -> None:
    whole = _decode([stream])
    assert _decode(data.draw(splits(stream))) == whole
    assert _decode([stream[i : i + 1] for i in range(len(stream))]) == whole


@SETTINGS
@given(st.data(), valid_streams())
def test_a_cr_at_the_end_of_a_read_then_lf_is_one_line_end(
    data: st.DataObject, stream: bytes
) -> None:
    crlf = stream.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    lf = crlf.replace(b"\r\n", b"\n")
    assert _decode(data.draw(splits(crlf))) == _decode([lf])


@SETTINGS
@given(
    st.data(),
    st.binary(max_size=400),
    st.integers(1, 300),
    st.integers(1, 300),
)
def test_arbitrary_bytes_raise_only_stream_error(
    data: st.DataObject, blob: bytes, max_line: int, max_event: int
) -> None:
    decoder = SSEDecoder(max_line_bytes=max_line, max_event_bytes=max_event)
    try:
        for piece in data.draw(splits(blob)):
            for event in decoder.decode(piece):
                assert isinstance(event.data, str)
                assert event.event is None or isinstance(event.event, str)
        decoder.flush()
    except StreamError as exc:
        assert exc.code == "too_large"
        # Once failed, the decoder keeps failing the same way.
        try:
            decoder.decode(b"data: x\n\n")
        except StreamError as again:
            assert again.code == "too_large"
        else:
            raise AssertionError("a failed decoder decoded more input") from exc


@SETTINGS
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_under_default_limits_never_raise(blob: bytes) -> None:
    decoder = SSEDecoder()
    decoder.decode(blob)
    decoder.flush()
