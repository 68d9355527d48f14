"""The SQLite ledger's writer: the shared batching writer (`ledger.batching`) storing each
batch in one SQLite transaction. Costs are stored as exact decimal text.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from gateway.ledger.batching import MAX_QUEUED_ROWS, BatchedLedger
from gateway.ledger.rows import COLUMNS, row_values
from gateway.ledger.sqlite.schema import open_for_writing
from gateway.types import Finished

__all__ = ["MAX_QUEUED_ROWS", "SQLiteLedger"]

logger = logging.getLogger("gateway.ledger")

# sqlite3 releases the GIL around every statement step, and each time the writer takes it back
# the event loop may stall for the switch interval: executemany() (one step per row) cost the
# request path ~0.15 ms per request. Rows go in multi-row INSERTs instead, few enough to keep within
# the 999 parameters of older SQLite builds.
_ROWS_PER_INSERT = 999 // len(COLUMNS)
_COST = COLUMNS.index("cost_usd")


@functools.cache
def _insert(rows: int) -> str:
    row = "(" + ", ".join("?" * len(COLUMNS)) + ")"
    return f"INSERT INTO usage ({', '.join(COLUMNS)}) VALUES " + ", ".join([row] * rows)


class SQLiteLedger(BatchedLedger):
    """The batching writer (`BatchedLedger`: retries, queue bound, lost rows) on a SQLite
    file, created or migrated when opened."""

    def __init__(
        self,
        path: str | Path,
        *,
        batch_size: int = 500,
        batch_seconds: float = 0.5,
        retry_delays: Sequence[float] = (0.5, 2.0, 8.0, 30.0),
        max_queued_rows: int = MAX_QUEUED_ROWS,
    ) -> None:
        super().__init__(
            str(path),
            batch_size=batch_size,
            batch_seconds=batch_seconds,
            retry_delays=retry_delays,
            max_queued_rows=max_queued_rows,
        )
        self.path = Path(path)
        self._conn = open_for_writing(self.path)
        self._start()

    def _store(self, records: Sequence[Finished]) -> None:
        try:
            rows = [_row(r) for r in records]
            self._conn.execute("BEGIN IMMEDIATE")
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                chunk = rows[start : start + _ROWS_PER_INSERT]
                self._conn.execute(_insert(len(chunk)), [v for row in chunk for v in row])
            self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _release(self) -> None:
        self._conn.close()

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            logger.exception("%s: rollback failed", self.path)


def _row(record: Finished) -> tuple[object, ...]:
    values = list(row_values(record))
    cost = values[_COST]
    values[_COST] = str(cost) if cost is not None else None
    return tuple(values)
