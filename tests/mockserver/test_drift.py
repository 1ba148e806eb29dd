"""The Python and the TypeScript mock server never drift: the same scripts, the same bytes.

One Python ``MockServer`` (a thread here) and one TypeScript one (``node typescript/dist/cli.js
mock-server``, the built package as users get it) serve the same script, set on both through
``POST /__mock/script``. A raw socket sends the same requests to each and keeps every byte that
comes back: status line, headers, body framing and SSE bytes, and how the exchange ended
(``complete`` by the response's own framing, ``eof``, ``reset``, or ``idle`` when the server holds
the connection). Scripts: the ``server`` of every parity case (tests/parity/cases) and one per
option (scripts.json). The records (``GET /__mock/requests``) are compared too, times and ports
aside, and so are the messages of invalid scripts, bad requests and the control endpoints.

Without a TypeScript build (``cd typescript && npm run build``) the tests fail;
BRAINLINE_TS_CLI=/path/cli.js runs another build.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from brainline.testing import MockServer

ROOT = Path(__file__).resolve().parents[2]
TS_CLI = Path(os.environ.get("BRAINLINE_TS_CLI", ROOT / "typescript" / "dist" / "cli.js"))
DATA = json.loads((Path(__file__).with_name("scripts.json")).read_text(encoding="utf-8"))
IDLE = 0.4  # a server silent this long holds the connection (a stall)
MAX_DELAY_MS = 20  # delays do not change bytes: parity cases' long ones are cut to this
CHAT = "/v1/chat/completions"
BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'
TIMES = ("received_at", "finished_at", "closed_at", "opened_at")

Exchange = tuple[str, bytes]  # (how it ended, every byte received)


def _parity_scripts() -> dict[str, Any]:
    out = {}
    for path in sorted((ROOT / "tests" / "parity" / "cases").glob("*.json")):
        case = json.loads(path.read_text(encoding="utf-8"))
        if "server" in case:
            out[f"parity:{path.stem}"] = case["server"]
    return out


SCRIPTS: dict[str, Any] = {**{f"option:{k}": v for k, v in DATA["scripts"].items()}}
SCRIPTS.update(_parity_scripts())


# -- the two servers -------------------------------------------------------------------------------


class Servers:
    def __init__(self, py: MockServer, ts_origin: str) -> None:
        self.origins = {"py": py.origin, "ts": ts_origin}
        self.pool = ThreadPoolExecutor(2)

    def both(self, fn: Any, *args: Any) -> tuple[Any, Any]:
        """fn(origin, *args) on both servers at once: (python's, typescript's)."""
        py = self.pool.submit(fn, self.origins["py"], *args)
        ts = self.pool.submit(fn, self.origins["ts"], *args)
        return py.result(), ts.result()


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    if shutil.which("node") is None or not TS_CLI.exists():
        pytest.fail(
            f"needs node and a TypeScript build at {TS_CLI} (cd typescript && npm run build)"
        )
    py = MockServer(None)
    py.start_in_thread()
    ts = subprocess.Popen(
        ["node", str(TS_CLI), "mock-server", "--port", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert ts.stdout is not None
        url = ts.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), url
        both = Servers(py, url.removesuffix("/v1"))
        yield both
        both.pool.shutdown()
    finally:
        assert ts.stdin is not None
        ts.stdin.close()  # the TypeScript server stops at end of stdin, as the Python CLI does
        try:
            assert ts.wait(10) == 0
        finally:
            if ts.poll() is None:
                ts.kill()
            py.stop_thread()


# -- a raw HTTP/1.1 client that keeps every byte ---------------------------------------------------


def _connect(origin: str) -> socket.socket:
    host, port = origin.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = bytearray()
        self.at = 0  # parse position
        self.ended: str | None = None

    def more(self) -> bool:
        """Read once more; False (and `ended` set) when the server closed, reset or went idle."""
        if self.ended is not None:
            return False
        self.sock.settimeout(IDLE)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            self.ended = "idle"
            return False
        except ConnectionResetError:
            self.ended = "reset"
            return False
        if not chunk:
            self.ended = "eof"
            return False
        self.data += chunk
        return True

    def until(self, sep: bytes) -> bytes | None:
        while (end := self.data.find(sep, self.at)) < 0:
            if not self.more():
                return None
        out = bytes(self.data[self.at : end + len(sep)])
        self.at = end + len(sep)
        return out

    def exactly(self, size: int) -> bool:
        while len(self.data) < self.at + size:
            if not self.more():
                return False
        self.at += size
        return True

    def to_end(self) -> None:
        while self.more():
            pass


def _read_response(reader: _Reader, head_only: bool = False) -> str:
    """Read one response by its own framing; 'complete', or how the connection ended."""
    while True:
        head = reader.until(b"\r\n\r\n")
        if head is None:
            return reader.ended or "eof"
        if not head.startswith(b"HTTP/1.1 100 "):
            break
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    if head_only or lines[0].split(" ")[1] in ("204", "304"):
        return "complete"
    if "chunked" in headers.get("transfer-encoding", ""):
        while True:
            size_line = reader.until(b"\r\n")
            if size_line is None:
                return reader.ended or "eof"
            try:
                size = int(size_line.split(b";")[0], 16)
            except ValueError:
                reader.to_end()
                return f"unframed+{reader.ended}"
            if not reader.exactly(size + 2):
                return reader.ended or "eof"
            if size == 0:
                break
    elif "content-length" in headers:
        if not reader.exactly(int(headers["content-length"])):
            return reader.ended or "eof"
    else:
        reader.to_end()
        return f"body-to-{reader.ended}"
    if "close" in headers.get("connection", ""):
        reader.to_end()
        return f"complete+{reader.ended}"
    return "complete"


def _requests_for(script: Any) -> list[tuple[str, str, bytes]]:
    """What to send for a script: enough chat requests to see the last response repeat, the models
    list, and each route twice."""
    count = 2
    routes: dict[str, Any] = {}
    if isinstance(script, list):
        count = min(len(script) + 1, 5)
    elif isinstance(script, dict) and "responses" in script:
        responses = script["responses"]
        count = min(len(responses) + 1, 5) if isinstance(responses, list) else 2
    if isinstance(script, dict) and isinstance(script.get("routes"), dict):
        routes = script["routes"]
    out = [("POST", CHAT, BODY)] * count + [("GET", "/v1/models", b"")]
    for prefix in routes:
        out += [("POST", f"{prefix}chat/completions", BODY)] * 2
        out += [("GET", f"{prefix}models", b"")]
    return out


def _http(method: str, path: str, body: bytes) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Trace: one\r\n"
    if method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


def _exchanges(origin: str, requests: list[tuple[str, str, bytes]]) -> list[Exchange]:
    """Send the requests one after the other, on one connection while the server keeps it."""
    out: list[Exchange] = []
    sock: socket.socket | None = None
    try:
        for method, path, body in requests:
            if sock is None:
                sock = _connect(origin)
            reader = _Reader(sock)
            try:
                sock.sendall(_http(method, path, body))
            except OSError as exc:
                out.append((f"send-failed:{type(exc).__name__}", b""))
                sock.close()
                sock = None
                continue
            ending = _read_response(reader)
            out.append((ending, bytes(reader.data)))
            if ending != "complete":
                sock.close()
                sock = None
    finally:
        if sock is not None:
            sock.close()
    return out


def _raw(origin: str, data: bytes) -> Exchange:
    """Send bytes as they are; read every response until the server closes or goes idle."""
    with _connect(origin) as sock:
        sock.sendall(data)
        reader = _Reader(sock)
        reader.to_end()
        return (reader.ended or "?", bytes(reader.data))


def _control(origin: str, method: str, name: str, payload: Any = None) -> tuple[int, Any]:
    body = b"" if payload is None else json.dumps(payload).encode()
    head = f"{method} /__mock/{name} HTTP/1.1\r\nContent-Length: {len(body)}\r\n"
    with _connect(origin) as sock:
        sock.sendall(f"{head}Connection: close\r\n\r\n".encode() + body)
        reader = _Reader(sock)
        reader.to_end()
    head, _, rest = bytes(reader.data).partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(rest)


# -- the comparisons -------------------------------------------------------------------------------


def _shortened(script: Any) -> Any:
    """The script with delays cut to MAX_DELAY_MS (they change when bytes come, not which)."""
    script = copy.deepcopy(script)

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
        elif isinstance(node, dict):
            for key in ("delay_ms", "delay_before_headers_ms"):
                value = node.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    node[key] = min(value, MAX_DELAY_MS)
            for value in node.values():
                visit(value)

    visit(script)
    return script


def _records(origin: str, prefix: str = "") -> dict[str, Any]:
    """The records without times, ports and connection ids (renumbered by first use)."""
    deadline = time.monotonic() + 3
    while True:
        _, snap = _control(origin, "GET", f"requests?prefix={prefix}")
        carried = [c for c in snap["connections"] if c["requests"]]
        if all(c["closed_at"] is not None for c in carried) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    ids: dict[int, int] = {}
    for c in carried:
        ids.setdefault(c["id"], len(ids) + 1)
    requests = []
    for r in snap["requests"]:
        r = {k: v for k, v in r.items() if k not in TIMES}
        r["headers"] = [h for h in r["headers"] if h[0] != "host"]
        r["connection"] = ids.get(r["connection"], r["connection"])
        requests.append(r)
    connections = [{"requests": c["requests"], "closed_by": c["closed_by"]} for c in carried]
    return {"requests": requests, "connections": connections}


def _differ(py: Any, ts: Any) -> str:
    return f"\npython:     {py!r}\ntypescript: {ts!r}"


def _set_script(servers: Servers, script: Any) -> None:
    (py_status, py_body), (ts_status, ts_body) = servers.both(_control, "POST", "script", script)
    assert (py_status, py_body) == (ts_status, ts_body) == (200, {"ok": True}), _differ(
        py_body, ts_body
    )
    assert servers.both(_control, "POST", "reset", {}) == ((200, {"ok": True}),) * 2


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_same_bytes_for_the_same_script(servers: Servers, name: str) -> None:
    script = _shortened(SCRIPTS[name])
    _set_script(servers, script)
    py, ts = servers.both(_exchanges, _requests_for(script))
    if py != ts and any(ending == "idle" for ending, _ in py + ts):
        # a machine busy enough to hold a short delay past IDLE looks like a stall: once more
        _set_script(servers, script)
        py, ts = servers.both(_exchanges, _requests_for(script))
    assert len(py) == len(ts)
    for i, (a, b) in enumerate(zip(py, ts, strict=True)):
        assert a == b, f"exchange {i}:" + _differ(a, b)
    py_records, ts_records = servers.both(_records)
    assert py_records == ts_records, _differ(py_records, ts_records)


@pytest.mark.parametrize("name", sorted(DATA["raw"]))
def test_same_bytes_for_the_same_raw_request(servers: Servers, name: str) -> None:
    _set_script(servers, {"text": ["raw"]})
    data = DATA["raw"][name].encode("latin-1")
    py, ts = servers.both(_raw, data)
    assert py == ts, _differ(py, ts)
    py_records, ts_records = servers.both(_records)
    assert py_records == ts_records, _differ(py_records, ts_records)


@pytest.mark.parametrize("index", range(len(DATA["invalid"])))
def test_same_message_for_an_invalid_script(servers: Servers, index: int) -> None:
    script = DATA["invalid"][index]
    py, ts = servers.both(_control, "POST", "script", script)
    assert py == ts, _differ(py, ts)
    assert py[0] == 400, py


def test_routes_added_over_the_control_endpoint(servers: Servers) -> None:
    _set_script(servers, {"responses": [{"text": ["default"]}]})
    for payload in DATA["routes"]:
        py, ts = servers.both(_control, "POST", "route", payload)
        assert py == ts, f"{payload}:" + _differ(py, ts)
        requests = [("POST", "/added/chat/completions", BODY)] * 3
        requests += [("POST", "/none/chat/completions", BODY), ("POST", CHAT, BODY)]
        py, ts = servers.both(_exchanges, requests)
        assert py == ts, f"after {payload}:" + _differ(py, ts)
    for prefix in ("", "/added/", "/nothing"):
        py, ts = servers.both(_records, prefix)
        assert py == ts, f"prefix {prefix!r}:" + _differ(py, ts)


def test_same_answer_to_control_bodies_that_are_not_json(servers: Servers) -> None:
    """The message of a JSON syntax error is the language's own: only the status is compared."""
    for name in ("script", "route"):
        data = f"POST /__mock/{name} HTTP/1.1\r\nContent-Length: 2\r\n\r\n{{x".encode()
        py, ts = servers.both(_raw, data)
        assert py[1].split(b"\r\n")[0] == ts[1].split(b"\r\n")[0] == b"HTTP/1.1 400 Bad Request"


def test_the_client_closing_a_stall_is_recorded_alike(servers: Servers) -> None:
    _set_script(servers, {"text": ["a", "b"], "stall": 1})
    py, ts = servers.both(_exchanges, [("POST", CHAT, BODY)])
    assert py == ts and py[0][0] == "idle", _differ(py, ts)
    py_records, ts_records = servers.both(_records)
    assert py_records == ts_records, _differ(py_records, ts_records)
    assert py_records["requests"][0]["client_closed"] is True
    assert [c["closed_by"] for c in py_records["connections"]] == ["client"]
