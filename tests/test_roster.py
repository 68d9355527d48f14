"""The roster: the store is read only when its change counter moves, a stored key's member
is rebuilt only when the key or the config changed, last-used times are written in batches
(and at close), and a store that cannot be read keeps the keys it last gave."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import InvalidApiKey
from gateway.keystore import AuditEntry, KeyStoreError, actions, open_keystore
from gateway.keystore.sqlite import SQLiteKeyStore
from gateway.roster import Roster
from gateway.types import StoredKey
from tests.conftest import ALICE_KEY, make_settings

pytestmark = pytest.mark.anyio
NOW = 1_800_000_000.0


class Counting:
    """A store that counts the rows each look at it reads, and fails them on demand."""

    def __init__(self, store: SQLiteKeyStore) -> None:
        self.store = store
        self.rows: list[int] = []
        self.failing = False
        self.polled = threading.Event()
        """Set by every look at the store (made on a worker thread)."""

    def version(self) -> int:
        return self.store.version()

    def changed_since(self, version: int) -> tuple[int, list[StoredKey]]:
        self.polled.set()
        if self.failing:
            raise KeyStoreError("gateway.db: cannot read the key store: disk I/O error")
        now, keys = self.store.changed_since(version)
        self.rows.append(len(keys))
        return now, keys

    def stored_keys(self) -> list[StoredKey]:
        return self.store.stored_keys()

    def touch(self, used: Mapping[str, float]) -> None:
        self.store.touch(used)

    def get(self, name: str) -> StoredKey:
        return self.store.get(name)

    def create(self, key: StoredKey, *, actor: str) -> None:
        self.store.create(key, actor=actor)

    def change(
        self, name: str, changes: Mapping[str, Any], *, action: str, actor: str, now: float
    ) -> StoredKey:
        return self.store.change(name, changes, action=action, actor=actor, now=now)

    def audit(self) -> Sequence[AuditEntry]:
        return self.store.audit()

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def store(tmp_path: Path) -> Counting:
    return Counting(SQLiteKeyStore(tmp_path / "gateway-usage.db"))


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_only_what_changed_is_read_and_rebuilt(tmp_path: Path, store: Counting) -> None:
    _, erin = actions.create(store, {"name": "erin"}, actor="t", now=NOW, config_names=())
    roster = Roster(make_settings(tmp_path), store)
    assert await roster.refresh() and store.rows == [1]
    assert not await roster.refresh() and store.rows == [1, 0]
    _, key = actions.create(store, {"name": "dave"}, actor="t", now=NOW, config_names=())
    assert await roster.refresh() and store.rows == [1, 0, 1]  # dave, not erin again
    assert roster.authenticate(bearer(key), NOW).name == "dave"
    assert roster.authenticate(bearer(erin), NOW).name == "erin"
    assert [k.name for k in roster.stored] == ["erin", "dave"]
    before = roster.ring
    dave_member = roster.authenticate(bearer(key), NOW)
    actions.create(store, {"name": "fay"}, actor="t", now=NOW, config_names=())
    await roster.refresh()
    assert roster.ring is not before
    assert roster.authenticate(bearer(key), NOW) is dave_member  # unchanged: not rebuilt
    actions.update(store, "dave", {"requests_per_minute": 5}, actor="t", now=NOW)
    await roster.refresh()
    assert roster.authenticate(bearer(key), NOW).limits.requests_per_minute == 5
    assert store.rows[-2:] == [1, 1]  # fay, then dave again


async def test_a_reloaded_config_rebuilds_every_stored_member(
    tmp_path: Path, store: Counting
) -> None:
    roster = Roster(make_settings(tmp_path), store)
    _, key = actions.create(store, {"name": "dave"}, actor="t", now=NOW, config_names=())
    await roster.refresh()
    assert roster.authenticate(bearer(key), NOW).limits.budget_usd_daily is None
    roster.configure(make_settings(tmp_path, "[limits]\nbudget_usd_daily = 3.0\n"))
    assert roster.authenticate(bearer(key), NOW).limits.budget_usd_daily == 3


async def test_last_used_times_are_written_in_batches_and_at_close(
    tmp_path: Path, store: Counting
) -> None:
    roster = Roster(make_settings(tmp_path), store)
    _, key = actions.create(store, {"name": "dave"}, actor="t", now=NOW, config_names=())
    await roster.refresh()
    for second in range(3):
        roster.authenticate(bearer(key), NOW + second)
    assert store.store.get("dave").last_used_at is None  # not on the request path
    await roster.write_last_used()
    assert store.store.get("dave").last_used_at == NOW + 2
    roster.authenticate(bearer(key), NOW + 10)
    await roster.close()
    assert open_keystore(tmp_path / "gateway-usage.db").get("dave").last_used_at == NOW + 10


async def test_a_store_that_cannot_be_read_keeps_the_last_keys(
    tmp_path: Path, store: Counting, caplog: pytest.LogCaptureFixture
) -> None:
    roster = Roster(make_settings(tmp_path), store)
    _, key = actions.create(store, {"name": "dave"}, actor="t", now=NOW, config_names=())
    await roster.refresh()
    store.failing = True
    watching = asyncio.create_task(roster.watch(poll_seconds=0))
    for _ in range(3):  # three polls that fail
        store.polled.clear()
        assert await asyncio.to_thread(store.polled.wait, 10)
    store.failing = False
    actions.revoke(store, "dave", actor="t", now=NOW)
    for _ in range(2):  # the second poll starts once the first has read the keys again
        store.polled.clear()
        assert await asyncio.to_thread(store.polled.wait, 10)
    watching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watching
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "keeping the keys last read: gateway.db: cannot read the key store: disk I/O error"
    ]
    assert "can be read again" in caplog.text
    with pytest.raises(InvalidApiKey, match="revoked"):
        roster.authenticate(bearer(key), NOW)


async def test_a_stored_key_named_as_a_config_member_is_ignored_and_said_once(
    tmp_path: Path, store: Counting, caplog: pytest.LogCaptureFixture
) -> None:
    """Another config (not this one) let the key in; this gateway's alice is the config's."""
    _, key = actions.create(store, {"name": "alice"}, actor="t", now=NOW, config_names=())
    roster = Roster(make_settings(tmp_path), store)
    await roster.refresh()
    roster.configure(make_settings(tmp_path, "[limits]\nrequests_per_minute = 5\n"))
    with pytest.raises(InvalidApiKey):
        roster.authenticate(bearer(key), NOW)
    assert roster.authenticate(bearer(ALICE_KEY), NOW).limits.requests_per_minute == 5
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert said == ["stored key 'alice' is ignored: a config member has that name"]


async def test_a_slow_refresh_never_installs_older_keys_over_newer_ones(
    tmp_path: Path, store: Counting
) -> None:
    _, key = actions.create(store, {"name": "dave"}, actor="t", now=NOW, config_names=())
    roster = Roster(make_settings(tmp_path), store)
    reading, release = threading.Event(), threading.Event()
    read = store.changed_since

    def first_read_is_slow(version: int) -> tuple[int, list[StoredKey]]:
        found = read(version)
        if len(store.rows) == 1:
            reading.set()
            release.wait(10)
        return found

    store.changed_since = first_read_is_slow  # type: ignore[method-assign]
    slow = asyncio.create_task(roster.refresh())  # reads the keys before the revocation
    assert await asyncio.to_thread(reading.wait, 10)
    actions.revoke(store, "dave", actor="t", now=NOW)
    store.polled.clear()
    fast = asyncio.create_task(roster.refresh())  # the admin API's refresh after its change
    # it waits for the slow one to end before it even looks (were it not to, it would
    # install the revocation and the slow one would then put the old keys back)
    assert not await asyncio.to_thread(store.polled.wait, 0.2)
    release.set()
    await asyncio.wait_for(asyncio.gather(slow, fast), 10)
    with pytest.raises(InvalidApiKey, match="revoked"):
        roster.authenticate(bearer(key), NOW)


async def test_a_store_that_starts_over_is_read_whole(tmp_path: Path, store: Counting) -> None:
    """The database replaced under a running gateway (restored from a backup): its counter
    is behind the roster's, and what the roster knew of the old one is dropped."""
    for name in ("dave", "erin"):
        _, old_key = actions.create(store, {"name": name}, actor="t", now=NOW, config_names=())
    roster = Roster(make_settings(tmp_path), store)
    await roster.refresh()
    (tmp_path / "restored").mkdir()
    store.store = SQLiteKeyStore(tmp_path / "restored" / "gateway.db")
    _, new_key = actions.create(store, {"name": "fay"}, actor="t", now=NOW, config_names=())
    assert await roster.refresh()
    assert [k.name for k in roster.stored] == ["fay"]
    assert roster.authenticate(bearer(new_key), NOW).name == "fay"
    with pytest.raises(InvalidApiKey):
        roster.authenticate(bearer(old_key), NOW)


async def test_last_used_times_the_store_refuses_are_kept_for_the_next_write(
    tmp_path: Path, store: Counting
) -> None:
    roster = Roster(make_settings(tmp_path), store)
    _, dave = actions.create(store, {"name": "dave"}, actor="t", now=NOW, config_names=())
    _, erin = actions.create(store, {"name": "erin"}, actor="t", now=NOW, config_names=())
    await roster.refresh()
    roster.authenticate(bearer(dave), NOW)
    with sqlite3.connect(tmp_path / "gateway-usage.db") as db:
        db.execute(
            "CREATE TRIGGER busy BEFORE UPDATE OF last_used_at ON keys "
            "BEGIN SELECT RAISE(ABORT, 'database is locked'); END"
        )
    with pytest.raises(KeyStoreError, match="database is locked"):
        await roster.write_last_used()
    roster.authenticate(bearer(erin), NOW + 1)
    with sqlite3.connect(tmp_path / "gateway-usage.db") as db:
        db.execute("DROP TRIGGER busy")
    await roster.write_last_used()
    assert store.get("dave").last_used_at == NOW  # from before the refusal
    assert store.get("erin").last_used_at == NOW + 1
