"""The key store in a real SQLite file and a real PostgreSQL database, and the actions on it:
what is stored (never a key), what every change leaves in the audit trail, how the change
counter moves, and the checks on what an admin asks for."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import InvalidRequest
from gateway.keys import KeyRing, hash_key, split_key
from gateway.keystore import (
    KeyStore,
    KeyStoreError,
    NameTaken,
    UnknownKey,
    actions,
    open_keystore,
    stored_keys,
)
from gateway.keystore.fields import described, key_changes, member_of, parse_duration
from gateway.types import Limits, PolicyRules
from tests.conftest import execute_sql, query_sql

NOW = 1_800_000_000.0
DEFAULTS = Limits(requests_per_minute=60, tokens_per_minute=100_000)


@pytest.fixture
def store(database: str) -> Iterator[KeyStore]:
    store = open_keystore(database)
    yield store
    store.close()


def stored_bytes(database: str) -> bytes:
    """Everything the database holds, as an attacker with a copy of it would read it."""
    if database.startswith("postgresql://"):
        tables = ("keys", "key_audit", "key_changes")
        return repr([query_sql(database, f"SELECT * FROM {t}") for t in tables]).encode()
    return b"".join(p.read_bytes() for p in Path(database).parent.glob("gateway.db*"))


def create(store: KeyStore, **data: Any) -> tuple[Any, str]:
    return actions.create(store, data, actor="cli:ops", now=NOW, config_names={"alice"})


def authenticates(store: KeyStore, key: str, now: float = NOW) -> str:
    stored = [(k, member_of(k, DEFAULTS, PolicyRules())) for k in store.stored_keys()]
    ring = KeyRing([], stored=stored)
    return ring.authenticate({"authorization": f"Bearer {key}"}, now).member.name


def test_a_created_key_is_stored_as_its_hash_only(store: KeyStore, database: str) -> None:
    stored, key = create(store, name="dave", budget_usd_daily=5, note="laptop")
    parts = split_key(key)
    assert parts is not None and stored.public_id == parts[0]
    assert stored.secret_sha256 == hash_key(key)
    store.close()
    raw = stored_bytes(database)
    assert stored.secret_sha256.encode() in raw and parts[1].encode() not in raw
    again = open_keystore(database)
    assert again.get("dave") == stored
    assert authenticates(again, key) == "dave"
    again.close()


def test_a_stored_key_acts_as_a_member_with_its_own_limits(store: KeyStore) -> None:
    _stored, _ = create(
        store,
        name="dave",
        budget_usd_daily=5,
        requests_per_minute="unlimited",
        allow=["deepseek/*"],
        deny=["*-preview"],
        end_user_header="X-User",
        may_change_account=True,
    )
    rules = PolicyRules(allow_paygo_override=True)
    member = member_of(store.get("dave"), DEFAULTS, rules)
    assert member.limits.budget_usd_daily == 5
    assert member.limits.requests_per_minute is None  # "unlimited" lifts the default
    assert member.limits.tokens_per_minute == 100_000  # the [limits] default
    assert (member.allow, member.deny) == (("deepseek/*",), ("*-preview",))
    assert member.end_user_header == "x-user" and member.admin and member.allow_paygo_override


def test_every_change_bumps_the_counter_and_is_audited_without_a_secret(
    store: KeyStore,
) -> None:
    versions = [store.version()]
    _, key = create(store, name="dave", requests_per_minute=10)
    versions.append(store.version())
    actions.update(store, "dave", {"requests_per_minute": None}, actor="admin", now=NOW + 1)
    versions.append(store.version())
    actions.set_disabled(store, "dave", True, actor="admin", now=NOW + 2)
    actions.set_disabled(store, "dave", False, actor="admin", now=NOW + 3)
    _, new_key = actions.rotate(store, "dave", 3600, actor="cli:ops", now=NOW + 4)
    actions.revoke(store, "dave", actor="cli:ops", now=NOW + 5)
    versions.append(store.version())
    store.touch({store.stored_keys()[0].public_id: NOW + 6})  # last used: nobody need reload
    assert versions == sorted(set(versions)) and store.version() == versions[-1] == 6
    audit = store.audit()
    assert [(a.actor, a.action, a.target) for a in audit] == [
        ("cli:ops", "create", "dave"),
        ("admin", "update", "dave"),
        ("admin", "disable", "dave"),
        ("admin", "enable", "dave"),
        ("cli:ops", "rotate", "dave"),
        ("cli:ops", "revoke", "dave"),
    ]
    assert audit[0].fields["requests_per_minute"] == 10
    assert audit[1].fields == {"requests_per_minute": None}
    assert audit[4].fields["secret"] == "replaced"
    assert audit[5].fields == {"revoked_at": "2027-01-15T08:00:05Z"}
    every_word = repr(audit)
    for secret in (key, new_key, hash_key(key), hash_key(new_key)):
        assert secret.split("-")[-1] not in every_word
    assert store.stored_keys()[0].last_used_at == NOW + 6


def test_a_revoked_name_may_be_used_again_but_a_live_one_may_not(store: KeyStore) -> None:
    create(store, name="dave")
    with pytest.raises(NameTaken, match="exists already"):
        create(store, name="dave")
    with pytest.raises(NameTaken, match="config file"):
        create(store, name="alice")
    actions.revoke(store, "dave", actor="cli:ops", now=NOW)
    with pytest.raises(UnknownKey):
        store.get("dave")
    again, key = create(store, name="dave")
    assert store.get("dave") == again
    assert [k.status(NOW) for k in store.stored_keys()] == ["revoked", "active"]
    assert authenticates(store, key) == "dave"


def test_rotation_keeps_the_id_and_history_and_the_old_secret_for_the_grace(
    store: KeyStore,
) -> None:
    old, old_key = create(store, name="dave", budget_usd_monthly=20)
    rotated, new_key = actions.rotate(store, "dave", 60, actor="cli:ops", now=NOW)
    assert rotated.public_id == old.public_id and rotated.limits == old.limits
    assert new_key != old_key and split_key(new_key)[0] == old.public_id  # type: ignore[index]
    assert authenticates(store, old_key, NOW + 59) == "dave"
    assert authenticates(store, new_key, NOW + 60) == "dave"
    with pytest.raises(Exception, match="was rotated"):
        authenticates(store, old_key, NOW + 60)
    _, newest = actions.rotate(store, "dave", 0, actor="cli:ops", now=NOW + 1)
    with pytest.raises(Exception, match="was rotated"):
        authenticates(store, new_key, NOW + 1)  # no grace: refused at once, saying why
    with pytest.raises(Exception, match="not a member key"):
        authenticates(store, old_key, NOW + 1)  # two rotations back: unknown
    assert authenticates(store, newest, NOW + 1) == "dave"
    with pytest.raises(InvalidRequest, match="grace_seconds"):
        actions.rotate(store, "dave", -1, actor="cli:ops", now=NOW)


@pytest.mark.parametrize(
    ("data", "field", "said"),
    [
        ({"name": "dave", "colour": "red"}, "colour", "unknown field"),
        ({"name": "da ve"}, "name", "letters, digits"),
        ({"name": "anonymous"}, "name", "reserved"),
        ({}, "name", "needs a name"),
        ({"name": "d", "role": "root"}, "role", "member"),
        ({"name": "d", "budget_usd_daily": -1}, "budget_usd_daily", "0 or more"),
        ({"name": "d", "budget_usd_daily": "5"}, "budget_usd_daily", "a number of USD"),
        ({"name": "d", "budget_usd_daily": True}, "budget_usd_daily", "a number of USD"),
        ({"name": "d", "requests_per_minute": 1.5}, "requests_per_minute", "whole number"),
        ({"name": "d", "tokens_per_minute": float("nan")}, "tokens_per_minute", "whole"),
        ({"name": "d", "budget_usd_monthly": float("inf")}, "budget_usd_monthly", "finite"),
        ({"name": "d", "allow": "deepseek/*"}, "allow", "a list of model patterns"),
        ({"name": "d", "deny": ["a b"]}, "deny", "bad pattern"),
        ({"name": "d", "allow": ["gpt-[45"]}, "allow", "unclosed"),
        ({"name": "d", "expires_at": "tomorrow"}, "expires_at", "RFC 3339"),
        ({"name": "d", "expires_at": "2027-01-31"}, "expires_at", "RFC 3339"),
        ({"name": "d", "expires_at": "2027-01-31T00:00:00"}, "expires_at", "RFC 3339"),
        ({"name": "d", "expires_at": "2020-01-31T00:00:00Z"}, "expires_at", "not in the future"),
        ({"name": "d", "expires_at": "999999999d"}, "expires_at", "past 9999-12-31"),
        ({"name": "d", "end_user_header": "x user"}, "end_user_header", "header name"),
        ({"name": "d", "may_change_account": "yes"}, "may_change_account", "true or false"),
        ({"name": "d", "note": 3}, "note", "a string"),
        ({"name": "d", "note": "x" * 501}, "note", "500"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    store: KeyStore, data: dict[str, Any], field: str, said: str
) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        actions.create(store, data, actor="t", now=NOW, config_names=())
    assert excinfo.value.param == field and said in excinfo.value.message
    assert excinfo.value.status_code == 400
    assert store.stored_keys() == [] and store.version() == 0  # nothing written


def test_name_and_role_are_set_at_creation_only(store: KeyStore) -> None:
    create(store, name="dave")
    for field in ("name", "role"):
        with pytest.raises(InvalidRequest, match="set at creation only"):
            actions.update(store, "dave", {field: "x"}, actor="t", now=NOW)
    with pytest.raises(UnknownKey, match="no key named 'erin'"):
        actions.update(store, "erin", {"note": "x"}, actor="t", now=NOW)


def test_expiry_takes_a_duration_or_an_instant() -> None:
    assert key_changes({"expires_at": "30d"}, creating=False, now=NOW) == {
        "expires_at": NOW + 30 * 86400
    }
    assert key_changes({"expires_at": "2027-01-31T00:00:00Z"}, creating=False, now=NOW) == {
        "expires_at": 1_801_353_600.0
    }
    assert key_changes({"expires_at": None}, creating=False, now=NOW) == {"expires_at": None}
    assert [parse_duration(d) for d in ("45s", "5m", "1h", "2d")] == [45, 300, 3600, 172800]
    for bad in ("1w", "h", "-1h", "1.5h", ""):
        with pytest.raises(ValueError, match="Ns, Nm, Nh or Nd"):
            parse_duration(bad)


def test_a_listing_shows_no_secret(store: KeyStore) -> None:
    stored, key = create(store, name="dave", tokens_per_minute=1000, expires_at="1h")
    listing = described(stored, NOW)
    assert listing["key"] == f"ngw-{stored.public_id}-…"
    assert listing["status"] == "active" and listing["tokens_per_minute"] == 1000
    assert listing["budget_usd_daily"] is None  # the [limits] default
    assert described(stored, NOW + 3600)["status"] == "expired"
    assert split_key(key)[1] not in repr(listing) and stored.secret_sha256 not in repr(listing)  # type: ignore[index]


def test_an_unreadable_database_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-db").write_text("hello, this is not SQLite" * 100)
    with pytest.raises(KeyStoreError, match="not-a-db"):
        open_keystore(tmp_path / "not-a-db")
    with pytest.raises(KeyStoreError, match="does not exist"):
        open_keystore(tmp_path / "missing" / "gateway.db")


REFUSE_AUDIT = {
    "sqlite": "CREATE TRIGGER no_audit BEFORE INSERT ON key_audit "
    "BEGIN SELECT RAISE(ABORT, 'audit is full'); END",
    "postgresql": "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'audit is full'; END $$; "
    "CREATE TRIGGER no_audit BEFORE INSERT ON key_audit FOR EACH ROW EXECUTE FUNCTION refuse()",
}


def backend(database: str) -> str:
    return "postgresql" if database.startswith("postgresql://") else "sqlite"


def test_a_store_write_that_fails_changes_nothing(store: KeyStore, database: str) -> None:
    create(store, name="dave")
    execute_sql(database, REFUSE_AUDIT[backend(database)])
    with pytest.raises(KeyStoreError, match="audit is full"):
        actions.revoke(store, "dave", actor="t", now=NOW)
    assert store.get("dave").revoked_at is None and store.version() == 1


def test_an_update_is_one_change_whatever_it_sets(store: KeyStore) -> None:
    create(store, name="dave")
    actions.update(store, "dave", {"note": "on leave", "disabled": True}, actor="a", now=NOW)
    actions.update(store, "dave", {"disabled": False}, actor="a", now=NOW)
    actions.update(store, "dave", {}, actor="a", now=NOW)  # nothing named: nothing written
    entries = [(e.action, dict(e.fields)) for e in store.audit()][1:]
    assert entries == [
        ("update", {"note": "on leave", "disabled": True}),
        ("enable", {"disabled": False}),
    ]
    assert store.version() == 3 and store.get("dave").note == "on leave"


def test_a_postgresql_database_without_the_schema_is_refused_naming_migrate(
    postgres_url: str,
) -> None:
    with pytest.raises(KeyStoreError, match=r"has no schema: run `nanogpt-gateway migrate`"):
        open_keystore(postgres_url)
    assert stored_keys(postgres_url) == []  # a look changes nothing, and finds nothing


def test_an_unreachable_postgresql_is_one_line_without_the_password() -> None:
    url = "postgresql://ops:hunter2@127.0.0.1:1/gateway"
    for attempt in (lambda: open_keystore(url), lambda: stored_keys(url)):
        with pytest.raises(KeyStoreError) as excinfo:
            attempt()
        message = str(excinfo.value)
        assert message.startswith("postgresql://ops:***@127.0.0.1:1/gateway: cannot ")
        assert "hunter2" not in message and "\n" not in message


def test_every_replica_sees_a_change_made_through_another(database: str) -> None:
    """Two stores on one database (two replicas): what one changes, the other's poll finds."""
    first, second = open_keystore(database), open_keystore(database)
    try:
        seen, keys = second.changed_since(-1)
        assert keys == []
        create(first, name="dave")
        now, changed = second.changed_since(seen)
        assert now > seen and [k.name for k in changed] == ["dave"]
        actions.set_disabled(first, "dave", True, actor="a", now=NOW)
        later, changed = second.changed_since(now)
        assert later > now and [k.disabled for k in changed] == [True]
        assert second.changed_since(later) == (later, [])
    finally:
        first.close()
        second.close()


def test_stored_keys_looks_without_a_store_of_its_own(store: KeyStore, database: str) -> None:
    create(store, name="dave")
    create(store, name="erin")
    assert stored_keys(database) == store.stored_keys()
    assert [k.name for k in stored_keys(database)] == ["dave", "erin"]


def test_two_replicas_creating_one_name_at_once_make_one_key(database: str) -> None:
    stores = [open_keystore(database) for _ in range(2)]
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def replica(store: KeyStore) -> None:
        start.wait()
        try:
            create(store, name="dave")
            outcomes.append("created")
        except NameTaken:
            outcomes.append("taken")

    threads = [threading.Thread(target=replica, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert sorted(outcomes) == ["created", "taken"]
        assert [k.name for k in stores[0].stored_keys()] == ["dave"]
        assert stores[1].version() == 1 and len(stores[1].audit()) == 1
    finally:
        for store in stores:
            store.close()
