"""The part of a ledger writer every backend shares: `append()` only queues, one writer thread
takes what piled up every `batch_seconds` and hands it to the backend in batches, keeps what
the backend could not store for a retry (with backoff), and counts what it must drop. No
storage library here: a backend subclasses `BatchedLedger` and implements `_store`.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.ledger.base import LedgerError
from gateway.types import Finished

logger = logging.getLogger("gateway.ledger")

MAX_QUEUED_ROWS = 100_000
"""Rows a ledger that cannot be written keeps for a retry (a few hundred bytes each)."""


class BatchedLedger:
    """Appends `Finished`s from any thread without blocking; `_store(batch)` writes a batch in
    one transaction (raising on failure, having written nothing) on the writer thread.

    One writer thread wakes every `batch_seconds` (or at once for a flush or close) to store
    what has piled up: `append()` never wakes it, because a thread woken per row takes the GIL
    from the event loop for every request (about 0.1 ms each, measured). It is a daemon thread,
    so a forgotten `close()` never hangs the process at exit; an `atexit` hook closes the
    ledger then, so queued rows are still written on a normal exit. `append()` after `close()`
    raises `LedgerError`.

    A write that fails (a full disk, a lock another process holds, a database that went away)
    keeps its rows queued and is retried after each of `retry_delays` in turn, then every last
    delay, until it succeeds: meanwhile `writable` is false. Up to `max_queued_rows` wait; a row
    beyond that is lost and counted in `rows_lost` (logged once per outage), as are the rows
    still unwritten when `close()` makes its last try.
    """

    where: str
    """Where the rows go, for messages (never with a password)."""
    shared: bool = False
    """Every replica writes here: its outage is every replica's, so readiness rides it out
    (taking replicas out of rotation would serve no one) until the queue is full."""

    def __init__(
        self,
        where: str,
        *,
        batch_size: int = 500,
        batch_seconds: float = 0.5,
        retry_delays: Sequence[float] = (0.5, 2.0, 8.0, 30.0),
        max_queued_rows: int = MAX_QUEUED_ROWS,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not retry_delays:
            raise ValueError("retry_delays must name at least one delay")
        self.where = where
        self._batch_size = batch_size
        self._batch_seconds = batch_seconds
        self._retry_delays = tuple(retry_delays)
        self._max_queued = max_queued_rows
        self._pending: deque[Finished | _Marker] = deque()
        self._queued = 0  # appended, neither committed nor lost yet
        self._lost = 0
        self._overflowing = False
        self._failures = 0  # failed attempts in a row
        self._unwritten: list[Finished] = []  # the writer's alone, as are the next two
        self._waiting: list[_Marker] = []
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._writer = threading.Thread(target=self._run, name="gateway-ledger", daemon=True)

    def _start(self) -> None:
        """Start the writer thread, once the backend is ready to `_store`."""
        self._writer.start()
        atexit.register(self.close)

    def _store(self, records: Sequence[Finished]) -> None:
        """Write `records` in one transaction, or raise having written none of them."""
        raise NotImplementedError

    def _release(self) -> None:
        """Let go of the storage, after the writer's last write."""

    @property
    def queued_rows(self) -> int:
        """Rows appended and not yet committed."""
        return self._queued

    @property
    def rows_lost(self) -> int:
        """Rows never written: the queue was full, or the ledger closed while unwritable."""
        return self._lost

    @property
    def full(self) -> bool:
        """The queue is at its bound: new rows are being lost."""
        return self._queued >= self._max_queued

    @property
    def writable(self) -> bool:
        """False from a failed write until a write succeeds again."""
        return self._failures == 0

    def append(self, record: Finished) -> None:
        """Queue one row; it is committed within the next batch. Never blocks on storage."""
        with self._lock:
            if self._closed:
                raise LedgerError(
                    f"{self.where}: ledger is closed; request {record.request_id} not recorded"
                )
            full = self._queued >= self._max_queued
            if full:
                self._lost += 1
                first_lost, self._overflowing = not self._overflowing, True
            else:
                self._queued += 1
                self._pending.append(record)
        if full and first_lost:
            logger.error(
                "%s: %d usage rows wait to be written; new rows are lost until the ledger "
                "catches up (request %s is the first)",
                self.where,
                self._max_queued,
                record.request_id,
            )

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every row appended before this call is committed; `LedgerError` after
        `timeout` (a ledger that cannot be written keeps them queued, and this waits on)."""
        marker = _Marker()
        with self._lock:
            closed = self._closed
            if not closed:
                self._pending.append(marker)
                self._wake.set()
        if closed:
            self._join(timeout)  # close() queued its stop marker behind every row
        elif not marker.done.wait(timeout):
            raise LedgerError(f"{self.where}: rows still being written after {timeout}s")

    def close(self, timeout: float | None = None) -> None:
        """Write everything queued, stop the writer and let go of storage. Safe to call twice."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._pending.append(_Marker(stop=True))
                self._wake.set()
        self._join(timeout)
        self._release()
        atexit.unregister(self.close)

    def _join(self, timeout: float | None) -> None:
        self._writer.join(timeout)
        if self._writer.is_alive():
            raise LedgerError(f"{self.where}: rows still being written after {timeout}s")

    def _run(self) -> None:
        _yield_cpu_to_requests()
        stop = False
        while not stop:
            self._wake.wait(self._pause())
            self._wake.clear()
            stop = self._take()
            self._write_unwritten(last_try=stop)

    def _pause(self) -> float:
        if not self._failures:
            return self._batch_seconds
        return self._retry_delays[min(self._failures, len(self._retry_delays)) - 1]

    def _take(self) -> bool:
        """Move what was appended into the writer's hands; true once `close()` asked to stop."""
        stop = False
        while self._pending:
            item = self._pending.popleft()
            if isinstance(item, _Marker):
                self._waiting.append(item)
                stop = stop or item.stop
            else:
                self._unwritten.append(item)
        return stop

    def _write_unwritten(self, *, last_try: bool) -> None:
        """Commit the unwritten rows in batches. A failure keeps them for the next try, and
        the markers waiting behind them wait on; on the last try, it loses them."""
        while self._unwritten:
            batch = self._unwritten[: self._batch_size]
            if not self._write(batch):
                if not last_try:
                    return
                self._lose(self._unwritten)
                break
            del self._unwritten[: len(batch)]
            with self._lock:
                self._queued -= len(batch)
        if self._overflowing and not self._queued:
            self._overflowing = False
            logger.warning("%s: the ledger has caught up; %d rows lost", self.where, self._lost)
        for marker in self._waiting:
            marker.done.set()
        self._waiting.clear()

    def _write(self, records: list[Finished]) -> bool:
        try:
            self._store(records)
        except Exception as exc:  # the writer must outlive any failure, or flush() would hang
            self._failures += 1
            message = "%s: writing %d usage rows failed (attempt %d); %d rows queued"
            args = (self.where, len(records), self._failures, self._queued)
            if self._failures == 1:
                logger.exception(message, *args)
            else:  # the traceback was logged with the first attempt
                logger.warning(message + ": %s", *args, exc)
            return False
        if self._failures:
            logger.warning("%s: usage rows are written again", self.where)
            self._failures = 0
        return True

    def _lose(self, records: list[Finished]) -> None:
        with self._lock:
            self._queued -= len(records)
            self._lost += len(records)
        logger.error(
            "%s: gave up writing usage rows: %d rows lost (request ids %s .. %s)",
            self.where,
            len(records),
            records[0].request_id,
            records[-1].request_id,
        )
        records.clear()


def _yield_cpu_to_requests() -> None:
    """Put the writer thread at the lowest CPU priority.

    The writer's work comes in bursts, one per batch. At the event loop's priority the kernel
    splits a busy core between the two, and the requests in flight slow down: bench/run
    measured the c=1 p99 at twice what it is without the ledger, and back at that level with
    this. At nice 19 the writer runs whenever the loop waits, and even on a saturated core it
    keeps about 1.5% of it: at 3 us of CPU a row, 5,000 rows a second, more than one gateway
    process serves. Linux only: elsewhere PRIO_PROCESS with a thread id would name the whole
    process."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


@dataclass(frozen=True, slots=True)
class _Marker:
    """Put through the queue behind earlier rows: set once they are committed."""

    stop: bool = False
    done: threading.Event = field(default_factory=threading.Event)
