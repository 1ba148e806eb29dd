"""`nox -s build`: the npm package stands alone. Run in the fresh npm project where the tarball is
installed, with PATH holding only node, npm, npx and sh (no Python) and BRAINLINE_PYTHON unset:

- `npx brainline chat "hello"` streams the demo answer from the embedded mock server;
- `npx brainline mock-server` serves (a turn over HTTP, the records, a stop at end of stdin);
- smoke.mjs, smoke.cjs and `node --test testing.test.mjs` (a test using brainline/testing) pass.

python no_python.py PROJECT_DIR
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

DEMO = "Hello from the brainline mock server.\n"


def _bare_env(bin_dir: Path) -> dict[str, str]:
    """node, npm, npx and sh (npm runs bins through it) alone on PATH: no Python."""
    for tool in ("node", "npm", "npx", "sh"):
        found = shutil.which(tool)
        assert found is not None, f"{tool} is not on PATH"
        (bin_dir / tool).symlink_to(os.path.realpath(found))
    env = {"PATH": str(bin_dir), "HOME": os.environ.get("HOME", str(bin_dir))}
    for name in ("python", "python3"):
        assert shutil.which(name, path=env["PATH"]) is None, f"{name} is still on PATH"
    return env


def _run(project: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        argv, cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr}"
    return proc


def _chat(project: Path, env: dict[str, str]) -> None:
    proc = _run(project, env, "npx", "--no", "brainline", "chat", "hello")
    assert proc.stdout == DEMO, proc.stdout
    assert proc.stderr.startswith("embedded mock server: http://127.0.0.1:"), proc.stderr


def _mock_server(project: Path, env: dict[str, str]) -> None:
    with subprocess.Popen(
        ["npx", "--no", "brainline", "mock-server", "--port", "0"],
        cwd=project,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            assert server.stdout is not None and server.stdin is not None
            url = server.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), url
            request = urllib.request.Request(
                f"{url}/chat/completions", data=b'{"model":"m","messages":[]}', method="POST"
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                body = response.read().decode()
            assert '"content":"Hello"' in body and body.endswith("data: [DONE]\n\n"), body
            origin = url.removesuffix("/v1")
            with urllib.request.urlopen(f"{origin}/__mock/requests", timeout=10) as response:
                records = json.load(response)
            assert [r["path"] for r in records["requests"]] == ["/v1/chat/completions"], records
            server.stdin.close()  # the server stops at end of stdin
            assert server.wait(10) == 0
        finally:
            if server.poll() is None:
                server.kill()


def main() -> int:
    project = Path(sys.argv[1]).resolve()
    with tempfile.TemporaryDirectory(prefix="brainline-bare-path-") as tmp:
        env = _bare_env(Path(tmp))
        _chat(project, env)
        _mock_server(project, env)
        for argv in (["smoke.mjs"], ["smoke.cjs"], ["--test", "testing.test.mjs"]):
            out = _run(project, env, "node", *argv).stdout.strip().splitlines()
            print(next((line for line in out if line.startswith("# pass")), out[-1]))
    print("npm without Python ok: npx brainline chat, npx brainline mock-server, brainline/testing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
