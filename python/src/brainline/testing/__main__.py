"""``python -m brainline.testing [--port P] [--script FILE]``: run the mock server.

Prints the base URL (``http://127.0.0.1:PORT/v1``) as the first line of stdout, then serves until
SIGTERM, SIGINT or end of stdin (``--ignore-stdin`` serves on when stdin is closed or /dev/null).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence

from .server import MockServer, ScriptError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m brainline.testing",
        description="A scripted OpenAI-compatible streaming server on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0 = any free port)")
    parser.add_argument(
        "--script", help="JSON script file (see docs/testing.md); default: a demo turn"
    )
    parser.add_argument("--ignore-stdin", action="store_true", help="do not stop at end of stdin")
    return parser


async def _serve(server: MockServer, watch_stdin: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    url = await server.start()
    print(url, flush=True)
    if watch_stdin:

        def read_stdin() -> None:
            # The file descriptor, not sys.stdin: a daemon thread blocked in the buffered reader
            # holds its lock, and a stop by signal then ends in "Fatal Python error:
            # _enter_buffered_busy" at interpreter shutdown.
            with contextlib.suppress(Exception):
                while os.read(fd, 65536):
                    pass
            loop.call_soon_threadsafe(stop.set)

        fd = sys.stdin.fileno()

        threading.Thread(target=read_stdin, name="stdin-watch", daemon=True).start()
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    script: object = None
    if args.script:
        try:
            with open(args.script, encoding="utf-8") as handle:
                script = json.load(handle)
        except (OSError, ValueError) as exc:
            print(f"cannot read script {args.script}: {exc}", file=sys.stderr)
            return 2
    try:
        server = MockServer(script, port=args.port)
    except ScriptError as exc:
        print(f"invalid script: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(server, not args.ignore_stdin))
    except OSError as exc:
        print(f"cannot serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
