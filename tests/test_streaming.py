"""Streaming through a real uvicorn server: chunks arrive as NanoGPT sends them, a client that
goes away closes the upstream request at once, and a mid-stream failure ends the stream
with an error event instead of a hang or a crash."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import uvicorn

from gateway import logs
from gateway.app import create_app
from gateway.sse import EventStream
from tests.conftest import (
    TEAM_KEY,
    FakeNanoGPT,
    auth,
    ledger_rows,
    live_server,
    make_settings,
    served,
)

pytestmark = pytest.mark.anyio
CHAT = {"model": "openai/gpt-5.2", "messages": [{"role": "user", "content": "hi"}], "stream": True}
FIRST = b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n'
SECOND = b'data: {"choices": [{"delta": {"content": "lo"}}]}\n\n'


class ScriptedStream(httpx.AsyncByteStream):
    """An SSE body that sends its first event, then waits for the test before the rest."""

    def __init__(self, after_first: list[bytes] | Exception) -> None:
        self.go_on = asyncio.Event()
        self.closed = asyncio.Event()
        self.after_first = after_first

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield FIRST
        await self.go_on.wait()
        if isinstance(self.after_first, Exception):
            raise self.after_first
        for chunk in self.after_first:
            yield chunk

    async def aclose(self) -> None:
        self.closed.set()


def serve_stream(nanogpt: FakeNanoGPT, stream: ScriptedStream) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)

    nanogpt.handler = handler


async def test_each_chunk_reaches_the_client_before_the_next_is_sent(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    stream = ScriptedStream([SECOND, b"data: [DONE]\n\n"])
    serve_stream(nanogpt, stream)
    async with (
        served(make_settings(tmp_path), nanogpt) as settings,
        live_server(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        request = http.stream("POST", "/v1/chat/completions", json=CHAT, headers=auth())
        async with request as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            chunks = response.aiter_raw()
            with anyio.fail_after(5):
                assert await anext(chunks) == FIRST
            assert not stream.go_on.is_set()  # the upstream has not sent the second chunk yet
            stream.go_on.set()
            with anyio.fail_after(5):
                rest = b"".join([chunk async for chunk in chunks])
    assert rest == SECOND + b"data: [DONE]\n\n"
    assert stream.closed.is_set()


async def test_client_disconnect_closes_the_upstream_request(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    stream = ScriptedStream([SECOND])  # never released: a model still thinking
    serve_stream(nanogpt, stream)
    async with (
        served(make_settings(tmp_path), nanogpt) as settings,
        live_server(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        request = http.stream("POST", "/v1/chat/completions", json=CHAT, headers=auth())
        async with request as response:
            with anyio.fail_after(5):
                assert await anext(response.aiter_raw()) == FIRST
        # Leaving the block closes the connection mid-body; the upstream is silent, so only
        # the relay's own disconnect watch can notice.
        with anyio.fail_after(5):
            await stream.closed.wait()
        assert not stream.go_on.is_set()
    (row,) = ledger_rows()
    assert (row["member"], row["status"], row["outcome"]) == ("alice", 200, "client_disconnected")
    assert row["prompt_tokens"] is None and row["ttft_seconds"] is not None


# A silent upstream must time out within the test's patience.
QUICK_TIMEOUT = "[upstream]\nread_timeout_seconds = 0.2\n"


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (httpx.ReadTimeout("timed out"), "upstream_timeout"),
        (httpx.RemoteProtocolError(f"peer closed connection; {TEAM_KEY}"), "upstream_unreachable"),
    ],
)
async def test_mid_stream_failure_ends_with_an_error_event(
    tmp_path: Path, nanogpt: FakeNanoGPT, failure: Exception, code: str
) -> None:
    stream = ScriptedStream(failure)
    stream.go_on.set()
    serve_stream(nanogpt, stream)
    async with (
        served(make_settings(tmp_path, QUICK_TIMEOUT), nanogpt) as settings,
        live_server(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        with anyio.fail_after(5):
            response = await http.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert response.status_code == 200
    first, error_event = response.content.split(b"\n\n", 1)
    assert first + b"\n\n" == FIRST
    assert error_event.startswith(b"data: ")
    error = json.loads(error_event[len(b"data: ") :])["error"]
    assert error["code"] == code and "while streaming" in error["message"]
    assert TEAM_KEY not in response.text
    assert stream.closed.is_set()
    (row,) = ledger_rows()
    assert (row["status"], row["outcome"], row["stream"]) == (200, "upstream_failed", 1)


@contextlib.contextmanager
def logged() -> Iterator[io.StringIO]:
    """Everything the gateway logs meanwhile, formatted as `serve` formats it."""
    stream = io.StringIO()
    handler = logs.redacting_handler(stream, [TEAM_KEY])
    root = logging.getLogger("gateway")
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


@pytest.mark.leaks_on_purpose(
    "log",
    reason="the test raises an exception holding the team key, to see it kept out of the stream",
)
async def test_a_gateway_failure_mid_stream_ends_with_an_error_event(
    tmp_path: Path, nanogpt: FakeNanoGPT, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = ScriptedStream([SECOND, b"data: [DONE]\n\n"])
    serve_stream(nanogpt, stream)
    feed = EventStream.feed

    def broken_after_first(self: EventStream, chunk: bytes) -> bytes:
        if chunk != FIRST:
            raise RuntimeError(f"bug while holding {TEAM_KEY}")
        return feed(self, chunk)

    monkeypatch.setattr(EventStream, "feed", broken_after_first)
    async with (
        served(make_settings(tmp_path), nanogpt) as settings,
        live_server(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        request = http.stream("POST", "/v1/chat/completions", json=CHAT, headers=auth())
        with logged() as log, anyio.fail_after(5):
            async with request as response:
                chunks = response.aiter_raw()
                assert await anext(chunks) == FIRST
                stream.go_on.set()
                rest = b"".join([chunk async for chunk in chunks])
    error = json.loads(rest.removeprefix(b"data: "))["error"]
    assert (error["type"], error["code"]) == ("api_error", "internal_error")
    assert b"bug" not in rest and b"Traceback" not in rest
    request_id = response.headers["x-gateway-request-id"]
    (row,) = ledger_rows()
    assert (row["request_id"], row["status"], row["outcome"]) == (request_id, 200, "error")
    line = next(line for line in log.getvalue().splitlines() if "relaying" in line)
    assert line.endswith(f"[request {request_id}]")
    assert TEAM_KEY not in log.getvalue() and "RuntimeError: bug" in log.getvalue()


async def test_a_json_body_cut_off_midway_is_aborted_not_ended(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    class CutOff(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b'{"id": "chatcmpl-1", "choices": [{"message": {"content": "Hel'
            raise httpx.RemoteProtocolError("gone")

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "application/json"}, stream=CutOff())

    nanogpt.handler = handler
    body = {**CHAT, "stream": False}
    async with (
        served(make_settings(tmp_path), nanogpt) as settings,
        live_server(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        with pytest.raises(httpx.RemoteProtocolError), anyio.fail_after(5):
            await http.post("/v1/chat/completions", json=body, headers=auth())
    (row,) = ledger_rows()
    assert (row["outcome"], row["unmetered"]) == ("upstream_failed", "upstream_failed")


async def test_a_stream_cut_by_server_shutdown_is_recorded_as_such(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    stream = ScriptedStream([SECOND])  # never released
    serve_stream(nanogpt, stream)
    async with served(make_settings(tmp_path), nanogpt) as settings:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(create_app(settings), log_config=None, timeout_graceful_shutdown=0)
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        with anyio.fail_after(10):
            while not server.started:  # readiness poll, not a timed wait
                await asyncio.sleep(0.005)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with httpx.AsyncClient(base_url=url) as http:
            request = http.stream("POST", "/v1/chat/completions", json=CHAT, headers=auth())
            async with request as response:
                chunks = response.aiter_raw()  # held: a collected iterator closes the stream
                with anyio.fail_after(5):
                    assert await anext(chunks) == FIRST
                server.should_exit = True
                with anyio.fail_after(10):
                    await serving
        sock.close()
    (row,) = ledger_rows()
    assert (row["status"], row["outcome"], row["unmetered"]) == (200, "shutdown", "shutdown")
    assert stream.closed.is_set()
