"""A usage ledger that cannot be written, seen from outside: its queue depth and lost rows in
`/metrics`, and `/readyz` saying so, while the gateway goes on answering."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import anyio
import httpx
import pytest

from gateway.ledger.sqlite import SQLiteLedger
from tests.conftest import (
    FakeNanoGPT,
    assert_openai_error,
    auth,
    gateway_client,
    make_settings,
    metric,
)

pytestmark = pytest.mark.anyio
CHAT = {"model": "openai/gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}
QUEUE = "nanogpt_gateway_ledger_queue_rows"
LOST = "nanogpt_gateway_ledger_rows_lost_total"


def execute(path: Path, script: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript(script)
    finally:
        conn.close()


def refuse_writes(path: Path) -> None:
    """A full disk, as SQLite reports it to the writer."""
    execute(
        path,
        "CREATE TRIGGER refuse BEFORE INSERT ON usage BEGIN SELECT RAISE(FAIL, 'disk full'); END",
    )


async def scrape(client: httpx.AsyncClient) -> str:
    return (await client.get("/metrics")).text


async def test_the_ledger_queue_and_its_lost_rows_are_metrics(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    path = tmp_path / "usage.db"
    ledger = SQLiteLedger(path, retry_delays=(0.001,), max_queued_rows=1)
    refuse_writes(path)
    async with gateway_client(make_settings(tmp_path), nanogpt, ledger=ledger) as client:
        text = await scrape(client)
        assert (metric(text, QUEUE), metric(text, LOST)) == (0, 0)
        for _ in range(3):
            response = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
            assert response.status_code == 200  # the member's answer does not wait on the disk
        text = await scrape(client)
        assert (metric(text, QUEUE), metric(text, LOST)) == (1, 2)
        execute(path, "DROP TRIGGER refuse")
        await asyncio.to_thread(ledger.flush)
        text = await scrape(client)
        assert (metric(text, QUEUE), metric(text, LOST)) == (0, 2)


async def test_readyz_says_when_the_ledger_cannot_be_written(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    path = tmp_path / "usage.db"
    ledger = SQLiteLedger(path, batch_seconds=0.001, retry_delays=(0.001,))
    refuse_writes(path)
    async with gateway_client(make_settings(tmp_path), nanogpt, ledger=ledger) as client:
        assert (await client.get("/readyz")).status_code == 200
        response = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
        assert response.status_code == 200
        with anyio.fail_after(5):
            while ledger.writable:  # until the writer has tried: a readiness poll
                await asyncio.sleep(0.001)
        assert_openai_error(await client.get("/readyz"), 503, "ledger_unavailable")
        execute(path, "DROP TRIGGER refuse")
        await asyncio.to_thread(ledger.flush)
        assert (await client.get("/readyz")).status_code == 200
