"""The usage ledger: one row per finished request, kept where `[database] url`
(or `metering.ledger_path`) says.

`base` has the writer protocol every backend implements, `batching` the writer thread they
share; `sqlite` is one backend (a file per replica), `postgresql` the other (one database for
every replica). `open_ledger`, `prepare`, `totals` and `spend` pick the backend from the
location: a `postgresql://` or `postgres://` URL, else a SQLite file's path. The PostgreSQL
backend (and psycopg with libpq) is imported only for a PostgreSQL location: one process on
SQLite does not carry it.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from gateway.config import POSTGRESQL_SCHEMES
from gateway.ledger import sqlite
from gateway.ledger.base import Ledger, LedgerError, TargetNotEmpty
from gateway.reports import ReportRow

__all__ = [
    "Ledger",
    "LedgerError",
    "ReportRow",
    "TargetNotEmpty",
    "copy",
    "is_postgresql",
    "open_ledger",
    "prepare",
    "spend",
    "totals",
]


def is_postgresql(location: str | Path) -> bool:
    """Whether `location` names a PostgreSQL database (else it is a SQLite file)."""
    return isinstance(location, str) and location.startswith(POSTGRESQL_SCHEMES)


def open_ledger(location: str | Path) -> Ledger:
    """A writer for the ledger at `location`, or `LedgerError`: a SQLite file is created or
    migrated, a PostgreSQL database must be at this code's schema version already."""
    if is_postgresql(location):
        from gateway.ledger import postgresql

        return postgresql.PostgreSQLLedger(str(location))
    return sqlite.SQLiteLedger(location)


def prepare(location: str | Path) -> None:
    """Make the ledger ready to serve and let it go again, or raise `LedgerError`: checked
    before serving, so a bad location stops start-up with one line. A SQLite file is created
    or migrated; a PostgreSQL database is only checked (`nanogpt-gateway migrate` migrates it)."""
    if is_postgresql(location):
        from gateway.ledger import postgresql

        postgresql.prepare(str(location))
    else:
        sqlite.prepare(location)


def migrate(location: str | Path) -> tuple[int, int]:
    """Bring the database at `location` to this code's schema: (version before, after)."""
    if is_postgresql(location):
        from gateway.ledger import postgresql

        return postgresql.migrate(str(location))
    return sqlite.migrate_file(location)


def totals(
    location: str | Path, *, since: float | None = None, until: float | None = None, by: str
) -> list[ReportRow]:
    """Per-group sums of the rows with `since <= time < until` (unix seconds, either open)."""
    if is_postgresql(location):
        from gateway.ledger import postgresql

        return postgresql.totals(str(location), since=since, until=until, by=by)
    return sqlite.totals(location, since=since, until=until, by=by)


def spend(location: str | Path, *, since: float) -> list[tuple[str, str | None, Decimal]]:
    """What each (member, end user) has spent since `since`: the limiter's start-up state."""
    if is_postgresql(location):
        from gateway.ledger import postgresql

        return postgresql.spend(str(location), since=since)
    return sqlite.spend(location, since=since)


def copy(source: str | Path, target: str) -> dict[str, int]:
    """Copy the SQLite database at `source` (migrated first) into the PostgreSQL database at
    `target` (at this code's schema, and empty: `TargetNotEmpty` otherwise) in one
    transaction; the rows copied per table."""
    if is_postgresql(source) or not is_postgresql(target):
        raise ValueError("copy goes from a SQLite file to a PostgreSQL database")
    from gateway.ledger import postgresql

    with sqlite.exported(source) as export:
        tables = [(t.name, t.columns, t.rows) for t in export.tables]
        return postgresql.load(target, tables, export.key_version)
