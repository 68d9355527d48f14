"""One timer per upstream response that bounds every wait for it (the head, then each read),
whatever the upstream sends. Knows asyncio, nothing of HTTP.
"""

from __future__ import annotations

import asyncio


class ReadDeadline:
    """A bound on every wait for one upstream response: for its head, then for each read.

    aiohttp's `sock_read` measures only silence, and stops for good on a 1xx head, so an
    upstream that drips framing bytes, or sends `103 Early Hints` and goes quiet, could hold
    a request forever. `asyncio.timeout` around each read costs about 8 us, as much as the
    rest of relaying a chunk; here one timer per response, re-armed when it fires, cancels the
    task whose read began more than `seconds` ago, and a read costs a clock reading.
    """

    __slots__ = ("_handle", "_limit", "_loop", "_seconds", "_task", "expired", "since")

    def __init__(self, seconds: float, *, grace: float = 0.0) -> None:
        self._loop = asyncio.get_running_loop()
        self._seconds = seconds
        self._limit = seconds + grace
        """How long the pending wait may take: the head's wait has the connect's grace too."""
        self._task = asyncio.current_task()
        self.since: float | None = self._loop.time()
        """When the pending wait began; `None` between reads (the relay is sending)."""
        self.expired = False
        self._handle = self._loop.call_at(self.since + seconds, self._check)

    def begin(self) -> None:
        self._task = asyncio.current_task()
        self.since = self._loop.time()

    def headed(self) -> None:
        """The head is in: from now on, each read has `seconds`."""
        self.since = None
        self._limit = due = self._seconds
        due += self._loop.time()
        if self._handle.when() > due:  # re-armed for a slow head's grace: too late now
            self._handle.cancel()
            self._handle = self._loop.call_at(due, self._check)

    def timed_out(self) -> bool:
        """Whether the `CancelledError` being handled was this deadline's (taken back, then),
        rather than the client's or the server's."""
        if not self.expired or self._task is None:
            return False
        self.expired = False
        return self._task.uncancel() == 0

    def stop(self) -> None:
        self._handle.cancel()

    def _check(self) -> None:
        # Fires `seconds` after the last check, or when the pending wait reaches its limit.
        since, now = self.since, self._loop.time()
        if since is not None and now - since >= self._limit and self._task is not None:
            self.expired = True
            self._task.cancel()
            return
        due = now + self._seconds if since is None else since + self._limit
        self._handle = self._loop.call_at(due, self._check)
