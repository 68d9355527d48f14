"""The usage ledger: one row per finished request, kept where `[database] url`
(or `metering.ledger_path`) says.

`base` has the writer protocol every backend implements; `sqlite` is the backend (a file per
replica). `open_ledger`, `prepare` and `totals` pick the backend from the location.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from gateway.ledger import sqlite
from gateway.ledger.base import Ledger, LedgerError
from gateway.reports import ReportRow

__all__ = ["Ledger", "LedgerError", "ReportRow", "open_ledger", "prepare", "spend", "totals"]


def open_ledger(location: str | Path) -> Ledger:
    """A writer for the ledger at `location`, created or migrated, or `LedgerError`."""
    return sqlite.SQLiteLedger(location)


def prepare(location: str | Path) -> None:
    """Create or migrate the ledger and let it go again, or raise `LedgerError`: checked before
    serving, so a bad location stops start-up with one line."""
    sqlite.prepare(location)


def totals(
    location: str | Path, *, since: float | None = None, until: float | None = None, by: str
) -> list[ReportRow]:
    """Per-group sums of the rows with `since <= time < until` (unix seconds, either open)."""
    return sqlite.totals(location, since=since, until=until, by=by)


def spend(location: str | Path, *, since: float) -> list[tuple[str, str | None, Decimal]]:
    """What each (member, end user) has spent since `since`: the limiter's start-up state."""
    return sqlite.spend(location, since=since)
