"""Streaming through a real uvicorn server: chunks arrive as NanoGPT sends them, a client that
goes away closes the upstream request at once, and a mid-stream failure ends the stream
with an error event instead of a hang or a crash."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from gateway.app import create_app
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
