"""`nox -s build` smoke turn for the installed wheel: run in a fresh venv that has only the wheel.

python smoke.py  -> one streamed turn through the installed package against its embedded MockServer,
then the installed `brainline` console script (embedded server as well).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import brainline
from brainline import CustomLLM
from brainline.testing import MockServer


async def turn() -> None:
    script = {"text": ["Hel", "lo"], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    async with MockServer(script) as url, CustomLLM(base_url=url, model="m") as llm:
        events = [ev async for ev in llm.stream([{"role": "user", "content": "hi"}])]
    assert [e["type"] for e in events] == ["text", "text", "usage", "finish"], events
    assert "site-packages" in Path(brainline.__file__).as_posix(), brainline.__file__
    assert (Path(brainline.__file__).parent / "py.typed").exists()


def main() -> int:
    asyncio.run(turn())
    exe = shutil.which("brainline", path=str(Path(sys.executable).parent))
    assert exe is not None, "the brainline console script is not installed"
    proc = subprocess.run([exe, "chat", "hi", "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[-1] == {"type": "finish", "reason": "stop"}, events
    print(f"wheel ok: brainline {brainline.__version__}, API turn and console script")
    return 0


if __name__ == "__main__":
    sys.exit(main())
