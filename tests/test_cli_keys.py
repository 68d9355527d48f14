"""The `nanogpt-gateway keys` command, run as a user runs it: the key is printed once and only
its hash is stored, every change is audited as `cli:<user>`, and every bad argument ends the
command with one line and exit status 2."""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_settings
from gateway.errors import InvalidApiKey, PermissionDenied
from gateway.keys import KeyRing, hash_key
from gateway.keystore import KeyStore, StoredKey, open_keystore
from gateway.keystore.fields import member_of
from gateway.ledger import open_ledger
from gateway.types import Finished
from tests.conftest import ALICE_KEY, query_sql

KEY = re.compile(r"ngw-[a-z0-9]{12}-[0-9A-Za-z]{43}")
PORT = 9123
CONFIG = f"""
[server]
port = {PORT}

[limits]
timezone = "Europe/Berlin"

[[members]]
name = "alice"
key_sha256 = "{hash_key(ALICE_KEY)}"
"""


@pytest.fixture(autouse=True)
def user(monkeypatch: pytest.MonkeyPatch) -> str:
    """The OS user the audit trail names: fixed, so the tests do not depend on who runs them."""
    monkeypatch.setattr(getpass, "getuser", lambda: "tester")
    return "tester"


@pytest.fixture(name="config")
def config_fixture(tmp_path: Path, database: str) -> Path:
    return config(tmp_path, database)


def config(tmp_path: Path, database: str) -> Path:
    """A config naming the database in `[database] url` (SQLite by its older name, `metering.ledger_path`)."""
    path = tmp_path / "gateway.toml"
    if database.startswith("postgresql://"):
        path.write_text(f"[database]\nurl = {database!r}\n" + CONFIG)
    else:
        path.write_text(f"[metering]\nledger_path = {database!r}\n" + CONFIG)
    return path


@pytest.fixture
def run(config: Path, database: str, capsys: pytest.CaptureFixture[str]) -> _Runner:
    return _Runner(config, database, capsys)


class _Runner:
    """`nanogpt-gateway keys ARGS --config PATH` in-process: (exit status, stdout, stderr)."""

    def __init__(self, config: Path, database: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.config = config
        self.capsys = capsys
        self.db = database

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        status = main(["keys", *args, "--config", str(self.config)])
        out, err = self.capsys.readouterr()
        return status, out, err

    def ok(self, *args: str) -> str:
        status, out, err = self(*args)
        assert status == 0, err
        return out

    def create(self, name: str, *flags: str) -> str:
        out = self.ok("create", name, *flags)
        assert KEY.fullmatch(out.strip()), out
        return out.strip()

    def refused(self, *args: str) -> str:
        """The one line a refused command prints (nothing on stdout, exit status 2)."""
        status, out, err = self(*args)
        assert (status, out) == (2, ""), (status, out, err)
        assert err.count("\n") == 1 and err.startswith("nanogpt-gateway keys: "), err
        return err.strip()

    @contextlib.contextmanager
    def store(self) -> Iterator[KeyStore]:
        store = open_keystore(self.db)
        try:
            yield store
        finally:
            store.close()

    def stored(self, name: str) -> StoredKey:
        with self.store() as store:
            return store.get(name)


def ring(run: _Runner) -> KeyRing:
    """The gateway's view of the store's keys, as the roster builds it."""
    settings = load_settings(run.config, {}, team_key_required=False)
    with run.store() as store:
        stored = store.stored_keys()
    pairs = [(k, member_of(k, settings.anonymous.limits, settings.policy)) for k in stored]
    return KeyRing(settings.members, stored=pairs)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def db_bytes(run: _Runner) -> bytes:
    """Every byte SQLite keeps of the database (the file and any journal beside it); every
    row of PostgreSQL's key tables."""
    if run.db.startswith("postgresql://"):
        tables = ("keys", "key_audit")
        return repr([query_sql(run.db, f"SELECT * FROM {t}") for t in tables]).encode()
    db = Path(run.db)
    return b"".join(p.read_bytes() for p in db.parent.glob(f"{db.name}*"))


def test_create_prints_the_key_once_and_stores_only_its_hash(run: _Runner) -> None:
    status, out, err = run("create", "ci-bot")
    assert status == 0
    key = out.strip()
    assert KEY.fullmatch(key) and out == key + "\n"  # the key alone on stdout, for $(...)
    assert key not in err
    assert "shown this once" in err and f"http://127.0.0.1:{PORT}/v1" in err
    stored = run.stored("ci-bot")
    assert stored.secret_sha256 == hashlib.sha256(key.encode()).hexdigest()
    assert key.startswith(f"ngw-{stored.public_id}-")
    secret = key.rsplit("-", 1)[1]
    data = db_bytes(run)
    assert key.encode() not in data and secret.encode() not in data
    holder = ring(run).authenticate(bearer(key), time.time())
    assert holder.member.name == "ci-bot" and holder.stored is not None
    # not shown again: no listing or audit entry carries it
    for args in (["list", "--all", "--format", "json"], ["show", "ci-bot"], ["audit"]):
        listing = run.ok(*args)
        assert secret not in listing and stored.secret_sha256 not in listing


def test_create_takes_every_flag_under_the_configs_names(run: _Runner) -> None:
    before = time.time()
    run.create(
        "ci-bot",
        "--budget-usd-daily", "5",
        "--budget-usd-monthly", "50.5",
        "--rpm", "60",
        "--tpm", "unlimited",
        "--max-concurrent", "4",
        "--end-user-budget-usd-daily", "0.5",
        "--end-user-budget-usd-monthly", "0",
        "--allow", "openai/*",
        "--allow", "deepseek/*",
        "--deny", "openai/o1*",
        "--expires", "30d",
        "--may-change-account",
        "--end-user-header", "X-End-User",
        "--note", "the CI runner",
    )  # fmt: skip
    key = run.stored("ci-bot")
    assert dict(key.limits) == {
        "budget_usd_daily": 5.0,
        "budget_usd_monthly": 50.5,
        "requests_per_minute": 60,
        "tokens_per_minute": "unlimited",
        "max_concurrent_requests": 4,
        "end_user_budget_usd_daily": 0.5,
        "end_user_budget_usd_monthly": 0.0,
    }
    assert key.allow == ("openai/*", "deepseek/*") and key.deny == ("openai/o1*",)
    assert key.expires_at is not None
    assert before + 30 * 86400 <= key.expires_at <= time.time() + 30 * 86400
    assert key.may_change_account and key.end_user_header == "x-end-user"
    assert key.note == "the CI runner" and key.role == "member"


@pytest.mark.parametrize(
    ("host", "url"),
    [("0.0.0.0", "http://<gateway host>:8080/v1"), ("::1", "http://[::1]:8080/v1")],
)
def test_the_base_url_the_key_is_used_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str, url: str
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f"[server]\nhost = {host!r}\n[metering]\nmetrics_port = 9100\n")
    assert main(["keys", "create", "ci-bot", "--config", str(config)]) == 0
    assert f"base URL {url}\n" in capsys.readouterr().err


def test_an_instant_expiry_and_an_admin_key(run: _Runner) -> None:
    run.create("ops", "--admin", "--expires", "2999-01-31T00:00:00Z")
    status, out, err = run("create", "ops2", "--admin")
    assert status == 0 and f"http://127.0.0.1:{PORT}/admin/v1" in err
    ops = run.stored("ops")
    assert ops.role == "admin"
    assert ops.expires_at == datetime(2999, 1, 31, tzinfo=UTC).timestamp()
    with pytest.raises(PermissionDenied, match="admin key"):
        ring(run).authenticate(bearer(out.strip()), time.time())
    assert ring(run).authenticate_admin(bearer(out.strip()), time.time()) == "ops2"


def spend(run: _Runner, member: str, cost: str) -> None:
    writer = open_ledger(run.db)
    writer.append(
        Finished(
            time=time.time(),
            request_id=f"r-{member}-{cost}",
            member=member,
            endpoint="chat/completions",
            status=200,
            outcome="ok",
            cost_usd=Decimal(cost),
        )
    )
    writer.close()


def test_list_shows_limits_and_spend_and_hides_ended_keys_unless_all(run: _Runner) -> None:
    run.create("ci-bot", "--budget-usd-daily", "5", "--budget-usd-monthly", "50", "--rpm", "60")
    run.create("gone")
    run.create("old")
    run.create("paused")
    run.ok("revoke", "gone")
    run.ok("disable", "paused")
    with run.store() as store:  # expired a second ago, without waiting for it
        store.change("old", {"expires_at": time.time() - 1}, action="update", actor="t", now=0)
    spend(run, "ci-bot", "0.25")
    spend(run, "ci-bot", "0.5")

    table = run.ok("list").splitlines()
    assert table[0].split()[:4] == ["name", "key", "role", "status"]
    rows = {line.split()[0]: line for line in table[1:]}
    assert set(rows) == {"ci-bot", "paused"}
    public_id = run.stored("ci-bot").public_id
    assert f"ngw-{public_id}-…" in rows["ci-bot"]
    assert "$5/day $50/month 60 rpm" in rows["ci-bot"] and "$0.750000" in rows["ci-bot"]
    assert " disabled " in rows["paused"] and "defaults" in rows["paused"]

    everything = {line.split()[0]: line.split()[3] for line in run.ok("list", "--all").splitlines()}
    assert everything["gone"] == "revoked" and everything["old"] == "expired"

    listed = json.loads(run.ok("list", "--all", "--format", "json"))
    by_name = {k["name"]: k for k in listed}
    assert [k["status"] for k in listed] == ["active", "revoked", "expired", "disabled"]
    assert by_name["ci-bot"]["spent_usd_month"] == "0.75"
    assert by_name["ci-bot"]["budget_usd_daily"] == 5.0
    assert by_name["gone"]["revoked_at"] is not None
    for key in listed:
        assert not {"secret_sha256", "previous_sha256", "secret"} & set(key)
        assert key["key"] == f"ngw-{key['public_id']}-…"
    assert [k["name"] for k in json.loads(run.ok("list", "--format", "json"))] == [
        "ci-bot",
        "paused",
    ]


def test_list_of_an_empty_store(run: _Runner) -> None:
    with run.store():  # as the gateway leaves it when it starts
        pass
    assert "no keys" in run.ok("list")
    assert json.loads(run.ok("list", "--format", "json")) == []


def test_show(run: _Runner) -> None:
    run.create("ci-bot", "--rpm", "60", "--deny", "openai/*", "--note", "CI")
    run.create("other", "--budget-usd-daily", "2.5", "--tpm", "unlimited")
    spend(run, "ci-bot", "1.5")
    lines = dict(line.split(None, 1) for line in run.ok("show", "ci-bot").splitlines())
    assert lines["name"] == "ci-bot" and lines["status"] == "active"
    assert lines["requests_per_minute"] == "60" and lines["budget_usd_daily"] == "-"
    other = dict(line.split(None, 1) for line in run.ok("show", "other").splitlines())
    assert other["budget_usd_daily"] == "2.5" and other["tokens_per_minute"] == "unlimited"
    assert "$2.5/day unlimited tpm" in run.ok("list")
    assert lines["allow"] == "(every model)" and lines["deny"] == "openai/*"
    assert lines["note"] == "CI" and lines["spent_usd_month"] == "1.500000"
    shown = json.loads(run.ok("show", "ci-bot", "--format", "json"))
    assert shown["requests_per_minute"] == 60 and shown["spent_usd_month"] == "1.5"
    assert "secret_sha256" not in shown
    assert run.refused("show", "nobody") == (
        "nanogpt-gateway keys: no key named 'nobody' (that is not revoked)"
    )


def test_update_changes_only_what_it_is_given(run: _Runner) -> None:
    run.create(
        "ci-bot", "--rpm", "60", "--tpm", "1000", "--allow", "a/*", "--deny", "b/*",
        "--expires", "1d", "--end-user-header", "x-user", "--may-change-account",
    )  # fmt: skip
    before = run.stored("ci-bot")
    out = run.ok("update", "ci-bot", "--rpm", "default", "--budget-usd-daily", "2.5")
    assert "Updated key 'ci-bot'" in out
    key = run.stored("ci-bot")
    assert dict(key.limits) == {"tokens_per_minute": 1000, "budget_usd_daily": 2.5}
    assert (key.allow, key.deny, key.expires_at) == (("a/*",), ("b/*",), before.expires_at)
    assert key.secret_sha256 == before.secret_sha256 and key.public_id == before.public_id

    run.ok("update", "ci-bot", "--allow", "c/*", "--allow", "d/*", "--deny", "e/*")
    key = run.stored("ci-bot")
    assert key.allow == ("c/*", "d/*") and key.deny == ("e/*",)  # replaced, not added to

    run.ok("update", "ci-bot", "--clear-allow", "--clear-deny", "--expires", "never")
    run.ok("update", "ci-bot", "--no-may-change-account", "--no-end-user-header", "--tpm", "0")
    key = run.stored("ci-bot")
    assert (key.allow, key.deny, key.expires_at) == (None, (), None)
    assert not key.may_change_account and key.end_user_header is None
    assert dict(key.limits) == {"tokens_per_minute": 0, "budget_usd_daily": 2.5}


def test_disable_and_enable(run: _Runner) -> None:
    key = run.create("ci-bot")
    assert "disabled" in run.ok("disable", "ci-bot")
    with pytest.raises(InvalidApiKey, match="disabled"):
        ring(run).authenticate(bearer(key), time.time())
    assert "enabled" in run.ok("enable", "ci-bot")
    assert ring(run).authenticate(bearer(key), time.time()).member.name == "ci-bot"


def test_revoke_ends_the_key_and_frees_its_name(run: _Runner) -> None:
    key = run.create("ci-bot")
    assert "revoked" in run.ok("revoke", "ci-bot")
    with pytest.raises(InvalidApiKey, match="revoked"):
        ring(run).authenticate(bearer(key), time.time())
    assert "no key named 'ci-bot'" in run.refused("revoke", "ci-bot")
    assert "no key named 'ci-bot'" in run.refused("update", "ci-bot", "--rpm", "1")
    again = run.create("ci-bot")  # the name is free again; the old key stays revoked
    assert ring(run).authenticate(bearer(again), time.time()).member.name == "ci-bot"
    with pytest.raises(InvalidApiKey):
        ring(run).authenticate(bearer(key), time.time())


def test_rotate_with_a_grace_keeps_the_old_secret_until_it_ends(run: _Runner) -> None:
    old = run.create("ci-bot", "--rpm", "60")
    before = run.stored("ci-bot")
    status, out, err = run("rotate", "ci-bot", "--grace", "1h")
    assert status == 0
    new = out.strip()
    assert KEY.fullmatch(new) and new != old and new not in err
    assert "shown this once" in err and "The old secret works until" in err
    key = run.stored("ci-bot")
    assert key.public_id == before.public_id and dict(key.limits) == {"requests_per_minute": 60}
    assert key.secret_sha256 == hash_key(new) and key.previous_valid_until is not None
    rotated_at = key.rotated_at or 0.0
    assert key.previous_valid_until == rotated_at + 3600
    keys = ring(run)
    inside, after = rotated_at + 3599, rotated_at + 3600
    assert keys.authenticate(bearer(old), inside).member.name == "ci-bot"
    assert keys.authenticate(bearer(new), inside).member.name == "ci-bot"
    with pytest.raises(InvalidApiKey, match="rotated"):
        keys.authenticate(bearer(old), after)
    assert keys.authenticate(bearer(new), after).member.name == "ci-bot"
    data = db_bytes(run)
    assert old.encode() not in data and new.encode() not in data


def test_rotate_without_a_grace_ends_the_old_secret_at_once(run: _Runner) -> None:
    old = run.create("ci-bot")
    status, out, err = run("rotate", "ci-bot")
    assert status == 0 and "no longer" in err
    with pytest.raises(InvalidApiKey, match="was rotated"):
        ring(run).authenticate(bearer(old), time.time())
    assert ring(run).authenticate(bearer(out.strip()), time.time()).member.name == "ci-bot"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "nobody"], "no key named 'nobody'"),
        (["disable", "nobody"], "no key named 'nobody'"),
        (["rotate", "nobody"], "no key named 'nobody'"),
        (["create", "alice"], "'alice' is a member in the config file"),
        (["create", "x", "--expires", "30x"], "expires_at: '30x' is neither a duration: Ns,"),
        (["create", "x", "--expires", "2020-01-01T00:00:00Z"], "is not in the future"),
        (["create", "x", "--budget-usd-daily", "-5"], "budget_usd_daily: must be a finite"),
        (["create", "x", "--budget-usd-monthly", "nan"], "budget_usd_monthly: must be a finite"),
        (["create", "x", "--rpm", "1.5"], "requests_per_minute: expected a whole number"),
        (["create", "x", "--tpm", "lots"], "--tpm: expected a whole number"),
        (["create", "x", "--budget-usd-daily", "five"], "--budget-usd-daily: expected a number"),
        (["create", "x", "--allow", "a b"], ": allow[0]: bad pattern 'a b'"),
        (["create", "x", "--deny", "a[b"], "unclosed [...] group"),
        (["create", "x", "--end-user-header", "x y"], ": end_user_header: not an HTTP header"),
        (["create", "bad name"], "keys: name: use 1-64 letters"),
        (["create", "anonymous"], "'anonymous' is reserved"),
        (["create", "x", "--note", "n" * 501], "at most 500 characters"),
        (["update", "ci-bot"], "nothing to change"),
        (["update", "ci-bot", "--allow", "a", "--clear-allow"], "contradict"),
        (["rotate", "ci-bot", "--grace", "soon"], "--grace: 'soon' is not a duration"),
        (["rotate", "ci-bot", "--grace", "31d"], "grace_seconds: must be between 0"),
    ],
)
def test_a_bad_argument_exits_2_with_one_line_and_changes_nothing(
    run: _Runner, args: list[str], message: str
) -> None:
    run.create("ci-bot")
    with run.store() as store:
        before = (store.stored_keys(), store.audit())
    assert message in run.refused(*args)
    with run.store() as store:
        assert (store.stored_keys(), store.audit()) == before


def test_a_name_taken_by_a_stored_key(run: _Runner) -> None:
    run.create("ci-bot")
    assert "a key named 'ci-bot' exists already" in run.refused("create", "ci-bot")


@pytest.mark.parametrize("kind", ["directory", "not sqlite", "no directory"])
def test_an_unreadable_database_exits_2_with_one_line(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "keys.db"
    if kind == "directory":
        db.mkdir()
    elif kind == "not sqlite":
        db.write_text("these are not the bytes of an SQLite database, " * 4)
    else:
        db = tmp_path / "missing" / "keys.db"
    config = tmp_path / "gateway.toml"
    config.write_text(f"[metering]\nledger_path = {str(db)!r}\n")
    for args in (["list"], ["create", "x"], ["audit"]):
        assert main(["keys", *args, "--config", str(config)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1
        assert err.startswith(f"nanogpt-gateway keys: {db}: ")


@pytest.mark.parametrize("kind", ["no schema", "unreachable"])
def test_a_postgresql_database_not_ready_exits_2_with_one_line(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    if kind == "no schema":
        url = request.getfixturevalue("postgres_url")
        said = "the database has no schema: run `nanogpt-gateway migrate`"
    else:
        url = "postgresql://ops:hunter2@127.0.0.1:1/gateway"
        said = "cannot connect"
    config = tmp_path / "gateway.toml"
    config.write_text(f"[database]\nurl = {url!r}\n")
    for args in (["list"], ["create", "x"], ["audit"]):
        assert main(["keys", *args, "--config", str(config)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and said in err
        assert err.startswith(f"nanogpt-gateway keys: {url.replace(':hunter2', ':***')}: ")


def test_a_config_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[limits]\nrequests_per_minute = 'many'\n")
    assert main(["keys", "list", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "limits.requests_per_minute" in err


@pytest.mark.parametrize(
    "args",
    [
        ["keys"],
        ["keys", "create"],
        ["keys", "frobnicate"],
        ["keys", "create", "x", "--rpm"],
        ["keys", "list", "--format", "xml"],
        ["keys", "rotate", "x", "--grace"],
        ["keys", "create", "x", "--clear-allow"],  # update only
    ],
)
def test_a_malformed_command_line_prints_usage_and_exits_2(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("usage: nanogpt-gateway")
    assert err.splitlines()[-1].startswith("nanogpt-gateway")
    assert "error: " in err.splitlines()[-1]


def test_the_config_may_come_from_gateway_config(
    run: _Runner, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_CONFIG", str(config))
    assert main(["keys", "create", "ci-bot"]) == 0
    assert run.stored("ci-bot").name == "ci-bot"
    assert not (config.parent / "gateway-usage.db").exists()  # not the default location


def test_audit_lists_every_change_with_its_actor_and_no_secret(run: _Runner) -> None:
    first = run.create("ci-bot", "--rpm", "60", "--note", "CI")
    run.ok("update", "ci-bot", "--rpm", "default", "--allow", "openai/*")
    run.ok("disable", "ci-bot")
    run.ok("enable", "ci-bot")
    second = run.ok("rotate", "ci-bot", "--grace", "10m").strip()
    key = run.stored("ci-bot")
    run.ok("revoke", "ci-bot")

    entries = json.loads(run.ok("audit", "--format", "json"))
    assert [e["action"] for e in entries] == [
        "create", "update", "disable", "enable", "rotate", "revoke",
    ]  # fmt: skip
    assert {e["actor"] for e in entries} == {"cli:tester"}
    assert {e["target"] for e in entries} == {"ci-bot"}
    assert {e["key"] for e in entries} == {f"ngw-{key.public_id}-…"}
    assert entries[0]["fields"] == {
        "name": "ci-bot",
        "role": "member",
        "note": "CI",
        "requests_per_minute": 60,
    }
    assert entries[1]["fields"] == {"requests_per_minute": None, "allow": ["openai/*"]}
    assert entries[4]["fields"]["secret"] == "replaced"
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", e["time"]) for e in entries)

    table = run.ok("audit")
    assert len(table.splitlines()) == 1 + len(entries) and "cli:tester" in table
    for text in (json.dumps(entries), table):
        for secret in (first, second, hash_key(first), hash_key(second)):
            assert secret.rsplit("-", 1)[-1] not in text


def test_audit_of_an_empty_store(run: _Runner) -> None:
    with run.store():
        pass
    assert run.ok("audit").strip() == "no changes to keys yet"


@pytest.mark.parametrize(
    "args", [["list"], ["show", "x"], ["audit"], ["revoke", "x"], ["update", "x", "--rpm", "1"]]
)
def test_only_create_makes_a_missing_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    """A look from the wrong directory (a relative ledger_path) leaves no empty database."""
    db = tmp_path / "gateway.db"
    run = _Runner(config(tmp_path, str(db)), str(db), capsys)
    message = run.refused(*args)
    assert message.startswith(f"nanogpt-gateway keys: {db}: no database here")
    assert not db.exists()
    run.create("ci-bot")
    assert db.is_file()


def test_the_actor_without_a_user_name(run: _Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    def nobody() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr(getpass, "getuser", nobody)
    run.create("ci-bot")
    entry = json.loads(run.ok("audit", "--format", "json"))[0]
    assert re.fullmatch(r"cli:uid-\d+", entry["actor"])
