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

# The decoders measure the limits differently on invalid UTF-8: Python counts input bytes, TypeScript
# the UTF-8 of the decoded text (each U+FFFD counts 3). So streams under small limits stay valid
# UTF-8 here, and test_sse_corpus.py keeps this case as a strict xfail until the two agree.
KNOWN_DIFFERENCE = {
    "pieces": [base64.b64encode(b"data: \xff\xff\n\n").decode()],
    "max_line": 10,
    "max_event": 10,
}

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


def _line(rng: random.Random, utf8_only: bool) -> bytes:
    """One line without its end: data, event, comment, other fields, junk."""
    kind = rng.random()
    if utf8_only and 0.75 <= kind < 0.85:
        kind = 0
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


def _stream(rng: random.Random, utf8_only: bool) -> bytes:
    """Streams under small limits are valid UTF-8 (see KNOWN_DIFFERENCE)."""
    parts: list[bytes] = []
    if rng.random() < 0.05:
        parts.append(b"\xef\xbb\xbf")
    for _ in range(rng.randrange(0, 12)):
        if rng.random() < 0.3:
            parts.append(rng.choice(_ENDS))  # a blank line: dispatch
            continue
        end = rng.choice(_ENDS) if rng.random() < 0.7 else b"\n"
        parts.append(_line(rng, utf8_only) + end)
        if rng.random() < 0.4:
            parts.append(end)
    if rng.random() < 0.2:
        parts.append(_line(rng, utf8_only))  # unterminated at the end
    if rng.random() < 0.02 and not utf8_only:
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
                "pieces": [base64.b64encode(p).decode() for p in _split(rng, _stream(rng, limits))],
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
