"""The HTTP server's own protections, on the wire: a request head too large or with too many
fields is answered 431 before the app sees it, a head or body that does not arrive in time 408,
and neither bound touches answers: a stream outlives every timer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from gateway.config.schema import ServerSettings, Settings
from gateway.server import guarded
from tests.conftest import running

pytestmark = pytest.mark.anyio


class App:
    """Reads the whole body, then answers its length; `/stream` sends one event and waits for
    `release` before the last."""

    def __init__(self) -> None:
        self.calls = 0
        self.disconnected = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        self.calls += 1
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected.set()
                return
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
            await self.release.wait()
            await send({"type": "http.response.body", "body": b"data: 2\n\n"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})


@contextlib.asynccontextmanager
async def guarded_server(app: App, **bounds: Any) -> AsyncIterator[int]:
    """uvicorn with the gateway's protocol on a free loopback port; yields the port."""
    settings = Settings(server=ServerSettings(**bounds))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=guarded(settings), ws="none", lifespan="off", log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    with anyio.fail_after(10):
        while not server.started:  # readiness poll
            await asyncio.sleep(0.005)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()


async def exchange(port: int, data: bytes) -> bytes:
    """Send `data` on a fresh connection and read until the server ends it (bounded)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        with anyio.fail_after(5):
            return await reader.read()
    finally:
        writer.close()


def refusal(answer: bytes, status: int) -> dict[str, Any]:
    """The error of a raw answer, checked for status, shape and `connection: close`."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert b"content-type: application/json" in head and b"connection: close" in head
    error: dict[str, Any] = json.loads(body)["error"]
    assert set(error) == {"message", "type", "code", "param"} and error["message"]
    assert error["type"] == "invalid_request_error"
    return error


def head(*lines: str) -> bytes:
    return "\r\n".join(
        ["GET / HTTP/1.1", "Host: localhost", "Connection: close", *lines, "", ""]
    ).encode()


@pytest.mark.parametrize("size", [100_000, 1_000_000])
async def test_a_head_too_large_is_answered_431_and_never_reaches_the_app(size: int) -> None:
    app = App()
    async with guarded_server(app) as port:
        answer = await exchange(port, head("X-Big: " + "a" * size))
        error = refusal(answer, 431)
        assert error["code"] == "request_header_fields_too_large" and "65536" in error["message"]
        assert app.calls == 0


async def test_too_many_header_fields_are_answered_431() -> None:
    app = App()
    async with guarded_server(app) as port:
        answer = await exchange(port, head(*(f"X-H{i}: v" for i in range(300))))
        assert refusal(answer, 431)["code"] == "request_header_fields_too_large"
        assert app.calls == 0
        answer = await exchange(port, head(*(f"X-H{i}: v" for i in range(90))))
        assert answer.startswith(b"HTTP/1.1 200 ")


async def test_each_request_on_a_connection_has_its_own_head_budget_and_bodies_are_not_heads() -> (
    None
):
    async with (
        guarded_server(App(), max_header_bytes=50_000) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        for _ in range(3):  # 120 KB of headers on one connection, 40 KB a request
            response = await http.post("/", headers={"x-big": "a" * 40_000}, content=b"x" * 2**20)
            assert response.status_code == 200 and response.text == str(2**20)
        assert (await http.get("/", headers={"x-big": "a" * 60_000})).status_code == 431


async def test_a_head_sent_a_byte_at_a_time_is_cut_off_after_the_header_timeout() -> None:
    app = App()
    async with guarded_server(app, header_timeout_seconds=0.5) as port:
        started = time.monotonic()
        error = refusal(await exchange(port, b"G"), 408)
        assert error["code"] == "request_timeout" and "head" in error["message"]
        assert time.monotonic() - started >= 0.45
        assert await exchange(port, b"") == b""  # a connection that says nothing is closed
        assert app.calls == 0


async def test_a_body_that_does_not_arrive_in_time_is_answered_408() -> None:
    app = App()
    async with guarded_server(app, body_timeout_seconds=0.5) as port:
        request = b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789"
        error = refusal(await exchange(port, request), 408)
        assert error["code"] == "request_timeout" and "body" in error["message"]
        with anyio.fail_after(5):
            await app.disconnected.wait()


async def test_timers_never_cut_an_answer_however_long_it_streams() -> None:
    app = App()
    bounds = {"header_timeout_seconds": 0.3, "body_timeout_seconds": 0.3}
    async with (
        guarded_server(app, **bounds) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        async with http.stream("POST", "/stream", content=b"{}") as response:
            chunks = response.aiter_raw()
            assert await anext(chunks) == b"data: 1\n\n"
            # A clock without sleeping: a silent connection opened now is cut after 0.3 s, so
            # when it is, the stream has outlived both timers.
            assert await exchange(port, b"P") != b""
            app.release.set()
            assert [chunk async for chunk in chunks] == [b"data: 2\n\n"]
        assert (await http.get("/")).status_code == 200  # the same connection, kept alive


async def test_a_refusal_never_garbles_an_answer_still_going_out_on_the_connection() -> None:
    app = App()
    async with guarded_server(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /stream HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}")
        with anyio.fail_after(5):
            assert b"data: 1" in await reader.readuntil(b"data: 1\n\n")
            writer.write(head("X-Big: " + "a" * 100_000))  # pipelined, mid-stream
            rest = await reader.read()
        writer.close()
        app.release.set()
        assert rest in (b"", b"\r\n")  # the stream is cut at a chunk's end, nothing added
        assert app.calls == 1


async def test_an_unparsable_request_gets_the_one_error_shape() -> None:
    async with guarded_server(App()) as port:
        assert refusal(await exchange(port, b"NOT HTTP\r\n\r\n"), 400)["code"]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def raw(port: int, data: bytes) -> bytes:
    """`data` to the server on a fresh connection, and everything it answers (bounded)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(OSError):  # the server may stop reading once it has answered
            sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_serve_bounds_heads_in_size_and_time_before_any_key_is_checked(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[server]\nheader_timeout_seconds = 0.5\n")
    with running(["serve", "--demo", "--config", str(config)], "/readyz") as (base, process, _):
        port = int(base.rsplit(":", 1)[1])
        before = rss_kb(process.pid)
        answer = raw(port, head("Authorization: Bearer " + "k" * 32 * 2**20))
        assert refusal(answer, 431)["code"] == "request_header_fields_too_large"
        assert rss_kb(process.pid) - before < 16 * 1024  # 32 MB sent, not held
        assert refusal(raw(port, b"POST /v1/chat/completions HTTP/1.1\r\n"), 408)
        assert httpx.get(f"{base}/healthz").status_code == 200
