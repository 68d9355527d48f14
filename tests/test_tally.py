"""The tally: finished once, whoever finishes it, and handed to every sink."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.keys import hash_key, issued_key
from gateway.keystore import open_keystore
from gateway.metrics import Metrics
from gateway.tally import Tallies
from gateway.types import Finished, Member, StoredKey, Usage
from tests.conftest import FakeNanoGPT, auth, gateway_client, make_settings, metric

pytestmark = pytest.mark.anyio


class ListLedger:
    def __init__(self) -> None:
        self.rows: list[Finished] = []
        self.closed = False

    def append(self, record: Finished) -> None:
        self.rows.append(record)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


async def test_finish_twice_records_once() -> None:
    metrics, ledger = Metrics(), ListLedger()
    tallies = Tallies(metrics, ledger, clock=lambda: 1234.5)
    tally = tallies.start()
    tally.member = Member(name="alice", key_sha256="")
    await tally.finish(200, "ok", Usage(prompt_tokens=1))
    await tally.finish(500, "error")
    assert [(r.status, r.outcome, r.time) for r in ledger.rows] == [(200, "ok", 1234.5)]
    text = metrics.exposition()[0].decode()
    assert metric(text, "nanogpt_gateway_requests_total", member="alice", status="200") == 1
    assert metric(text, "nanogpt_gateway_requests_total", status="500") is None
    assert metric(text, "nanogpt_gateway_inflight_requests") == 0


async def test_a_cancelled_finisher_still_records() -> None:
    ledger = ListLedger()
    tally = Tallies(Metrics(), ledger).start()
    tally.member = Member(name="alice", key_sha256="")

    async def finish_then_die() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await tally.finish(499, "client_disconnected")

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(finish_then_die())
    assert [r.outcome for r in ledger.rows] == ["client_disconnected"]


async def test_a_failing_ledger_does_not_fail_the_request(caplog: pytest.LogCaptureFixture) -> None:
    class ClosedLedger:
        def append(self, record: Finished) -> None:
            raise RuntimeError("closed")

    tally = Tallies(Metrics(), ClosedLedger()).start()
    tally.member = Member(name="alice", key_sha256="")
    await tally.finish(200, "ok")
    assert f"request {tally.request_id} not recorded" in caplog.text


async def test_the_app_uses_the_ledger_and_clock_it_is_given(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    ledger = ListLedger()
    settings = make_settings(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    keystore = open_keystore(tmp_path / "elsewhere" / "keys.db")
    carol_key = issued_key("000000000c4f", "c" * 43)
    carol = StoredKey(
        public_id="000000000c4f", name="carol", secret_sha256=hash_key(carol_key), created_at=1
    )
    keystore.create(carol, actor="test")
    seams = {"ledger": ledger, "clock": lambda: 42.0, "keystore": keystore}
    async with gateway_client(settings, nanogpt, **seams) as client:
        chat = {"model": "openai/gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}
        response = await client.post("/v1/chat/completions", json=chat, headers=auth(carol_key))
    assert response.status_code == 200
    row = ledger.rows[-1]
    assert (row.member, row.time, row.request_id) == (
        "carol",
        42.0,
        response.headers["x-gateway-request-id"],
    )
    assert not (tmp_path / "gateway-usage.db").exists()
