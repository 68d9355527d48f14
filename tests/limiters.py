"""What the limiter tests share (tests/test_limits.py, tests/test_limits_shared.py): a fixed
instant, an `Ask` builder, and a stand-in ledger the shared limiter rebuilds its counters from.
"""

from __future__ import annotations

import os
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from gateway.budgets import Estimate
from gateway.limits import Ask
from gateway.limits.base import Spend
from gateway.types import Limits

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=ZoneInfo("UTC")).timestamp()
CENT = Decimal("0.01")

Rows = list[tuple[float, str, str | None, Decimal]]
"""A stand-in ledger: (time, member, end user, cost) rows."""


def ask(
    limits: Limits,
    *,
    cost: str = "0.01",
    tokens: int = 100,
    member: str = "alice",
    end_user: str | None = None,
    now: float = NOW,
    request_id: str | None = None,
) -> Ask:
    return Ask(
        request_id=request_id or os.urandom(8).hex(),
        member=member,
        limits=limits,
        end_user=end_user,
        estimate=Estimate(tokens // 2, tokens - tokens // 2, Decimal(cost)),
        now=now,
    )


def reading(ledger: Rows) -> Spend:
    """The `spend(since)` callback over `ledger` (read when called: rows added later count)."""

    async def spend(since: float) -> list[tuple[str, str | None, Decimal]]:
        return [(m, e, cost) for time, m, e, cost in ledger if time >= since]

    return spend
