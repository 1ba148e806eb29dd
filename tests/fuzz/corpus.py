"""The shared SSE corpus: streams both decoders must decode to the same result.

`generate(seed, count)` is deterministic (random.Random(seed), no other input), so the corpus is not
stored: tests/reliability/test_sse_corpus.py regenerates it into a temp dir, decodes it with the
Python decoder in-process and with the TypeScript decoder through tests/fuzz/decode_corpus.mjs, and
requires equal results. `python tests/fuzz/corpus.py OUT.json.gz [--seed N] [--count N]` writes it.

A stream is a list of pieces (base64), fed one decode() call each, then flush(); `max_line` and
`max_event` are the decoder limits (None: the defaults). `decode(stream)` gives the result both
languages compute the same way: the events in order, then the error code when one was raised.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import random
import sys
from pathlib import Path
from typing import Any

SEED = 20261125
COUNT = 10_000


def _stream_of(pieces: list[bytes], max_line: int | None, max_event: int | None) -> dict[str, Any]:
    return {
        "pieces": [base64.b64encode(p).decode() for p in pieces],
        "max_line": max_line,
        "max_event": max_event,
    }


# Both decoders count the limits in input bytes, also on invalid UTF-8 (where one U+FFFD stands for
# 1 to 3 bytes); TypeScript used to count the UTF-8 of the decoded text, 3 bytes per U+FFFD. The
# generated streams under small limits include invalid UTF-8 too; these cases sit on the limits.
LIMITS_ON_INVALID_UTF8 = [
    _stream_of([b"data: \xff\xff\n\n"], 10, 10),  # TypeScript counted a 12-byte line
    _stream_of([b"data: \xff\xff\xff\xff\n\n"], 10, 4),  # both limits met exactly
    _stream_of([b"data: \xff\xff\xff\xff\xff\n\n"], 10, 10),  # the line is 1 byte over
    _stream_of([b"data: \xff\xff\xff\xff\xff\n\n"], 20, 4),  # the event is 1 byte over
    _stream_of([b"data: \xe2\x98\r\ndata: \xed\xa0", b"\x80\r\n\r\n"], 9, 6),
    _stream_of([b"data: \xe2\x98\r\ndata: \xed\xa0", b"\x80\r\n\r\n"], 9, 5),
    _stream_of([b"data: \xc3\xa9\xff\xe2\x98\x95\n", b"\n"], 12, 6),  # valid and invalid
    _stream_of([b"data: \xf0\x9f\x98", b"\xf0\x9f\x98", b"\n\n"], 11, 11),  # unterminated
]

_ENDS = (b"\n", b"\r\n", b"\r")
_TEXT = (
    "hello",
    "",
    " leading space",
    "a:b",
    "ünïcödé",
    "日本語",
    "😀 emoji",
    "[DONE]",
    '{"choices":[{"delta":{"content":"Hi"}}]}',
    '{"error":{"message":"boom"}}',
    "tab\tinside",
)
_FIELDS = (b"event", b"id", b"retry", b"data", b"foo", b"Data", b"data ", b"")
_NAMES = ("message", "error", "", "ping", "ü")
_INVALID = (
    b"\xff",
    b"\xc3",
    b"\xe2\x98",
    b"\xf0\x9f\x98",
    b"\xed\xa0\x80",
    b"\x80\x80",
    b"\xc0\xaf",
)


def _line(rng: random.Random) -> bytes:
    """One line without its end: data, event, comment, other fields, junk."""
    kind = rng.random()
    if kind < 0.45:
        value = rng.choice(_TEXT).encode()
        space = b" " if rng.random() < 0.8 else b""
        return b"data:" + space + value
    if kind < 0.55:
        return b"event: " + rng.choice(_NAMES).encode()
    if kind < 0.65:
        return b":" + rng.choice((b"", b" keep-alive", b"comment: x", b"\xe2\x80\xa6"))
    if kind < 0.75:
        field = rng.choice(_FIELDS)
        sep = rng.choice((b":", b": ", b":  ", b""))
        return field + sep + rng.choice(_TEXT).encode()
    if kind < 0.85:
        # Bytes that are not valid UTF-8 (or a character cut short) inside a data value.
        return b"data: " + rng.choice(_TEXT).encode() + rng.choice(_INVALID) + b"x"
    if kind < 0.92:
        return b"data: " + b"y" * rng.randrange(0, 300)
    return bytes(rng.randrange(0x20, 0x7F) for _ in range(rng.randrange(0, 40)))


def _stream(rng: random.Random) -> bytes:
    parts: list[bytes] = []
    if rng.random() < 0.05:
        parts.append(b"\xef\xbb\xbf")
    for _ in range(rng.randrange(0, 12)):
        if rng.random() < 0.3:
            parts.append(rng.choice(_ENDS))  # a blank line: dispatch
            continue
        end = rng.choice(_ENDS) if rng.random() < 0.7 else b"\n"
        parts.append(_line(rng) + end)
        if rng.random() < 0.4:
            parts.append(end)
    if rng.random() < 0.2:
        parts.append(_line(rng))  # unterminated at the end
    if rng.random() < 0.02:
        parts.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))))
    return b"".join(parts)


def _split(rng: random.Random, data: bytes) -> list[bytes]:
    if not data or rng.random() < 0.15:
        return [data]
    if rng.random() < 0.1:
        return [data[i : i + 1] for i in range(len(data))]
    cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randrange(1, 8))))
    pieces, last = [], 0
    for cut in cuts:
        pieces.append(data[last:cut])
        last = cut
    pieces.append(data[last:])
    return pieces


def generate(seed: int = SEED, count: int = COUNT) -> dict[str, Any]:
    rng = random.Random(seed)
    streams = []
    for _ in range(count):
        limits = rng.random() < 0.25
        streams.append(
            {
                "pieces": [base64.b64encode(p).decode() for p in _split(rng, _stream(rng))],
                "max_line": rng.randrange(8, 200) if limits else None,
                "max_event": rng.randrange(8, 400) if limits else None,
            }
        )
    return {"seed": seed, "count": count, "streams": streams}


def write(path: Path, seed: int = SEED, count: int = COUNT) -> dict[str, Any]:
    corpus = generate(seed, count)
    path.write_bytes(gzip.compress(json.dumps(corpus).encode(), mtime=0))
    return corpus


def decode(stream: dict[str, Any]) -> list[Any]:
    """[[event or None, data], ..., optionally {"error": code}] from the Python decoder."""
    from brainline._core.errors import StreamError
    from brainline._core.sse import SSEDecoder

    limits = {}
    if stream["max_line"] is not None:
        limits["max_line_bytes"] = stream["max_line"]
    if stream["max_event"] is not None:
        limits["max_event_bytes"] = stream["max_event"]
    decoder = SSEDecoder(**limits)
    out: list[Any] = []
    try:
        for piece in stream["pieces"]:
            out.extend([ev.event, ev.data] for ev in decoder.decode(base64.b64decode(piece)))
        out.extend([ev.event, ev.data] for ev in decoder.flush())
    except StreamError as exc:
        out.append({"error": exc.code})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--count", type=int, default=COUNT)
    args = parser.parse_args(argv)
    write(args.out, args.seed, args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
