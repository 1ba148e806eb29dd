"""The README's demo: one streamed turn through the Python package, then through the TypeScript one,
both against brainline's embedded OpenAI-compatible server on 127.0.0.1 (no network, no key).

    python docs/examples/demo.py [--node typescript/]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
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


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--node", type=Path, help="the typescript/ package folder (built) to run the TS turn"
    )
    args = parser.parse_args()
    async with MockServer(SCRIPT) as url:
        print(f"embedded server: {url}")
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
