"""Spend control: budgets, rate and concurrency limits. `base` has the limiter protocol, the
request's `Ask` and `Admission`, and the refusals every backend gives; `memory` is the
in-process backend (one replica), `redis` the shared one (several); `fallback` is what the
shared one does while Redis is away. `open_limiter` picks the backend.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.limits.base import LIMIT_NAMES, Admission, Ask, Limiter, Spend
from gateway.limits.fallback import Fallback
from gateway.limits.memory import MemoryLimiter
from gateway.types import LimitRules

__all__ = ["LIMIT_NAMES", "Admission", "Ask", "Limiter", "MemoryLimiter", "open_limiter"]


def open_limiter(
    rules: LimitRules,
    *,
    redis_url: str | None = None,
    redis_password: str = "",
    lease_ttl: float = 30.0,
    on_error: tuple[str, str] = ("closed", "local"),
    spend: Spend | None = None,
    on_fallback: Callable[[str], None] = lambda _: None,
) -> Limiter:
    """The limiter for one gateway process: in Redis when `redis_url` is set (`on_error`:
    what budgets and rates do while it is away; `spend(since)` reads the ledger to rebuild a
    lost counter), else in this process."""
    if redis_url is None:
        return MemoryLimiter(rules)
    from gateway.limits import redis  # imports redis-py only where it is used

    budgets, rates = on_error
    fallback = Fallback(MemoryLimiter(rules), budgets, rates, on_fallback)
    client = redis.connect(redis_url, redis_password)
    return redis.RedisLimiter(rules, client, lease_ttl=lease_ttl, fallback=fallback, spend=spend)
