"""PostgreSQL going away under a running gateway: requests are answered as before, usage rows
wait in memory (the queue depth and any loss beyond its bound in `/metrics`, the loss logged
once), `/readyz` stays ready while the queue has room (every replica shares the outage) and says
the ledger cannot be written once rows are lost, and when PostgreSQL is back every queued
row is written, none twice."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from gateway.ledger.postgresql import PostgreSQLLedger, migrate
from tests.conftest import (
    FakeNanoGPT,
    assert_openai_error,
    auth,
    gateway_client,
    make_settings,
    metric,
    query_sql,
)
from tests.postgres import PostgreSQL
from tests.test_ledger import record

pytestmark = pytest.mark.anyio
CHAT = {"model": "openai/gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}
QUEUE = "nanogpt_gateway_ledger_queue_rows"
LOST = "nanogpt_gateway_ledger_rows_lost_total"


@pytest.fixture
def database(postgres_url: str) -> str:
    migrate(postgres_url)
    return postgres_url


@pytest.fixture
def outage(postgresql_server: PostgreSQL) -> Iterator[PostgreSQL]:
    """The session's server, started again after the test whatever it did."""
    try:
        yield postgresql_server
    finally:
        if not postgresql_server.running:
            postgresql_server.start()


def request_ids(database: str) -> list[str]:
    return [
        r["request_id"] for r in query_sql(database, "SELECT request_id FROM usage ORDER BY id")
    ]


def wait_until_unwritable(ledger: PostgreSQLLedger) -> None:
    deadline = time.monotonic() + 10
    while ledger.writable:  # until the writer has tried and failed: a readiness poll
        assert time.monotonic() < deadline, "the writer never noticed the outage"
        time.sleep(0.005)


def test_rows_queue_through_an_outage_and_drain_when_postgresql_returns(
    database: str, outage: PostgreSQL, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = PostgreSQLLedger(database, batch_seconds=0.01, retry_delays=(0.01,))
    ledger.append(record(0))
    ledger.flush()
    outage.stop()
    with caplog.at_level(logging.WARNING, logger="gateway.ledger"):
        for i in range(1, 6):
            ledger.append(record(i))
        wait_until_unwritable(ledger)
        assert (ledger.queued_rows, ledger.rows_lost) == (5, 0)
        outage.start()
        ledger.flush(timeout=30)
    assert ledger.writable and (ledger.queued_rows, ledger.rows_lost) == (0, 0)
    assert "usage rows are written again" in caplog.text
    assert "hunter" not in caplog.text and "Traceback" not in caplog.text.split("\n", 1)[0]
    ledger.append(record(6))
    ledger.close()  # what close() finds queued it writes: none lost while PostgreSQL is up
    assert request_ids(database) == [f"req-{i}" for i in range(7)]


def test_rows_beyond_the_bound_are_lost_counted_and_logged_once(
    database: str, outage: PostgreSQL, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = PostgreSQLLedger(database, retry_delays=(0.01,), max_queued_rows=3)
    outage.stop()
    with caplog.at_level(logging.ERROR, logger="gateway.ledger"):
        for i in range(10):
            ledger.append(record(i))
    assert (ledger.queued_rows, ledger.rows_lost) == (3, 7)
    [full] = [r for r in caplog.records if "new rows are lost" in r.getMessage()]
    assert "request req-3 is the first" in full.getMessage()
    outage.start()
    ledger.close(timeout=30)
    assert request_ids(database) == ["req-0", "req-1", "req-2"]
    assert (ledger.queued_rows, ledger.rows_lost) == (0, 7)


async def test_the_gateway_answers_through_an_outage_and_its_metrics_say_so(
    tmp_path: Path, nanogpt: FakeNanoGPT, database: str, outage: PostgreSQL
) -> None:
    ledger = PostgreSQLLedger(database, batch_seconds=0.01, retry_delays=(0.01,), max_queued_rows=2)
    async with gateway_client(make_settings(tmp_path), nanogpt, ledger=ledger) as client:
        await asyncio.to_thread(outage.stop)
        for _ in range(3):
            answer = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
            assert answer.status_code == 200  # the member's answer does not wait on PostgreSQL
        with anyio.fail_after(10):
            while ledger.writable:  # until the writer has tried: a readiness poll
                await asyncio.sleep(0.005)
        text = (await client.get("/metrics")).text
        assert (metric(text, QUEUE), metric(text, LOST)) == (2, 1)
        # Full, rows being lost: now out of rotation (until then every replica stays ready:
        # the shared database is down for all of them, and refusing serves no one).
        assert_openai_error(await client.get("/readyz"), 503, "ledger_unavailable")
        await asyncio.to_thread(outage.start)
        await asyncio.to_thread(ledger.flush, 30)
        text = (await client.get("/metrics")).text
        assert (metric(text, QUEUE), metric(text, LOST)) == (0, 1)
        assert (await client.get("/readyz")).status_code == 200
    assert len(request_ids(database)) == 2


async def test_replicas_stay_ready_through_an_outage_while_the_queue_has_room(
    tmp_path: Path, nanogpt: FakeNanoGPT, database: str, outage: PostgreSQL
) -> None:
    ledger = PostgreSQLLedger(database, batch_seconds=0.01, retry_delays=(0.01,))
    async with gateway_client(make_settings(tmp_path), nanogpt, ledger=ledger) as client:
        await asyncio.to_thread(outage.stop)
        answer = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
        assert answer.status_code == 200
        with anyio.fail_after(10):
            while ledger.writable:  # until the writer has tried: a readiness poll
                await asyncio.sleep(0.005)
        assert (await client.get("/readyz")).status_code == 200  # queued, nothing lost
        await asyncio.to_thread(outage.start)
        await asyncio.to_thread(ledger.flush, 30)
    assert len(request_ids(database)) == 1


async def test_the_app_opens_its_ledger_and_keys_where_the_config_says(
    tmp_path: Path, nanogpt: FakeNanoGPT, database: str
) -> None:
    """`[database] url` a PostgreSQL URL: the lifespan opens the ledger and key store there
    (and reads the spend there at start-up), and a restart goes on with the same history."""
    settings = make_settings(tmp_path, f"[database]\nurl = {database!r}\n")
    for _ in range(2):
        async with gateway_client(settings, nanogpt) as client:
            answer = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
            assert answer.status_code == 200
    assert len(request_ids(database)) == 2
    assert not list(tmp_path.glob("*.db"))  # nothing written beside the config
