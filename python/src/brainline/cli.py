"""The `brainline` command: `brainline chat PROMPT [flags]` and `brainline mock-server`.

The option flags come from the spec (`_generated/cli_options.py`); typescript/src/cli.ts is the same
program, flag for flag and byte for byte on stdout in `--json` mode. Exit codes: 0 on success, 1 for
an API or stream error, 2 for a configuration or usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from ._core.errors import BrainlineError, ConfigError
from ._core.events import Event, assemble_tool_calls
from ._core.metrics import TurnMetrics
from ._generated import registry
from ._generated.cli_options import OPTIONS, PROVIDERS
from ._generated.constants import VERSION
from ._generated.errors import ERRORS

DEFAULT_PROVIDER = "custom"
EMBEDDED_MODEL = "mock-model"
EXIT_API, EXIT_CONFIG, EXIT_INTERRUPTED = 1, 2, 130
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")
_METAVARS = {
    "string": "TEXT",
    "string_or_string_list": "TEXT",
    "number": "NUMBER",
    "integer": "INT",
    "boolean": "true|false",
    "tool_choice": "TEXT|JSON",
}


def parse_flag(kind: str, text: str) -> Any:
    """A flag's text as the option's type. Text that does not parse is passed on unchanged, so the
    provider's constructor rejects it with the same typed error (and code) as in TypeScript."""
    if kind == "number" and _NUMBER.fullmatch(text):
        return float(text)
    if kind == "integer" and _INTEGER.fullmatch(text):
        return int(text)
    if kind == "boolean" and text in ("true", "false"):
        return text == "true"
    if kind in ("headers", "string_map", "json_object") or (
        kind == "tool_choice" and text.lstrip().startswith("{")
    ):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"error: usage: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="brainline",
        description="Stream any OpenAI-compatible /chat/completions endpoint.",
    )
    parser.add_argument("--version", action="version", version=f"brainline {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    chat = sub.add_parser(
        "chat",
        help="stream one turn and print it",
        description="Stream one turn. Without --base-url, talk to the embedded mock server.",
    )
    chat.add_argument("prompt", help="the user message")
    chat.add_argument(
        "--provider", choices=sorted(PROVIDERS), default=DEFAULT_PROVIDER, help="provider preset"
    )
    chat.add_argument("--call-id", help="call id (session continuity)")
    chat.add_argument("--caller", help="caller number (hashed; never sent or printed raw)")
    chat.add_argument("--json", action="store_true", help="print one JSON event per line")
    for o in OPTIONS:
        repeat = o.type == "string_or_string_list"
        chat.add_argument(
            o.flag,
            dest=f"opt_{o.name}",
            action="append" if repeat else "store",
            default=argparse.SUPPRESS,
            metavar=_METAVARS.get(o.type, "JSON"),
            help=o.doc.replace("%", "%%") + (" (repeatable)" if repeat else ""),
        )
    server = sub.add_parser(
        "mock-server",
        help="run the embedded OpenAI-compatible mock server",
        description="Print the base URL, then serve until SIGTERM, SIGINT or end of stdin.",
    )
    server.add_argument("--port", type=int, default=0, help="port (0 = any free port)")
    server.add_argument("--script", help="JSON script file (docs/testing.md)")
    server.add_argument("--ignore-stdin", action="store_true", help="keep serving at end of stdin")
    return parser


def provider_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The constructor arguments given as flags, read as their spec types."""
    kwargs: dict[str, Any] = {}
    for o in OPTIONS:
        value = getattr(args, f"opt_{o.name}", None)
        if value is None:
            continue
        if isinstance(value, list):
            kwargs[o.name] = value[0] if len(value) == 1 else list(value)
        else:
            kwargs[o.name] = parse_flag(o.type, value)
    unknown = set(kwargs) & set(PROVIDERS[args.provider].refused)
    if unknown:
        flags = ", ".join(sorted(o.flag for o in OPTIONS if o.name in unknown))
        raise _UsageError(f"{flags} not accepted by --provider {args.provider}")
    return kwargs


def flag_message(exc: BrainlineError) -> str:
    """The error's message; in a ConfigError's, the leading option name (`max_retries` /
    `maxRetries` in the library) becomes the flag the user typed and the null word "unset", so both
    CLIs print the same words."""
    message = str(exc)
    if not isinstance(exc, ConfigError):
        return message
    template = ERRORS.get(exc.code, ("", ""))[1]
    if (
        "{null}" in template
    ):  # the library's null word (None / undefined) is "unset" on a command line
        head, tail = template.split("{null}", 1)
        before, after = _PLACEHOLDER.split(head)[-1], _PLACEHOLDER.split(tail)[0]
        message = message.replace(f"{before}None{after}", f"{before}unset{after}", 1)
    for o in OPTIONS:
        if message.startswith(o.name + " "):
            return o.flag + message[len(o.name) :]
    return message


class _UsageError(Exception):
    pass


def _timing_line(m: TurnMetrics) -> str:
    """`timing: first token 120 ms, 480 ms in all, 14 chunks, request id r1` (stderr)."""

    def ms(value: float | None) -> str:
        return "none" if value is None else f"{round(value)} ms"

    line = f"timing: first token {ms(m['first_progress_ms'])}, {ms(m['duration_ms'])} in all"
    line += f", {m['chunks']} chunks"
    return line + (f", request id {m['request_id']}" if m["request_id"] else "")


class _Printer:
    """Writes events as they arrive: text to stdout, the rest to stderr (or all as JSON lines)."""

    def __init__(self, as_json: bool, out: TextIO, err: TextIO) -> None:
        self.as_json, self.out, self.err = as_json, out, err
        self.events: list[Event] = []
        self.wrote_text = False

    def event(self, ev: Event) -> None:
        self.events.append(ev)
        if self.as_json:
            # The finish event's metrics are times: the JSON lines stay the same bytes in both
            # languages without them.
            line = {k: v for k, v in ev.items() if k != "metrics"}
            self.out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
            self.out.flush()
        elif ev["type"] == "text":
            self.out.write(ev["content"])
            self.out.flush()
            self.wrote_text = True
        elif ev["type"] == "usage":
            self._end_text()
            self.err.write(
                f"usage: {ev['input_tokens']} in (+{ev['cache_read_tokens']} cached), "
                f"{ev['output_tokens']} out\n"
            )
        elif ev["type"] == "finish":
            self._end_text()
            for call in assemble_tool_calls(self.events):
                self.err.write(f"tool call: {call.name}({call.arguments}) id={call.id}\n")
            metrics = ev.get("metrics")
            if metrics is not None:
                self.err.write(_timing_line(metrics) + "\n")
            self.err.write(f"finish: {ev['reason']}\n")

    def error(self, exc: BrainlineError) -> None:
        self._end_text()
        message = flag_message(exc)
        if self.as_json:
            line = {"type": "error", "code": exc.code, "message": message}
            self.out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
            self.out.flush()
        self.err.write(f"error: {exc.code}: {message}\n")

    def _end_text(self) -> None:
        if self.wrote_text:
            self.out.write("\n")
            self.out.flush()
            self.wrote_text = False


async def chat(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """One streamed turn; with no --base-url, against the embedded mock server."""
    from .testing import MockServer

    printer = _Printer(args.json, out, err)
    kwargs = provider_kwargs(args)
    server: MockServer | None = None
    if "base_url" not in kwargs:
        server = MockServer(None)
        kwargs["base_url"] = await server.start()
        err.write(f"embedded mock server: {kwargs['base_url']}\n")
        preset = PROVIDERS[args.provider]
        if (
            "model" not in preset.refused
            and "model" not in preset.defaults
            and "model" not in kwargs
        ):
            kwargs["model"] = EMBEDDED_MODEL
    cls = getattr(registry, PROVIDERS[args.provider].class_name)
    try:
        llm = cls(**kwargs)
        async with llm:
            messages = [{"role": "user", "content": args.prompt}]
            async for ev in llm.stream(messages, call_id=args.call_id, caller=args.caller):
                printer.event(ev)
    except BrainlineError as exc:
        printer.error(exc)
        return EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_API
    finally:
        if server is not None:
            await server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "mock-server":
        from .testing.__main__ import main as serve

        forward = ["--port", str(args.port)]
        forward += ["--script", args.script] if args.script else []
        forward += ["--ignore-stdin"] if args.ignore_stdin else []
        return serve(forward)
    try:
        return asyncio.run(chat(args, sys.stdout, sys.stderr))
    except _UsageError as exc:
        sys.stderr.write(f"error: usage: {exc}\n")
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
