"""PostgreSQL as a team runs it, through real processes: `migrate` twice at once applies the
schema once and both succeed; `serve` refuses a database without the schema in one line; a
SQLite history moves across whole (`migrate --from --to`), and a second copy is refused; a
real gateway on PostgreSQL records every request (none lost at SIGTERM) and sees a key the
`keys` command creates within 2 seconds."""

from __future__ import annotations

import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg

from gateway.ledger import open_ledger
from gateway.ledger.postgresql.schema import MIGRATION_LOCK, SCHEMA_VERSION
from gateway.types import Finished, Usage
from tests.conftest import ALICE_KEY, MEMBERS_TOML, TEAM_KEY, auth, query_sql, running

ENV = {"NANOGPT_API_KEY": TEAM_KEY, "BOB_KEY": "sk-bob"}
CHAT = {"model": "openai/gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}
SCRIPT = str(Path(sys.executable).parent / "nanogpt-gateway")


def gateway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed command, as an operator runs it."""
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


def config_for(tmp_path: Path, url: str, name: str = "gateway.toml") -> Path:
    config = tmp_path / name
    config.write_text(f"[database]\nurl = {url!r}\n" + MEMBERS_TOML)
    return config


def test_two_migrates_at_once_both_succeed_and_apply_the_schema_once(
    tmp_path: Path, postgres_url: str
) -> None:
    config = config_for(tmp_path, postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))  # both must queue
        processes = [
            subprocess.Popen(
                [SCRIPT, "migrate", "--config", str(config)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        deadline = time.monotonic() + 30
        while True:  # a poll of the lock's queue, bounded
            waiting = holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            if waiting is not None and waiting[0] == 2:
                break
            assert all(p.poll() is None for p in processes), "a migrate did not wait"
            assert time.monotonic() < deadline, "the migrates never reached the lock"
            time.sleep(0.02)
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    outputs = [p.communicate(timeout=60) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    said = sorted(out for out, _ in outputs)
    assert said == [
        f"{postgres_url}: PostgreSQL schema migrated from version 0 to {SCHEMA_VERSION}\n",
        f"{postgres_url}: the PostgreSQL schema is at version {SCHEMA_VERSION} already; "
        "nothing to do\n",
    ]
    assert query_sql(postgres_url, "SELECT version FROM schema_version") == [
        {"version": SCHEMA_VERSION}
    ]


def test_serve_refuses_a_database_without_the_schema_in_one_line(
    tmp_path: Path, postgres_url: str
) -> None:
    url = postgres_url.replace("postgres@", "postgres:s3cret@")  # trust auth ignores it
    config = config_for(tmp_path, url)
    done = gateway("serve", "--config", str(config), env={**ENV, "PATH": ""})
    shown = url.replace(":s3cret@", ":***@")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"nanogpt-gateway: configuration error: database.url: {shown}: the database has no "
        f"schema: run `nanogpt-gateway migrate` (this gateway needs version {SCHEMA_VERSION})\n"
    )
    assert gateway("migrate", "--config", str(config)).returncode == 0
    assert query_sql(postgres_url, "SELECT count(*) AS n FROM usage") == [{"n": 0}]


def test_a_sqlite_history_moves_to_postgresql_whole(tmp_path: Path, postgres_url: str) -> None:
    sqlite_config = tmp_path / "sqlite.toml"
    sqlite_config.write_text(f"[database]\nurl = 'sqlite:///{tmp_path}/team.db'\n" + MEMBERS_TOML)
    pg_config = config_for(tmp_path, postgres_url)
    for args in (["create", "dave", "--rpm", "60"], ["create", "erin"], ["revoke", "erin"]):
        assert gateway("keys", *args, "--config", str(sqlite_config)).returncode == 0
    ledger = open_ledger(tmp_path / "team.db")
    now = time.time()
    for i, (member, cost) in enumerate([("alice", "0.25"), ("dave", "1E-10"), ("dave", "2")]):
        ledger.append(
            Finished(
                time=now - i,
                request_id=f"req-{i}",
                member=member,
                endpoint="chat/completions",
                status=200,
                outcome="ok",
                model="openai/gpt-5.2",
                usage=Usage(prompt_tokens=10 * i, completion_tokens=i),
                cost_usd=Decimal(cost),
                duration_seconds=0.5,
            )
        )
    ledger.close()

    moved = gateway("migrate", "--from", f"sqlite:///{tmp_path}/team.db", "--to", postgres_url)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.splitlines()[-1] == (
        f"{postgres_url}: copied 3 usage rows, 2 keys, 3 audit entries from {tmp_path}/team.db"
    )
    for command in (
        ["usage", "--by", "member", "--format", "json"],
        ["usage", "--by", "day"],
        ["keys", "list", "--all"],
        ["keys", "audit", "--format", "json"],
        ["keys", "show", "dave"],
        ["limits"],
    ):
        on_sqlite = gateway(*command, "--config", str(sqlite_config), env=ENV)
        on_postgresql = gateway(*command, "--config", str(pg_config), env=ENV)
        assert on_sqlite.returncode == on_postgresql.returncode == 0, on_postgresql.stderr
        assert on_postgresql.stdout == on_sqlite.stdout, command
    by_file = gateway("usage", "--by", "model", "--ledger", str(tmp_path / "team.db"))
    by_url = gateway("usage", "--by", "model", "--ledger", postgres_url)
    assert by_url.returncode == 0 and by_url.stdout == by_file.stdout
    assert "openai/gpt-5.2" in by_url.stdout
    sqlite_version = query_sql(str(tmp_path / "team.db"), "SELECT version FROM key_changes")
    assert query_sql(postgres_url, "SELECT version FROM key_changes") == sqlite_version
    # the store goes on where SQLite's left off: a new key is seen by a poller of the counter
    assert gateway("keys", "create", "fay", "--config", str(pg_config)).returncode == 0
    assert query_sql(postgres_url, "SELECT max(changed) AS c FROM keys") == [
        {"c": sqlite_version[0]["version"] + 1}
    ]

    # --to by default: the config's database (its password stays out of the command line)
    again = gateway("migrate", "--from", str(tmp_path / "team.db"), "--config", str(pg_config))
    assert again.returncode == 2 and again.stdout.count("\n") == 1  # the schema: done already
    assert again.stderr == (
        f"nanogpt-gateway migrate: {postgres_url}: the target holds usage, keys, key_audit rows "
        "already; migrate --from copies into an empty database only\n"
    )
    assert query_sql(postgres_url, "SELECT count(*) AS n FROM usage") == [{"n": 3}]


def test_a_gateway_on_postgresql_records_every_request_and_sees_new_keys(
    tmp_path: Path, postgres_url: str
) -> None:
    config = config_for(tmp_path, postgres_url)
    assert gateway("migrate", "--config", str(config)).returncode == 0
    args = ["serve", "--demo", "--config", str(config)]
    with running(args, "/readyz", **ENV) as (base, _, _):
        for _ in range(5):
            answer = httpx.post(f"{base}/v1/chat/completions", json=CHAT, headers=auth(ALICE_KEY))
            assert answer.status_code == 200, answer.text
        created = gateway("keys", "create", "dave", "--config", str(config))
        key = created.stdout.strip()
        started = time.monotonic()
        while httpx.get(f"{base}/v1/key", headers=auth(key)).status_code != 200:
            assert time.monotonic() - started < 2.0, "the new key was not seen within 2 s"
            time.sleep(0.02)
        assert httpx.post(f"{base}/v1/chat/completions", json=CHAT, headers=auth(key)).is_success
    rows = query_sql(
        postgres_url,
        "SELECT member, key_id, cost_usd FROM usage WHERE endpoint = 'chat/completions' ORDER BY id",
    )
    members = [r["member"] for r in rows]
    assert members == ["alice"] * 5 + ["dave"]  # written at SIGTERM at the latest, none lost
    assert all(isinstance(r["cost_usd"], Decimal) and r["cost_usd"] > 0 for r in rows[:5])
    assert rows[5]["key_id"] == key.split("-")[1]
