"""What a usage ledger is to the gateway, whatever stores it: a writer that never blocks the
request path, and the error every backend raises. No storage library here.
"""

from __future__ import annotations

from typing import Protocol

from gateway.types import Finished


class LedgerError(Exception):
    """The ledger cannot be opened, read or written; the message starts with where it is."""


class TargetNotEmpty(LedgerError):
    """The target database holds rows already: copying into it would mix two histories."""


class Ledger(Protocol):
    """Takes finished requests as rows. `append()` runs on the request path, so it only queues;
    `flush()` waits for what was appended before it; `close()` writes the rest and stops.
    `append()` after `close()` raises `LedgerError`. A ledger that cannot be written keeps a
    bounded queue of rows for a retry, and says so: `writable`, `queued_rows`, `rows_lost`."""

    @property
    def writable(self) -> bool: ...

    @property
    def queued_rows(self) -> int: ...

    @property
    def rows_lost(self) -> int: ...

    def append(self, record: Finished) -> None: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...
