"""The README's demo: one streamed turn through the Python package, then through the TypeScript one,
both against brainline's embedded OpenAI-compatible server on 127.0.0.1 (no network, no key).

    python docs/examples/demo.py [--node typescript/]

With --node the server is the TypeScript one (`brainline mock-server` from the built package), else
the Python one: the same script format, the same bytes (tests/mockserver/test_drift.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from brainline import CustomLLM, assemble_tool_calls
from brainline.testing import MockServer

SCRIPT = {
    "text": ["It is ", "sunny ", "in Rome, ", "24 degrees ", "with a light breeze."],
    "usage": {
        "prompt_tokens": 42,
        "completion_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 10},
    },
    "delay_ms": 60,
}
MESSAGES = [{"role": "user", "content": "What is the weather in Rome?"}]


async def python_turn(url: str) -> None:
    async with CustomLLM(base_url=url, model="mock-model", session_user_prefix="demo-call-") as llm:
        events = []
        print("python     > ", end="", flush=True)
        async for ev in llm.stream(MESSAGES, call_id="call-1", caller="+15551234567"):
            events.append(ev)
            if ev["type"] == "text":
                print(ev["content"], end="", flush=True)
            elif ev["type"] == "usage":
                print(
                    f"\n             usage: {ev['input_tokens']} in (+{ev['cache_read_tokens']} cached), "
                    f"{ev['output_tokens']} out",
                    end="",
                )
            elif ev["type"] == "finish":
                print(f"\n             finish: {ev['reason']}")
        assert not assemble_tool_calls(events)


@contextlib.asynccontextmanager
async def typescript_server(package: Path) -> AsyncIterator[str]:
    """`node dist/cli.js mock-server --script FILE`: the base URL; stopped at end of its stdin."""
    with tempfile.TemporaryDirectory(prefix="brainline-demo-") as tmp:
        script = Path(tmp) / "script.json"
        script.write_text(json.dumps(SCRIPT), encoding="utf-8")
        cli = package / "dist" / "cli.js"
        proc = await asyncio.create_subprocess_exec(
            "node", str(cli), "mock-server", "--script", str(script),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        try:
            yield (await proc.stdout.readline()).decode().strip()
        finally:
            proc.stdin.close()
            await proc.wait()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--node", type=Path, help="the typescript/ package folder (built) to run the TS turn"
    )
    args = parser.parse_args()
    server = MockServer(SCRIPT) if args.node is None else typescript_server(args.node.resolve())
    async with server as url:
        print(f"embedded server: {url}" + ("" if args.node is None else " (TypeScript)"))
        await python_turn(url)
        if args.node is not None:
            script = Path(__file__).with_name("demo.mjs")
            proc = await asyncio.create_subprocess_exec(
                "node", str(script), url, str(args.node.resolve())
            )
            if await proc.wait() != 0:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
