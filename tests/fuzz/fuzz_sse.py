"""Coverage-guided fuzzing of the Python SSE decoder with atheris (`nox -s fuzz`).

Seeds: the SSE bodies of every parity case (tests/parity/cases/*.json, rendered by the MockServer's
own script compiler), written to a corpus dir. Each input is split into reads at positions taken from
its first bytes and decoded under small or default limits; anything but StreamError `too_large` is
a crash, as is a split decoding differently from the whole. Arguments after the script go to
libFuzzer, e.g. `-max_total_time=60` (the nox session's default) or `-runs=100000`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from brainline._core.errors import StreamError
    from brainline._core.sse import SSEDecoder

from brainline.testing.server import compile_script

ROOT = Path(__file__).resolve().parents[2]


def seed_corpus(directory: Path) -> int:
    """One file per 2xx SSE body found in the parity cases; returns how many."""
    count = 0
    for path in sorted((ROOT / "tests/parity/cases").glob("*.json")):
        server = json.loads(path.read_text(encoding="utf-8")).get("server")
        try:
            script = compile_script(server)
        except Exception:  # a case whose server block is not a script of its own
            continue
        responses = list(script.responses) + [r for _, rs in script.routes for r in rs]
        for at, response in enumerate(responses):
            body = b"".join(response.pieces)
            if body:
                (directory / f"{path.stem}-{at}").write_bytes(body)
                count += 1
    return count


def _decode(pieces: list[bytes], max_line: int, max_event: int) -> list[tuple[str | None, str]]:
    decoder = SSEDecoder(max_line_bytes=max_line, max_event_bytes=max_event)
    events = []
    for piece in pieces:
        events += [(e.event, e.data) for e in decoder.decode(piece)]
    events += [(e.event, e.data) for e in decoder.flush()]
    return events


def test_one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    small = data[0] & 1
    max_line = 16 + data[1] * 4 if small else 1 << 20
    max_event = 16 + data[2] * 8 if small else 4 << 20
    body = data[3:]
    step = (data[0] >> 1) + 1
    pieces = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    try:
        whole = _decode([body], max_line, max_event)
    except StreamError as exc:
        if exc.code != "too_large":
            raise
        return
    if not small:
        assert _decode(pieces, max_line, max_event) == whole, "a split changed the events"


def main() -> None:
    corpus = Path(tempfile.mkdtemp(prefix="brainline-fuzz-"))
    seeds = seed_corpus(corpus)
    print(f"fuzz: {seeds} seed inputs from the parity cases in {corpus}", flush=True)
    atheris.Setup([sys.argv[0], *sys.argv[1:], str(corpus)], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
