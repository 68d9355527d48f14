"""The usage ledger on real SQLite files and a real PostgreSQL database: every appended row
lands exactly once with its exact cost, close() loses nothing, a failing database keeps rows
queued up to a bound, the schema migrates forward and refuses to go back, and reports sum
exactly."""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import threading
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.ledger import LedgerError, ReportRow, prepare, spend, totals
from gateway.ledger.batching import BatchedLedger
from gateway.ledger.postgresql import MIGRATIONS as PG_MIGRATIONS
from gateway.ledger.postgresql import SCHEMA_VERSION, PostgreSQLLedger
from gateway.ledger.postgresql import migrate as pg_migrate
from gateway.ledger.sqlite import MIGRATIONS, migrate
from gateway.ledger.sqlite import SQLiteLedger as Ledger
from gateway.types import Finished, Usage
from tests.conftest import execute_sql, query_sql

DAY1 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
DAY2 = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
DAY3 = datetime(2026, 11, 3, tzinfo=UTC).timestamp()
DAY = 86_400
USAGE = Usage(prompt_tokens=100, completion_tokens=20, cached_prompt_tokens=40, reasoning_tokens=5)


def record(n: int = 0, **fields: Any) -> Finished:
    base = Finished(
        time=DAY1 + n,
        request_id=f"req-{n}",
        member="alice",
        endpoint="chat/completions",
        status=200,
        outcome="ok",
        model="openai/gpt-4o-mini",
        usage=USAGE,
        cost_usd=Decimal("0.001"),
        duration_seconds=1.5,
    )
    return replace(base, **fields)


def is_postgresql(database: str | Path) -> bool:
    return str(database).startswith("postgresql://")


def open_ledger(database: str | Path, **options: Any) -> BatchedLedger:
    if is_postgresql(database):
        return PostgreSQLLedger(str(database), **options)
    return Ledger(database, **options)


def write(database: str | Path, records: Iterable[Finished]) -> None:
    ledger = open_ledger(database)
    for r in records:
        ledger.append(r)
    ledger.close()


def rows(database: str | Path) -> list[dict[str, Any]]:
    return query_sql(str(database), "SELECT * FROM usage ORDER BY id")


REFUSE = {
    "sqlite": "CREATE TRIGGER refuse BEFORE INSERT ON usage "
    "BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    "postgresql": "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$; "
    "CREATE TRIGGER refuse BEFORE INSERT ON usage FOR EACH ROW EXECUTE FUNCTION refuse()",
}
ALLOW = {"sqlite": "DROP TRIGGER refuse", "postgresql": "DROP TRIGGER refuse ON usage"}


def refuse_writes(database: str) -> None:
    """A full disk (SQLite), an exhausted quota (PostgreSQL): every insert fails."""
    execute_sql(database, REFUSE["postgresql" if is_postgresql(database) else "sqlite"])


def allow_writes(database: str) -> None:
    execute_sql(database, ALLOW["postgresql" if is_postgresql(database) else "sqlite"])


def pragma(path: Path, name: str) -> Any:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def columns(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [name for _, name, *_ in conn.execute("PRAGMA table_info(usage)")]
    finally:
        conn.close()


def execute(path: Path, script: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript(script)
    finally:
        conn.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "usage.sqlite3"


def test_a_record_round_trips_with_its_exact_cost(database: str) -> None:
    cost = Decimal("0.000123456789012345678901234567")
    metered = record(
        1,
        cost_usd=cost,
        cost_source="catalog",
        path="chat/completions",
        end_user="user-7",
        stream=True,
        ttft_seconds=0.25,
        key_id="c0ffee0c0ffe",
    )
    unmetered = record(
        2,
        outcome="client_disconnected",
        status=200,
        usage=None,
        cost_usd=None,
        model=None,
        unmetered="client_disconnected",
    )
    write(database, [metered, unmetered])

    first, second = rows(database)
    assert Decimal(first["cost_usd"]) == cost  # SQLite: decimal text; PostgreSQL: NUMERIC
    first["cost_usd"] = str(first["cost_usd"])
    assert first == {
        "id": 1,
        "time": DAY1 + 1,
        "request_id": "req-1",
        "member": "alice",
        "end_user": "user-7",
        "model": "openai/gpt-4o-mini",
        "endpoint": "chat/completions",
        "path": "chat/completions",
        "status": 200,
        "outcome": "ok",
        "stream": 1,
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "cached_prompt_tokens": 40,
        "reasoning_tokens": 5,
        "cost_usd": str(cost),
        "cost_source": "catalog",
        "unmetered": None,
        "duration_seconds": 1.5,
        "ttft_seconds": 0.25,
        "limit_name": None,
        "key_id": "c0ffee0c0ffe",
    }
    assert second["outcome"] == "client_disconnected" and second["stream"] == 0
    assert second["model"] is None and second["cost_usd"] is None
    assert second["unmetered"] == "client_disconnected"
    assert second["ttft_seconds"] is None
    tokens = ("prompt_tokens", "completion_tokens", "cached_prompt_tokens", "reasoning_tokens")
    assert [second[t] for t in tokens] == [None] * 4


def test_a_new_ledger_is_wal_and_at_the_latest_schema(path: Path) -> None:
    Ledger(path).close()
    assert pragma(path, "journal_mode") == "wal"
    assert pragma(path, "user_version") == len(MIGRATIONS)


def test_appends_from_many_threads_all_land(database: str) -> None:
    ledger = open_ledger(database, batch_size=64)
    start = threading.Barrier(8)

    def member(t: int) -> None:
        start.wait()
        for i in range(250):
            ledger.append(record(t * 1000 + i, member=f"m{t}"))

    threads = [threading.Thread(target=member, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ledger.flush()
    stored = rows(database)
    assert len(stored) == 2000
    assert len({r["request_id"] for r in stored}) == 2000
    ledger.close()


@pytest.mark.parametrize("batch_size", [1, 7, 500])
def test_more_rows_than_a_batch_are_all_written_by_flush(database: str, batch_size: int) -> None:
    ledger = open_ledger(database, batch_size=batch_size)
    for i in range(1200):
        ledger.append(record(i))
    ledger.flush()
    assert len(rows(database)) == 1200
    ledger.close()


@pytest.mark.skipif(sys.platform != "linux", reason="thread priorities are set on Linux only")
def test_the_writer_yields_the_cpu_to_the_request_path(database: str) -> None:
    requests_thread = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, requests_thread)
    ledger = open_ledger(database)
    ledger.append(record(1))
    ledger.flush()  # the writer is running
    writer = ledger._writer.native_id
    assert writer is not None
    assert os.getpriority(os.PRIO_PROCESS, writer) == 19
    assert os.getpriority(os.PRIO_PROCESS, requests_thread) == before
    ledger.close()
    assert len(rows(database)) == 1


def test_close_writes_everything_still_queued(database: str) -> None:
    ledger = open_ledger(database)
    for i in range(1000):
        ledger.append(record(i))
    ledger.close()
    assert len(rows(database)) == 1000
    [row] = totals(database, by="member")
    assert row.requests == 1000


def test_close_is_idempotent_and_a_closed_ledger_refuses_rows(database: str) -> None:
    ledger = open_ledger(database)
    ledger.append(record(1))
    ledger.close()
    ledger.close()
    ledger.flush()  # nothing pending: returns at once
    with pytest.raises(LedgerError, match=r"closed; request req-2 not recorded"):
        ledger.append(record(2))
    assert len(rows(database)) == 1


def test_reopening_appends_to_the_same_history(database: str) -> None:
    write(database, [record(1)])
    write(database, [record(2)])
    assert [r["request_id"] for r in rows(database)] == ["req-1", "req-2"]


def test_batch_size_must_be_positive(path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Ledger(path, batch_size=0)


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    where = tmp_path / "nowhere" / "usage.sqlite3"
    with pytest.raises(LedgerError, match=r"nowhere/usage.sqlite3: directory .* does not exist"):
        Ledger(where)
    assert not where.parent.exists()


def test_a_file_that_is_not_a_database_is_refused(path: Path) -> None:
    path.write_text("these are my notes, not a ledger\n" * 100)
    with pytest.raises(LedgerError, match=r"usage.sqlite3: not a usable usage ledger"):
        Ledger(path)
    with pytest.raises(LedgerError, match=r"usage.sqlite3: cannot read"):
        totals(path, by="member")


def test_a_failed_write_is_retried(path: Path) -> None:
    """The first attempt hits a failure that then clears (as a full disk might); the batch is
    written by the retry, and the failure is logged."""
    ledger = Ledger(path, retry_delays=(0.0,))
    execute(
        path,
        """
        CREATE TABLE gate (closed INTEGER);
        INSERT INTO gate VALUES (1);
        CREATE TRIGGER refuse BEFORE INSERT ON usage WHEN EXISTS (SELECT 1 FROM gate)
        BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END;
        """,
    )
    failures: list[str] = []

    class OpenGateOnFailure(logging.Handler):
        def emit(self, log: logging.LogRecord) -> None:  # runs in the writer, before its retry
            failures.append(log.getMessage())
            execute(path, "DELETE FROM gate")

    handler = OpenGateOnFailure(level=logging.ERROR)
    logging.getLogger("gateway.ledger").addHandler(handler)
    try:
        for i in range(3):
            ledger.append(record(i))
        ledger.flush()
    finally:
        logging.getLogger("gateway.ledger").removeHandler(handler)
        ledger.close()
    assert len(rows(path)) == 3
    assert len(failures) == 1 and "writing 3 usage rows failed (attempt 1)" in failures[0]


class Failures(logging.Handler):
    """Counts the writer's failed attempts as it logs them; `seen(n)` waits for the n-th."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.count = 0
        self.changed = threading.Condition()

    def emit(self, log: logging.LogRecord) -> None:
        if "failed (attempt" in log.getMessage():
            with self.changed:
                self.count += 1
                self.changed.notify_all()

    def seen(self, n: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.count >= n, timeout=5), "hang guard"


@pytest.fixture
def failures() -> Iterable[Failures]:
    handler = Failures()
    logging.getLogger("gateway.ledger").addHandler(handler)
    yield handler
    logging.getLogger("gateway.ledger").removeHandler(handler)


def test_rows_that_cannot_be_written_wait_and_are_retried_until_they_are(
    database: str, failures: Failures, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = open_ledger(database, retry_delays=(0.001,))
    refuse_writes(database)
    with caplog.at_level(logging.WARNING, logger="gateway.ledger"):
        for i in range(4):
            ledger.append(record(i))
        with pytest.raises(LedgerError, match="still being written"):
            ledger.flush(timeout=0.001)  # not written, and flush does not pretend otherwise
        failures.seen(3)  # retried, again and again
    assert not ledger.writable
    assert (ledger.queued_rows, ledger.rows_lost) == (4, 0)
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and tracebacks[0].levelno == logging.ERROR  # the first only

    allow_writes(database)  # space comes back
    ledger.flush()
    assert ledger.writable and (ledger.queued_rows, ledger.rows_lost) == (0, 0)
    ledger.append(record(9))
    ledger.close()
    assert [r["request_id"] for r in rows(database)] == [
        "req-0",
        "req-1",
        "req-2",
        "req-3",
        "req-9",
    ]


def test_rows_beyond_the_queue_bound_are_lost_and_counted(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = open_ledger(database, retry_delays=(0.001,), max_queued_rows=3)
    refuse_writes(database)  # nothing drains the queue meanwhile
    with caplog.at_level(logging.ERROR, logger="gateway.ledger"):
        for i in range(6):
            ledger.append(record(i))
    assert (ledger.queued_rows, ledger.rows_lost) == (3, 3)
    (full,) = [r for r in caplog.records if "new rows are lost" in r.getMessage()]  # once
    assert "request req-3 is the first" in full.getMessage()
    allow_writes(database)
    ledger.flush()
    ledger.close()
    assert [r["request_id"] for r in rows(database)] == ["req-0", "req-1", "req-2"]
    assert (ledger.queued_rows, ledger.rows_lost) == (0, 3)


def test_close_makes_a_last_try_and_counts_what_it_could_not_write(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = open_ledger(database, retry_delays=(3600,))  # no retry of its own before the close
    refuse_writes(database)
    with caplog.at_level(logging.ERROR, logger="gateway.ledger"):
        for i in range(4):
            ledger.append(record(i))
        ledger.close()  # returns: an unwritable ledger must not hang the shutdown
    [lost] = [r for r in caplog.records if "lost" in r.getMessage()]
    assert lost.levelno == logging.ERROR
    assert "4 rows lost (request ids req-0 .. req-3)" in lost.getMessage()
    assert (ledger.queued_rows, ledger.rows_lost) == (0, 4)
    assert rows(database) == []


# -- schema versions ----------------------------------------------------------------------------

ADD_REGION = "ALTER TABLE usage ADD COLUMN region TEXT"


def test_migrating_a_v1_ledger_keeps_its_rows(path: Path) -> None:
    write(path, [record(1), record(2, usage=None, cost_usd=None)])
    conn = sqlite3.connect(path)
    try:
        assert migrate(conn, (*MIGRATIONS, ADD_REGION)) == len(MIGRATIONS) + 1
        assert migrate(conn, (*MIGRATIONS, ADD_REGION)) == len(MIGRATIONS) + 1  # idempotent
    finally:
        conn.close()
    stored = rows(path)
    assert [r["request_id"] for r in stored] == ["req-1", "req-2"]
    assert columns(path)[-1] == "region"
    assert [r["region"] for r in stored] == [None, None]
    assert stored[0]["cost_usd"] == "0.001"
    assert pragma(path, "user_version") == len(MIGRATIONS) + 1


def test_a_version_1_ledger_gains_path_and_cost_source(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(conn, MIGRATIONS[:1])
        conn.execute(
            "INSERT INTO usage (time, request_id, member, endpoint, status, outcome, stream, "
            "cost_usd, duration_seconds) VALUES (1, 'old', 'alice', 'chat/completions', 200, "
            "'ok', 0, '0.5', 1)"
        )
    finally:
        conn.close()
    write(path, [record(1, path="chat/completions", cost_source="charged")])
    old, new = rows(path)
    assert (old["request_id"], old["cost_usd"], old["path"], old["cost_source"]) == (
        "old",
        "0.5",
        None,
        None,
    )
    assert (new["path"], new["cost_source"]) == ("chat/completions", "charged")
    assert pragma(path, "user_version") == len(MIGRATIONS) == 4


def test_an_empty_database_is_migrated_from_version_zero(path: Path) -> None:
    sqlite3.connect(path).close()
    assert pragma(path, "user_version") == 0
    write(path, [record(1)])
    assert pragma(path, "user_version") == len(MIGRATIONS)
    assert len(rows(path)) == 1


def test_a_failed_migration_changes_nothing(path: Path) -> None:
    write(path, [record(1)])
    broken = f"{ADD_REGION}; CREATE TABLE usage (a)"
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(
            LedgerError, match=rf"usage.sqlite3: migration to schema version {len(MIGRATIONS) + 1}"
        ):
            migrate(conn, (*MIGRATIONS, broken))
    finally:
        conn.close()
    assert pragma(path, "user_version") == len(MIGRATIONS)
    assert "region" not in columns(path)
    assert len(rows(path)) == 1


def test_a_ledger_from_a_newer_gateway_is_refused_untouched(path: Path) -> None:
    write(path, [record(1)])
    newer = len(MIGRATIONS) + 1
    execute(path, f"PRAGMA user_version = {newer}")
    message = (
        rf"usage.sqlite3: the ledger has schema version {newer}, .* only up to {len(MIGRATIONS)}"
    )
    with pytest.raises(LedgerError, match=message):
        Ledger(path)
    with pytest.raises(LedgerError, match=rf"schema version {newer}"):
        totals(path, by="member")
    assert pragma(path, "user_version") == newer
    assert len(rows(path)) == 1


# -- reports --------------------------------------------------------------------------------------


def test_totals_of_a_missing_ledger_is_a_clear_error(path: Path) -> None:
    with pytest.raises(LedgerError, match=r"usage.sqlite3: no usage ledger here"):
        totals(path, by="member")
    assert not path.exists()


def test_totals_refuses_an_unknown_grouping(database: str) -> None:
    write(database, [])
    with pytest.raises(
        ValueError, match=r"cannot group by 'colour'.*member, model, endpoint, day, end_user"
    ):
        totals(database, by="colour")


@pytest.fixture
def history(database: str) -> str:
    write(
        database,
        [
            record(1, member="alice", cost_usd=Decimal("0.25"), end_user="u1"),
            record(2, member="alice", cost_usd=Decimal("0.5"), model="m/big", endpoint="images"),
            record(3, member="alice", outcome="refused", status=403, usage=None, cost_usd=None),
            record(4, member="bob", cost_usd=Decimal("1.25"), end_user="u1"),
            record(
                5,
                member="bob",
                outcome="upstream_failed",
                status=502,
                usage=None,
                cost_usd=None,
                unmetered="upstream_failed",
            ),
            record(
                6,
                member="carol",
                outcome="refused",
                status=400,
                usage=None,
                cost_usd=None,
                model=None,
            ),
            record(DAY, member="carol", cost_usd=Decimal("0.125")),
            record(2 * DAY + 60, member="alice", cost_usd=Decimal("2")),
        ],
    )
    return database


def test_totals_by_member_count_refused_and_unmetered(history: str) -> None:
    assert totals(history, by="member") == [
        ReportRow(
            key="alice",
            requests=4,
            refused=1,
            prompt_tokens=300,
            completion_tokens=60,
            cached_prompt_tokens=120,
            reasoning_tokens=15,
            cost_usd=Decimal("2.75"),
        ),
        ReportRow(
            key="bob",
            requests=2,
            unmetered=1,
            prompt_tokens=100,
            completion_tokens=20,
            cached_prompt_tokens=40,
            reasoning_tokens=5,
            cost_usd=Decimal("1.25"),
        ),
        ReportRow(
            key="carol",
            requests=2,
            refused=1,
            prompt_tokens=100,
            completion_tokens=20,
            cached_prompt_tokens=40,
            reasoning_tokens=5,
            cost_usd=Decimal("0.125"),
        ),
    ]


def test_totals_by_model_and_end_user_name_the_unknown(history: str) -> None:
    by_model = {r.key: (r.requests, r.cost_usd) for r in totals(history, by="model")}
    assert by_model == {
        "openai/gpt-4o-mini": (6, Decimal("3.625")),
        "m/big": (1, Decimal("0.5")),
        "(none)": (1, Decimal(0)),
    }
    by_user = totals(history, by="end_user")
    assert [(r.key, r.requests, r.cost_usd) for r in by_user] == [
        ("(none)", 6, Decimal("2.625")),
        ("u1", 2, Decimal("1.5")),
    ]


def test_totals_by_stored_key_tell_two_keys_of_one_name_apart(database: str) -> None:
    write(
        database,
        [
            record(1, member="dave", cost_usd=Decimal("0.5"), key_id="aaaaaaaaaaaa"),
            record(2, member="dave", cost_usd=Decimal("2"), key_id="bbbbbbbbbbbb"),
            record(3, member="dave", cost_usd=Decimal("0.25"), key_id="aaaaaaaaaaaa"),
            record(4, member="alice", cost_usd=Decimal("1")),
        ],
    )
    by_key = [(r.key, r.requests, r.cost_usd) for r in totals(database, by="key")]
    assert by_key == [
        ("ngw-bbbbbbbbbbbb-…", 1, Decimal("2")),
        ("(none)", 1, Decimal("1")),  # a config member's key
        ("ngw-aaaaaaaaaaaa-…", 2, Decimal("0.75")),
    ]


def test_totals_by_endpoint(history: str) -> None:
    by_endpoint = {r.key: (r.requests, r.cost_usd) for r in totals(history, by="endpoint")}
    assert by_endpoint == {
        "chat/completions": (7, Decimal("3.625")),
        "images": (1, Decimal("0.5")),
    }


def test_totals_by_day_in_order_and_within_the_period(history: str) -> None:
    by_day = totals(history, by="day")
    assert [(r.key, r.requests) for r in by_day] == [
        ("2026-11-01", 6),
        ("2026-11-02", 1),
        ("2026-11-03", 1),
    ]
    # since is inclusive, until exclusive: DAY2 itself is in, DAY3 + 60 s is out
    window = totals(history, since=DAY2, until=DAY3 + 60, by="day")
    assert [(r.key, r.cost_usd) for r in window] == [("2026-11-02", Decimal("0.125"))]
    assert [r.key for r in totals(history, since=DAY2, by="member")] == ["alice", "carol"]
    assert [r.key for r in totals(history, until=DAY1 + 3, by="member")] == ["alice"]
    assert totals(history, since=DAY3 + 61, by="member") == []


@pytest.mark.parametrize(
    ("costs", "expected"),
    [
        (["0.1"] * 10, "1.0"),
        (["1E-10", "0.0000000002", "3.5E-10"], "6.5E-10"),
        (["12345678901234567890.1", "1E-19"], "12345678901234567890.1000000000000000001"),
    ],
)
def test_cost_sums_are_exact(database: str, costs: list[str], expected: str) -> None:
    write(database, [record(i, cost_usd=Decimal(c)) for i, c in enumerate(costs)])
    [row] = totals(database, by="member")
    assert row.cost_usd == Decimal(expected)
    assert str(row.cost_usd) == str(Decimal(expected))


def test_a_refusal_names_its_limit_and_spend_sums_per_member_and_end_user(database: str) -> None:
    write(
        database,
        [
            record(1, cost_usd=Decimal("0.1"), end_user="eve"),
            record(2, cost_usd=Decimal("0.2"), cost_source="estimate", end_user="eve"),
            record(3, cost_usd=Decimal("0.4")),
            record(4, cost_usd=None, outcome="refused", status=429, limit="budget_usd_daily"),
        ],
    )
    assert rows(database)[3]["limit_name"] == "budget_usd_daily"
    assert rows(database)[1]["cost_source"] == "estimate"
    assert sorted(spend(database, since=DAY1), key=str) == sorted(
        [("alice", "eve", Decimal("0.3")), ("alice", None, Decimal("0.4"))], key=str
    )
    assert spend(database, since=DAY1 + 3) == [("alice", None, Decimal("0.4"))]


# -- PostgreSQL: the schema is applied by `migrate` alone, and checked everywhere else --------


def test_postgresql_is_never_migrated_by_opening_it(postgres_url: str) -> None:
    no_schema = r"test_\w+: the database has no schema: run `nanogpt-gateway migrate`"
    for attempt in (
        lambda: prepare(postgres_url),
        lambda: PostgreSQLLedger(postgres_url),
        lambda: totals(postgres_url, by="member"),
    ):
        with pytest.raises(LedgerError, match=no_schema):
            attempt()
    assert query_sql(postgres_url, "SELECT to_regclass('usage') AS t") == [{"t": None}]
    assert pg_migrate(postgres_url) == (0, SCHEMA_VERSION)
    assert pg_migrate(postgres_url) == (SCHEMA_VERSION, SCHEMA_VERSION)  # idempotent
    prepare(postgres_url)
    assert totals(postgres_url, by="member") == []


@pytest.mark.parametrize(
    ("version", "said"),
    [
        (SCHEMA_VERSION - 1, r"at version 0, this gateway needs 1: run `nanogpt-gateway migrate`"),
        (SCHEMA_VERSION + 1, r"at version 2, this gateway knows only up to 1: upgrade the gateway"),
    ],
)
def test_postgresql_at_another_schema_version_is_refused(
    postgres_url: str, version: int, said: str
) -> None:
    pg_migrate(postgres_url)
    execute_sql(postgres_url, f"UPDATE schema_version SET version = {version}")
    if version:
        with pytest.raises(LedgerError, match=said):
            pg_migrate(postgres_url)  # never rewrites a newer schema
    for attempt in (lambda: prepare(postgres_url), lambda: PostgreSQLLedger(postgres_url)):
        with pytest.raises(LedgerError, match=said if version else "has no schema"):
            attempt()


def test_an_unreachable_postgresql_is_one_line_without_the_password() -> None:
    url = "postgres://ops:hunter2@127.0.0.1:1/gateway"
    for attempt in (
        lambda: prepare(url),
        lambda: totals(url, by="day"),
        lambda: spend(url, since=0),
    ):
        with pytest.raises(LedgerError) as excinfo:
            attempt()
        message = str(excinfo.value)
        assert message.startswith("postgres://ops:***@127.0.0.1:1/gateway: cannot connect: ")
        assert "hunter2" not in message and "\n" not in message


def test_a_postgresql_ledger_that_loses_its_connection_makes_a_new_one(postgres_url: str) -> None:
    database = postgres_url
    pg_migrate(database)
    ledger = PostgreSQLLedger(database, retry_delays=(0.001,))
    ledger.append(record(1))
    ledger.flush()
    execute_sql(
        database,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'nanogpt-gateway'",
    )
    ledger.append(record(2))
    ledger.flush()  # the first try fails on the dead connection, the retry reconnects
    assert ledger.writable and ledger.rows_lost == 0
    ledger.close()
    assert [r["request_id"] for r in rows(database)] == ["req-1", "req-2"]


def test_migrate_file_reports_the_versions_and_refuses_what_is_not_a_ledger(path: Path) -> None:
    from gateway.ledger import copy, migrate

    assert migrate(path) == (0, len(MIGRATIONS))
    assert migrate(path) == (len(MIGRATIONS), len(MIGRATIONS))
    path.write_text("not a database " * 100)
    with pytest.raises(LedgerError, match=r"usage\.sqlite3: not a usable usage ledger"):
        migrate(path)
    with pytest.raises(ValueError, match="from a SQLite file to a PostgreSQL database"):
        copy("postgresql://h/a", "postgresql://h/b")
    with pytest.raises(ValueError, match="from a SQLite file to a PostgreSQL database"):
        copy(path, str(path))


def test_a_postgresql_migration_keeps_rows_and_a_failed_one_changes_nothing(
    postgres_url: str,
) -> None:
    pg_migrate(postgres_url)
    write(postgres_url, [record(1)])
    with pytest.raises(LedgerError, match=r"migration failed: .*usage.* already exists"):
        pg_migrate(postgres_url, (*PG_MIGRATIONS, f"{ADD_REGION}; CREATE TABLE usage (a INT)"))
    assert "region" not in query_sql(postgres_url, "SELECT * FROM usage")[0]
    assert pg_migrate(postgres_url, (*PG_MIGRATIONS, ADD_REGION)) == (
        SCHEMA_VERSION,
        SCHEMA_VERSION + 1,
    )
    [row] = query_sql(postgres_url, "SELECT request_id, region, cost_usd FROM usage")
    assert row == {"request_id": "req-1", "region": None, "cost_usd": Decimal("0.001")}
