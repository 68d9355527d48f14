"""What a SQLite database holds, read out for `nanogpt-gateway migrate --from`: the usage
rows, keys and audit entries in the order they were written, and the key store's change
counter. The file is migrated to the latest schema first (as start-up would), then read in
one snapshot, a batch of rows at a time.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.ledger.base import LedgerError
from gateway.ledger.sqlite.schema import open_for_writing

_TABLES = {
    "usage": ("id", "ORDER BY id"),
    "keys": ("rowid AS seq", "ORDER BY rowid"),
    "key_audit": ("id", "ORDER BY id"),
}
"""Each table copied, with the column that keeps its rows' order, and that order."""
_BATCH_ROWS = 1000


@dataclass(frozen=True, slots=True)
class Table:
    """One table's columns and its rows (an iterator: read as it is consumed)."""

    name: str
    columns: tuple[str, ...]
    rows: Iterator[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class Export:
    tables: tuple[Table, ...]
    key_version: int
    """The key store's change counter."""


@contextlib.contextmanager
def exported(path: str | Path) -> Iterator[Export]:
    """The database at `path`, migrated, read in one snapshot; `LedgerError` if there is none
    or it cannot be read."""
    file = Path(path)
    if not file.is_file():
        raise LedgerError(f"{path}: no database here")
    open_for_writing(file).close()
    try:
        conn = sqlite3.connect(file.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: cannot open the database: {exc}") from None
    try:
        conn.execute("BEGIN")  # one snapshot of every table
        version = conn.execute("SELECT version FROM key_changes").fetchone()[0]
        tables = []
        for name, (order_column, order) in _TABLES.items():
            names = [row[1] for row in conn.execute(f"PRAGMA table_info({name})")]
            columns = [c for c in names if c != order_column]
            select = f"SELECT {order_column}, {', '.join(columns)} FROM {name} {order}"
            first = order_column.split()[-1]
            tables.append(Table(name, (first, *columns), _rows(conn, select)))
        yield Export(tuple(tables), int(version))
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: cannot read the database: {exc}") from None
    finally:
        conn.close()


def _rows(conn: sqlite3.Connection, select: str) -> Iterator[tuple[object, ...]]:
    cursor = conn.execute(select)
    while batch := cursor.fetchmany(_BATCH_ROWS):
        yield from batch
