"""Server-sent events decoding; typescript/src/core/sse.ts mirrors it.

Follows the WHATWG event-stream rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).
The decoder works on bytes: CR and LF never occur inside a multi-byte UTF-8 sequence, so lines are
split on bytes and text is decoded once per event (per read on the fast path), which also keeps a
character split across reads whole.
"""

from __future__ import annotations

from typing import NamedTuple

from .._generated.constants import SSE_MAX_EVENT_BYTES, SSE_MAX_LINE_BYTES
from .errors import StreamError, make_error

__all__ = ["SSEDecoder", "ServerSentEvent"]

_BOM = b"\xef\xbb\xbf"
_CR = 13
_LF = 10
_new = tuple.__new__


class ServerSentEvent(NamedTuple):
    """One dispatched event: its name (None when the stream set none) and its data."""

    event: str | None
    data: str


class SSEDecoder:
    """Bytes in, events out, incrementally.

    Lines end in LF, CRLF or CR (also a CR ending one read and an LF starting the next); a line
    starting with `:` is a comment; `field:value` takes one optional space after the colon; `data`
    lines join with LF; `event` names the event; a blank line dispatches, but only when there was
    a `data` line. Invalid UTF-8 becomes U+FFFD; a leading byte order mark is dropped. Unlike the
    spec, flush() dispatches the event still pending at the end of input, and a line
    `error: <value>` (llama.cpp's server) counts as `event: error` plus `data: <value>`.

    A line longer than `max_line_bytes` or event data longer than `max_event_bytes` (in UTF-8
    bytes, without line ends) raises StreamError `too_large`. When events completed earlier in the
    same read, they are returned first and the error is raised by the next call (it is also
    available as `error` at once).
    """

    __slots__ = (
        "_at_start",
        "_data",
        "_data_size",
        "_event",
        "_max_event",
        "_max_line",
        "_min_limit",
        "_plain",
        "_skip_lf",
        "_tail",
        "_tail_size",
        "error",
    )

    def __init__(
        self,
        *,
        max_line_bytes: int = SSE_MAX_LINE_BYTES,
        max_event_bytes: int = SSE_MAX_EVENT_BYTES,
    ) -> None:
        self._max_line = max_line_bytes
        self._max_event = max_event_bytes
        self._min_limit = min(max_line_bytes, max_event_bytes)
        self._tail: list[bytes] = []  # the pieces of the line not terminated yet
        self._tail_size = 0
        self._skip_lf = False  # the input so far ended in CR: a leading LF ends the same line
        self._at_start = True  # a byte order mark may still come
        self._event: str | None = None
        self._data: list[bytes] = []  # the data lines of the pending event
        self._data_size = 0  # their joined size, as of the end of the last read
        # Nothing pending (no partial line, event, CR or error): the fast path may be taken.
        self._plain = True
        self.error: StreamError | None = None
        """The limit error found after events that were returned first; raised by the next call."""

    def decode(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events completed by this piece of input."""
        if (
            self._plain
            and chunk.startswith(b"data: ")
            and chunk.endswith(b"\n\n")
            and _CR not in chunk  # int needles: a plain memchr, cheaper than b"\r"
            and len(chunk) <= self._min_limit
        ):
            # The usual read: whole events of one `data: ` line each, LF line ends, nothing
            # pending, under both limits. (Starting with "data: ", it has no byte order mark.)
            self._at_start = False
            end = len(chunk) - 2
            if chunk.find(_LF) == end:  # one event, the most common read of all
                return [_new(ServerSentEvent, (None, chunk[6:end].decode("utf-8", "replace")))]
            # When every LF belongs to a separator, the split gives exactly the events' data.
            datas = chunk[6:end].decode("utf-8", "replace").split("\n\ndata: ")
            if chunk.count(_LF) == 2 * len(datas):
                return [_new(ServerSentEvent, (None, data)) for data in datas]
        return self._decode(chunk)

    def flush(self) -> list[ServerSentEvent]:
        """At the end of input: the pending line and event, dispatched as if terminated."""
        if self.error is not None:
            raise self.error
        self._skip_lf = False
        lines = [b""]
        if self._tail:
            lines.insert(0, b"".join(self._tail))
            self._tail, self._tail_size = [], 0
        events = self._lines(lines, len(lines[0]))
        self._plain = True
        return events

    def _decode(self, chunk: bytes) -> list[ServerSentEvent]:
        """Any input: CR line ends, pending lines or events, a byte order mark, the limits."""
        if self.error is not None:
            raise self.error
        if self._at_start:
            head = b"".join((*self._tail, chunk))
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._tail, self._tail_size = ([head] if head else []), len(head)
                self._plain = not head
                return []
            self._at_start = False
            self._tail, self._tail_size = [], 0
            chunk = head[len(_BOM) :] if head.startswith(_BOM) else head
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
        events: list[ServerSentEvent] = []
        if _CR not in chunk and _LF not in chunk:
            if chunk:
                self._tail.append(chunk)
                self._tail_size += len(chunk)
                if self._tail_size > self._max_line:
                    raise self._too_large("line", self._max_line)
        else:
            if self._tail:
                self._tail.append(chunk)
                buf = b"".join(self._tail)
                self._tail, self._tail_size = [], 0
            else:
                buf = chunk
            lines = buf.splitlines()  # bytes split on LF, CRLF and CR only
            last = buf[-1]
            if last == _CR:
                self._skip_lf = True
            elif last != _LF:
                rest = lines.pop()
                self._tail, self._tail_size = [rest], len(rest)
            events = self._lines(lines, len(buf))
            if self._tail_size > self._max_line and self.error is None:
                self._fail("line", self._max_line, events)
        self._plain = (
            self.error is None
            and not self._skip_lf
            and not self._tail
            and not self._data
            and self._event is None
        )
        return events

    def _lines(self, lines: list[bytes], size: int) -> list[ServerSentEvent]:
        """Interpret complete lines (`size` bytes of input in all)."""
        events: list[ServerSentEvent] = []
        data = self._data
        name = self._event
        # Input shorter than both limits cannot break one: then the checks are skipped.
        check = size + self._data_size > self._min_limit
        for line in lines:
            if not line:
                if data:
                    text = b"\n".join(data)
                    if check and len(text) > self._max_event:
                        self._fail("event", self._max_event, events)
                        break
                    events.append(_new(ServerSentEvent, (name, text.decode("utf-8", "replace"))))
                    data = []
                name = None
                continue
            if check and len(line) > self._max_line:
                self._fail("line", self._max_line, events)
                break
            if line.startswith(b"data: "):
                data.append(line[6:])
                continue
            colon = line.find(b":")
            if colon == 0:
                continue  # a comment
            if colon < 0:
                field, value = line, b""
            else:
                field = line[:colon]
                value = (
                    line[colon + 2 :] if line[colon + 1 : colon + 2] == b" " else line[colon + 1 :]
                )
            if field == b"data":
                data.append(value)
            elif field == b"event":
                name = value.decode("utf-8", "replace") or None
            elif field == b"error":
                # Not a WHATWG field: llama.cpp's server writes a failure as `error: {...}`.
                name = "error"
                data.append(value)
            # "id" and "retry" do not change what is dispatched; other fields are ignored.
        self._data = data
        self._event = name
        self._data_size = sum(map(len, data)) + len(data) - 1 if data else 0
        if self._data_size > self._max_event and self.error is None:
            self._fail("event", self._max_event, events)
        return events

    def _fail(self, what: str, limit: int, events: list[ServerSentEvent]) -> None:
        """Remember the limit error; raise it now unless events came before it in this read."""
        self.error = self._too_large(what, limit)
        if not events:
            raise self.error

    def _too_large(self, what: str, limit: int) -> StreamError:
        error = make_error("too_large", what=what, limit=limit)
        assert isinstance(error, StreamError)
        self.error = error
        self._plain = False
        return error
