"""Spend control: budgets, rate and concurrency limits. `base` has the limiter protocol, the
request's `Ask` and `Admission`, and the refusals every backend gives; `memory` is the
in-process backend. `open_limiter` picks the backend.
"""

from __future__ import annotations

from gateway.limits.base import LIMIT_NAMES, Admission, Ask, Limiter
from gateway.limits.memory import MemoryLimiter
from gateway.types import LimitRules

__all__ = ["LIMIT_NAMES", "Admission", "Ask", "Limiter", "MemoryLimiter", "open_limiter"]


def open_limiter(rules: LimitRules) -> Limiter:
    """The limiter for one gateway process."""
    return MemoryLimiter(rules)
