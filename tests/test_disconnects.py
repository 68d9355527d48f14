"""Clients that leave before their answer, through a real uvicorn server and a raw socket: during
their upload, or while NanoGPT has not answered yet. Either is a client disconnect (499): no
error, no traceback, and the upstream request is dropped at once rather than left to run (and
be billed) until the read timeout."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import anyio
import httpx
import pytest

from gateway.app import create_app
from tests.conftest import (
    ALICE_KEY,
    FakeNanoGPT,
    ledger_rows,
    live_server,
    make_settings,
    metric,
    served,
)

pytestmark = pytest.mark.anyio


def request_head(body_length: int) -> bytes:
    return (
        "POST /v1/chat/completions HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        f"Authorization: Bearer {ALICE_KEY}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {body_length}\r\n\r\n"
    ).encode()


async def hang_up_after(url: str, data: bytes) -> asyncio.StreamWriter:
    """Connect to the live server at `url` and send `data`; the caller closes the writer."""
    host, port = url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    return writer


async def test_a_client_that_leaves_during_its_upload_is_a_client_disconnect(
    tmp_path: Path, nanogpt: FakeNanoGPT, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps({"model": "openai/gpt-5.2", "messages": [{"content": "x" * 4000}]}).encode()
    caplog.set_level(logging.INFO)
    async with (
        served(make_settings(tmp_path), nanogpt) as settings,
        live_server(create_app(settings)) as url,
    ):
        writer = await hang_up_after(url, request_head(len(body)) + body[: len(body) // 2])
        writer.close()
        await writer.wait_closed()
    # The server has finished every request before it stops, and the ledger is flushed.
    (row,) = ledger_rows()
    assert (row["member"], row["status"], row["outcome"]) == ("alice", 499, "client_disconnected")
    assert nanogpt.requests == []
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    (left,) = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert (left.name, left.levelno) == ("gateway.metered", logging.INFO)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_client_that_leaves_before_nanogpt_answers_drops_the_upstream_request(
    tmp_path: Path, nanogpt: FakeNanoGPT, stream: bool
) -> None:
    arrived, dropped = asyncio.Event(), asyncio.Event()

    async def thinking(request: httpx.Request) -> httpx.Response:
        arrived.set()
        try:
            await asyncio.Event().wait()  # no headers yet: a model still thinking
        except asyncio.CancelledError:  # aiohttp cancels a handler whose client has gone
            dropped.set()
            raise
        raise AssertionError("unreachable")

    nanogpt.handler = thinking
    chat = {"model": "openai/gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}
    body = json.dumps({**chat, "stream": stream}).encode()
    async with served(make_settings(tmp_path), nanogpt) as settings:
        app = create_app(settings)
        async with live_server(app) as url:
            writer = await hang_up_after(url, request_head(len(body)) + body)
            with anyio.fail_after(5):
                await arrived.wait()
            writer.close()
            await writer.wait_closed()
            with anyio.fail_after(5):  # not the 600 s read timeout
                await dropped.wait()
    (row,) = ledger_rows()
    assert (row["status"], row["outcome"], row["unmetered"]) == (
        499,
        "client_disconnected",
        "client_disconnected",
    )
    text = app.state.metrics.exposition()[0].decode()
    assert metric(text, "nanogpt_gateway_upstream_errors_total", reason="timeout") == 0
    assert metric(text, "nanogpt_gateway_requests_total", status="499") == 1
