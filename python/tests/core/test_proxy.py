"""Proxies: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY as httpx reads them, a real proxy
(tinyproxy, started here on 127.0.0.1) in front of the mock server, the proxy's own failures as
`proxy_error`, and `http_client=`. typescript/test/core/proxy.test.ts holds the same tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import brainline
from brainline import APIConnectionError, CustomLLM
from brainline.testing import MockServer

ROOT = Path(__file__).resolve().parents[3]
CASES = json.loads((ROOT / "tests/proxy/env_cases.json").read_text(encoding="utf-8"))["cases"]
CERT = ROOT / "typescript/test/fixtures/localhost-cert.pem"
KEY = ROOT / "typescript/test/fixtures/localhost-key.pem"
MESSAGES = [{"role": "user", "content": "hi"}]
USER, PASSWORD = "alice", "pr0xy-s3cret"
TINYPROXY = shutil.which("tinyproxy")

needs_tinyproxy = pytest.mark.skipif(
    TINYPROXY is None and not os.environ.get("CI"),
    reason="tinyproxy is not installed (nox -s tests installs it; CI never skips)",
)


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts without proxy variables (a developer's own would leak in)."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name == "REQUEST_METHOD":
            monkeypatch.delenv(name)


# -- which proxy: the shared cases, against httpx itself ---------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
async def test_env_case(case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in case["env"].items():
        monkeypatch.setenv(name, value)
    llm = CustomLLM(base_url=case["url"], model="m")
    client = llm._open()
    try:
        assert llm._proxy == case["proxy"]
        headers: list[tuple[bytes, bytes]] = []
        if case["proxy"] is not None:
            pool = client._transport_for_url(llm._request_url)._pool  # type: ignore[attr-defined]
            headers = pool._proxy_headers
        authorization = [v.decode() for k, v in headers if k.lower() == b"proxy-authorization"]
        assert authorization == ([case["authorization"]] if "authorization" in case else [])
    finally:
        await llm.aclose()


# -- a real proxy ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def tinyproxy(tmp_path: Path, *, auth: bool = False) -> Iterator[str]:
    """tinyproxy on 127.0.0.1 (Basic auth when `auth`); yields its URL, without credentials."""
    assert TINYPROXY is not None, "tinyproxy is not installed: apt-get install tinyproxy"
    for _ in range(5):  # a port taken between the probe and tinyproxy's bind: another one
        port = _free_port()
        conf = tmp_path / f"tinyproxy-{port}.conf"
        lines = [
            f"Port {port}",
            "Listen 127.0.0.1",
            "Timeout 30",
            "MaxClients 50",
            "Allow 127.0.0.1",
            "XTinyproxy Yes",  # forwarded requests carry X-Tinyproxy: the test sees the way
            "LogLevel Critical",
        ]
        if auth:
            lines.append(f"BasicAuth {USER} {PASSWORD}")
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        process = subprocess.Popen(
            [TINYPROXY, "-d", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 5
            while process.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                time.sleep(0.02)
            else:
                continue
            yield f"http://127.0.0.1:{port}"
            return
        finally:
            process.terminate()
            process.wait(5)
    raise RuntimeError("tinyproxy did not start")


@contextlib.asynccontextmanager
async def tls_front(upstream_port: int) -> AsyncIterator[int]:
    """TLS on 127.0.0.1 with the test certificate, relaying each connection to upstream_port
    and closing each side when the other closes (so a barge-in reaches the mock server)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(CERT, KEY)

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(relay(reader, up_writer), relay(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def _trust_test_certificate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(CERT))  # httpx's trust_env reads it, as the proxies


def _with_credentials(proxy: str, user: str = USER, password: str = PASSWORD) -> str:
    return proxy.replace("http://", f"http://{user}:{password}@")


async def _turn(llm: Any, **kwargs: Any) -> list[dict[str, Any]]:
    return [event async for event in llm.stream(MESSAGES, **kwargs)]


@needs_tinyproxy
async def test_http_through_the_proxy_in_absolute_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tinyproxy(tmp_path) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy)
        async with MockServer({"text": ["Hel", "lo"]}) as url:
            llm = CustomLLM(base_url=url, model="m")
            events = await _turn(llm)
            await llm.aclose()
    assert [e["content"] for e in events if e["type"] == "text"] == ["Hel", "lo"]
    assert events[-1]["type"] == "finish"


@needs_tinyproxy
async def test_http_request_reached_the_endpoint_through_the_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tinyproxy(tmp_path, auth=True) as proxy:
        monkeypatch.setenv("HTTP_PROXY", _with_credentials(proxy))
        server = MockServer({"text": ["ok"]})
        url = await server.start()
        try:
            llm = CustomLLM(base_url=url, model="m")
            await _turn(llm)
            await llm.aclose()
        finally:
            await server.stop()
    request = server.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.header("x-tinyproxy") == "127.0.0.1"  # the proxy's mark
    assert request.header("proxy-authorization") is None  # the proxy keeps its credentials


@needs_tinyproxy
async def test_https_through_a_connect_tunnel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _trust_test_certificate(monkeypatch)
    with tinyproxy(tmp_path, auth=True) as proxy:
        server = MockServer({"text": ["sec", "ure"]})
        await server.start()
        try:
            async with tls_front(server.port) as port:
                # Without the credentials the tunnel is refused: the turn went to the proxy.
                monkeypatch.setenv("HTTPS_PROXY", proxy)
                refused = CustomLLM(base_url=f"https://localhost:{port}/v1", model="m")
                with pytest.raises(APIConnectionError) as caught:
                    await _turn(refused)
                await refused.aclose()
                assert caught.value.code == "proxy_error"
                monkeypatch.setenv("HTTPS_PROXY", _with_credentials(proxy))
                llm = CustomLLM(base_url=f"https://localhost:{port}/v1", model="m")
                for _ in range(2):
                    events = await _turn(llm)
                    assert [e["content"] for e in events if e["type"] == "text"] == ["sec", "ure"]
                await llm.aclose()
        finally:
            await server.stop()
    assert len(server.requests) == 2
    assert server.connections_total == 1  # one tunnel, kept alive for the second turn
    assert server.requests[0].header("x-tinyproxy") is None  # a tunnel: the proxy sees no HTTP


async def test_no_proxy_bypasses_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    monkeypatch.setenv("HTTP_PROXY", dead)
    async with MockServer({"text": ["direct"]}) as url:
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        llm = CustomLLM(base_url=url, model="m", max_retries=0)
        events = await _turn(llm)
        await llm.aclose()
        assert events[0] == {"type": "text", "content": "direct"}
        monkeypatch.delenv("NO_PROXY")
        llm = CustomLLM(base_url=url, model="m")
        with pytest.raises(APIConnectionError) as caught:
            await _turn(llm)
        await llm.aclose()
    assert caught.value.code == "proxy_error"
    assert str(caught.value) == (
        f"could not reach {url}/chat/completions through the proxy {dead}: "
        "no connection to the proxy"
    )


@needs_tinyproxy
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_407_says_it_came_from_the_proxy(
    scheme: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _trust_test_certificate(monkeypatch)
    attempts: list[int] = []
    with tinyproxy(tmp_path, auth=True) as proxy:
        server = MockServer({"text": ["never"]})
        await server.start()
        try:
            async with tls_front(server.port) as port:
                base = server.url if scheme == "http" else f"https://localhost:{port}/v1"
                monkeypatch.setenv(f"{scheme.upper()}_PROXY", proxy)  # no credentials
                llm = CustomLLM(
                    base_url=base,
                    model="m",
                    max_retries=2,
                    on_metrics=lambda m: attempts.append(m["attempts"]),
                )
                with pytest.raises(APIConnectionError) as caught:
                    await _turn(llm)
                await llm.aclose()
        finally:
            await server.stop()
    err = caught.value
    assert err.code == "proxy_error"
    assert str(err) == (
        f"could not reach {base}/chat/completions through the proxy {proxy}: "
        "the proxy answered HTTP 407"
    )
    assert attempts == [1]  # a proxy's refusal is not retried
    assert server.requests == []


@needs_tinyproxy
async def test_wrong_credentials_are_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _trust_test_certificate(monkeypatch)
    with tinyproxy(tmp_path, auth=True) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", _with_credentials(proxy, password="wrong-pass"))
        llm = CustomLLM(base_url=f"https://localhost:{_free_port()}/v1", model="m")
        with pytest.raises(APIConnectionError) as caught:
            await _turn(llm)
        await llm.aclose()
    err = caught.value
    # tinyproxy answers wrong credentials with 401; to CONNECT, any answer is the proxy's.
    assert err.code == "proxy_error"
    assert str(err).endswith(f"through the proxy {proxy}: the proxy answered HTTP 401")
    shown = [str(err), repr(err), repr(err.__cause__), repr(err.__context__), repr(llm)]
    assert not any("wrong-pass" in text for text in shown)
    assert b"wrong-pass" not in pickle.dumps(err)


@needs_tinyproxy
async def test_a_refused_tunnel_says_it_came_from_the_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = _free_port()
    with tinyproxy(tmp_path) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy)
        llm = CustomLLM(base_url=f"https://localhost:{closed}/v1", model="m")
        with pytest.raises(APIConnectionError) as caught:
            await _turn(llm)
        await llm.aclose()
    assert caught.value.code == "proxy_error"
    # tinyproxy answers a CONNECT it cannot make with 500 "Unable to connect".
    assert str(caught.value) == (
        f"could not reach https://localhost:{closed}/v1/chat/completions through the proxy "
        f"{proxy}: the proxy answered HTTP 500"
    )


@needs_tinyproxy
async def test_barge_in_through_the_tunnel_closes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _trust_test_certificate(monkeypatch)
    with tinyproxy(tmp_path) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy)
        server = MockServer({"text": ["first", "never"], "stall": 1})
        await server.start()
        try:
            async with tls_front(server.port) as port:
                llm = CustomLLM(base_url=f"https://localhost:{port}/v1", model="m")
                cancel = asyncio.Event()
                events = []
                async for event in llm.stream(MESSAGES, cancel_event=cancel):
                    events.append(event)
                    cancel.set()
                assert events == [{"type": "text", "content": "first"}]
                assert await server.wait_for_async(
                    lambda: server.requests[-1].client_closed, timeout=2
                )
                await llm.aclose()
        finally:
            await server.stop()


async def test_a_proxy_that_never_answers_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    """A barge-in, or the connect timeout, closes the socket to it."""
    heads: list[bytes] = []
    closed = asyncio.Event()
    open_count = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_count
        open_count += 1
        while data := await reader.read(65536):
            heads.append(data)
        open_count -= 1
        closed.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        monkeypatch.setenv("HTTPS_PROXY", f"http://u:p@127.0.0.1:{port}")
        llm = CustomLLM(base_url="https://api.example.com:8443/v1", model="m")
        cancel = asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, cancel.set)
        assert await _turn(llm, cancel_event=cancel) == []
        await asyncio.wait_for(closed.wait(), 2)
        assert heads[0] == (
            b"CONNECT api.example.com:8443 HTTP/1.1\r\nHost: api.example.com:8443\r\n"
            b"Accept: */*\r\nProxy-Authorization: Basic dTpw\r\n\r\n"
        )
        await llm.aclose()
        closed.clear()
        slow = CustomLLM(base_url="https://api.example.com/v1", model="m", timeout=0.3)
        with pytest.raises(brainline.APITimeoutError) as caught:
            await _turn(slow)
        await slow.aclose()
        assert caught.value.code == "connect_timeout"
        await asyncio.wait_for(closed.wait(), 2)
        assert open_count == 0
    finally:
        server.close()


# -- http_client= ------------------------------------------------------------------------------


async def test_http_client_is_used_and_never_closed() -> None:
    seen: list[str] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(str(request.url))

    # Its own timeout would fail the slow answer: brainline's `timeout` is set on each request.
    client = httpx.AsyncClient(event_hooks={"request": [hook]}, timeout=0.05)
    async with MockServer({"text": ["mine"], "delay_before_headers_ms": 300}) as url:
        llm = CustomLLM(base_url=url, model="m", http_client=client)
        assert llm.config.http_client is client
        events = await _turn(llm)
        await llm.aclose()
        assert not client.is_closed
        events += await _turn(llm)  # usable again after aclose(), on the same client
        async with llm:
            pass
        assert not client.is_closed
    await client.aclose()
    assert [e["content"] for e in events if e["type"] == "text"] == ["mine", "mine"]
    assert seen == [f"{url}/chat/completions"] * 2


@needs_tinyproxy
async def test_http_client_with_its_own_proxy(tmp_path: Path) -> None:
    context = ssl.create_default_context(cafile=str(CERT))
    with tinyproxy(tmp_path, auth=True) as proxy:
        server = MockServer({"text": ["mtls-ready"]})
        await server.start()
        try:
            async with tls_front(server.port) as port:
                client = httpx.AsyncClient(proxy=_with_credentials(proxy), verify=context)
                llm = CustomLLM(
                    base_url=f"https://localhost:{port}/v1", model="m", http_client=client
                )
                events = await _turn(llm)
                await llm.aclose()
                await client.aclose()
                # Wrong credentials: the proxy's refusal (tinyproxy's 401), named as such.
                client = httpx.AsyncClient(
                    proxy=_with_credentials(proxy, password="nope"), verify=context
                )
                llm = CustomLLM(
                    base_url=f"https://localhost:{port}/v1", model="m", http_client=client
                )
                with pytest.raises(APIConnectionError) as caught:
                    await _turn(llm)
                await client.aclose()
        finally:
            await server.stop()
    assert events[0] == {"type": "text", "content": "mtls-ready"}
    assert caught.value.code == "proxy_error"
    assert f"through the proxy {proxy}: the proxy answered HTTP 401" in str(caught.value)


def test_http_client_must_be_an_async_client() -> None:
    with pytest.raises(brainline.ConfigError) as caught:
        CustomLLM(base_url="http://127.0.0.1:9/v1", model="m", http_client=httpx.Client())  # type: ignore[arg-type]
    assert caught.value.code == "invalid_type"
    assert str(caught.value).startswith(
        "http_client must be an httpx.AsyncClient, got <httpx.Client"
    )
