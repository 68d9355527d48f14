"""Clients that leave before their answer, through a real uvicorn server and a raw socket: a
client disconnect (499), with no error and no traceback."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from gateway.app import create_app
from tests.conftest import (
    ALICE_KEY,
    FakeNanoGPT,
    ledger_rows,
    live_server,
    make_settings,
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
    assert (left.name, left.levelno) == ("gateway.pipeline", logging.INFO)
