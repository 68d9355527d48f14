"""The tally: what the route learns about one request, and the one step that ends it.

`Tallies.start()` opens a `Tally` at the top of every request; whichever layer sees the end (a
refusal in the route, the relay at the end of a body, a disconnect) awaits `finish()`, and only
the first call counts. Finishing accounts the request (`accounting.account`) and hands the
`Finished` record to the metrics and the ledger before its first await, so a cancellation
cannot skip it; the ledger only queues, its writer commits on a thread of its own.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Protocol

from gateway.accounting import account
from gateway.endpoints import UNLISTED, Endpoint
from gateway.limits import Admission, Limiter
from gateway.metrics import Metrics
from gateway.types import Finished, Member, ModelInfo, Outcome, Price, Usage

logger = logging.getLogger("gateway.tally")

REQUEST_ID_HEADER = "x-gateway-request-id"
"""The ledger row's request id, on every `/v1` response: what to quote when asking about one."""


class LedgerSink(Protocol):
    def append(self, record: Finished) -> None: ...


class Tallies:
    """Opens tallies and takes them back: the sinks every finished request goes to."""

    def __init__(
        self,
        metrics: Metrics,
        ledger: LedgerSink | None = None,
        *,
        limiter: Limiter | None = None,
        price_overrides: Mapping[str, Price] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.ledger = ledger
        self.limiter = limiter
        self.price_overrides: Mapping[str, Price] = price_overrides or {}
        self.clock = clock

    def start(self) -> Tally:
        self.metrics.started()
        return Tally(self)

    def record(self, finished: Finished, admission: Admission | None = None) -> None:
        if admission is not None and self.limiter is not None:
            self._settle(admission, finished)
        self.metrics.observe(finished)
        if finished.member is None or self.ledger is None:
            return
        try:
            self.ledger.append(finished)
        except Exception:  # a closed ledger must not turn a finished answer into a crash
            logger.exception("usage of request %s not recorded in the ledger", finished.request_id)

    def _settle(self, admission: Admission, finished: Finished) -> None:
        """Give the limiter what the request cost (its reservation when nothing said, as
        `account` decided), or release it: a request that never reached NanoGPT spent
        nothing."""
        assert self.limiter is not None
        if finished.cost_usd is None:
            self.limiter.release(admission)
            return
        usage = finished.usage
        tokens = usage.prompt_tokens + usage.completion_tokens if usage is not None else None
        self.limiter.settle(admission, finished.cost_usd, tokens)


class Tally:
    """One request as it goes: filled in by the route as it learns who and what, finished once."""

    __slots__ = (
        "_done",
        "_first_byte",
        "_started",
        "_tallies",
        "admission",
        "end_user",
        "endpoint",
        "forwarded",
        "key_id",
        "limit",
        "member",
        "model",
        "model_id",
        "path",
        "request_id",
        "reserved_usd",
        "started_at",
        "stream",
        "stream_usage_unsupported",
        "upstream_failure",
    )

    def __init__(self, tallies: Tallies) -> None:
        self._tallies = tallies
        self._started = time.perf_counter()
        self._first_byte: float | None = None
        self._done = False
        self.started_at = tallies.clock()
        self.request_id = os.urandom(16).hex()  # a uuid4's randomness, without the object
        self.member: Member | None = None
        self.key_id: str | None = None
        self.end_user: str | None = None
        self.endpoint: Endpoint = UNLISTED
        self.path: str | None = None
        self.model_id: str | None = None
        self.model: ModelInfo | None = None
        self.stream = False
        self.forwarded = False
        self.stream_usage_unsupported = False
        self.upstream_failure: str | None = None
        self.admission: Admission | None = None
        self.reserved_usd: Decimal | None = None
        self.limit: str | None = None

    def first_byte(self) -> None:
        if self._first_byte is None:
            self._first_byte = time.perf_counter()

    async def finish(self, status: int, outcome: Outcome, usage: Usage | None = None) -> None:
        """Record the request; any later call is ignored, so every layer may call it safely.

        Everything happens before the first await: a cancelled caller cannot cut it short."""
        if self._done:
            return
        self._done = True
        now = time.perf_counter()
        ttft = None
        if self.stream and self._first_byte is not None:
            ttft = self._first_byte - self._started
        finished = account(
            self,
            status=status,
            outcome=outcome,
            usage=usage,
            duration=now - self._started,
            ttft=ttft,
            price_overrides=self._tallies.price_overrides,
        )
        self._tallies.record(finished, self.admission)
