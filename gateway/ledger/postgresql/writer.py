"""The PostgreSQL ledger's writer: the shared batching writer (`ledger.batching`) storing each
batch with one COPY in one transaction, on a connection the writer thread alone uses. A
database that goes away leaves the rows queued (up to the bound) until it answers again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import psycopg

from gateway.config import shown_location
from gateway.ledger.batching import MAX_QUEUED_ROWS, BatchedLedger
from gateway.ledger.postgresql.schema import check, connect
from gateway.ledger.rows import COLUMNS, row_values
from gateway.types import Finished

__all__ = ["MAX_QUEUED_ROWS", "PostgreSQLLedger"]

logger = logging.getLogger("gateway.ledger")

_COPY = f"COPY usage ({', '.join(COLUMNS)}) FROM STDIN".encode()


class PostgreSQLLedger(BatchedLedger):
    """The batching writer (`BatchedLedger`: retries, queue bound, lost rows) on PostgreSQL.
    Opening checks that the database answers and is at this code's schema version
    (`LedgerError` otherwise); after that, a failure only delays the rows: a lost connection
    is dropped and a new one made for the next try. One connection, not a pool: one thread
    writes, and it must know when its connection broke."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 500,
        batch_seconds: float = 0.5,
        retry_delays: Sequence[float] = (0.5, 2.0, 8.0, 30.0),
        max_queued_rows: int = MAX_QUEUED_ROWS,
    ) -> None:
        super().__init__(
            shown_location(url),
            batch_size=batch_size,
            batch_seconds=batch_seconds,
            retry_delays=retry_delays,
            max_queued_rows=max_queued_rows,
        )
        self._url = url
        conn = connect(url)
        try:
            check(conn, url)
        except BaseException:
            conn.close()
            raise
        self._conn: psycopg.Connection[tuple[object, ...]] | None = conn
        self._start()

    @property
    def url(self) -> str:
        """The database's URL (with its password, if it has one: not for messages)."""
        return self._url

    def _store(self, records: Sequence[Finished]) -> None:
        reused = self._conn is not None and not self._conn.closed
        try:
            self._copy(records)
        except psycopg.OperationalError:
            if not reused or self._conn is not None:
                raise
            # The connection had died while idle (a restarted server): one try on a new one,
            # so a write right after PostgreSQL came back, as close() makes, is not lost.
            self._copy(records)

    def _copy(self, records: Sequence[Finished]) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._url)
        conn = self._conn
        try:
            with conn.transaction(), conn.cursor().copy(_COPY) as copy:
                for record in records:
                    copy.write_row(row_values(record))
        except BaseException:
            if conn.broken or conn.closed:
                self._conn = None
                with contextlib.suppress(psycopg.Error):
                    conn.close()
            raise

    def _release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
