"""The in-process limiter: every counter in this process's memory, rebuilt from the ledger at
start-up (`seed`). Atomic because `admit` never awaits between its checks and its writes: on
one event loop, no other request runs in between. One replica only; several replicas need the
shared backend.

Per-minute limits are token buckets: a bucket holds up to the limit and refills continuously at
the limit per minute, so a member may burst up to the limit and then goes on at its rate.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple
from zoneinfo import ZoneInfo

from gateway.budgets import WINDOWS, Period, Window, period
from gateway.limits.base import (
    Admission,
    Ask,
    Plan,
    Scope,
    below_floor,
    go_duration,
    over_budget,
    plan_budgets,
    rate_limited,
    team_paused,
    too_many_at_once,
    whose,
)
from gateway.types import LimitRules, Limits

logger = logging.getLogger("gateway.limits")

MAX_END_USERS = 100_000
"""Distinct end users counted per window; beyond it, new ones share one budget (bounded memory,
and a flood of invented end-user names cannot buy anyone a fresh budget)."""
OVERFLOW_END_USER = "(other end users)"
ZERO = Decimal(0)


@dataclass(slots=True)
class _Bucket:
    level: float
    updated: float

    def refill(self, capacity: int, now: float) -> float:
        if now > self.updated:
            self.level = min(capacity, self.level + (now - self.updated) * capacity / 60)
            self.updated = now
        return self.level


class _Budget(NamedTuple):
    scope: Scope
    period: Period
    amount: Decimal
    limit: str
    code: str


class MemoryLimiter:
    """Counters for one process (see the module docstring)."""

    def __init__(self, rules: LimitRules) -> None:
        self.rules = rules
        self.zone = ZoneInfo(rules.timezone)
        self._spent: dict[str, dict[Scope, Decimal]] = {}
        self._reserved: dict[str, dict[Scope, Decimal]] = {}
        self._end_users: dict[str, set[Scope]] = {}
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._running: dict[str, int] = {}
        self._reserved_total = ZERO
        self._admitted = 0
        self._balance: Decimal | None = None
        self._paused_until = 0.0
        self._warned_no_balance = False
        self._periods: dict[Window, Period] = {}
        self._period_keys: dict[Window, str] = {}
        self._plans: dict[Limits, tuple[Plan, ...]] = {}

    def reconfigure(self, rules: LimitRules) -> None:
        self.rules = dataclasses.replace(rules, timezone=self.rules.timezone)
        self._plans.clear()

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def settled(self) -> None:
        pass

    # -- admission ---------------------------------------------------------------------------

    async def admit(self, ask: Ask) -> Admission:
        return self.admit_now(ask)

    def admit_now(self, ask: Ask) -> Admission:
        """`admit` without the coroutine: check every limit, then reserve every limit."""
        now, limits = ask.now, ask.limits
        periods = self._periods_at(now)
        budgets = self._budgets(ask, periods) if self._plan(limits) else ()
        cost = ask.estimate.cost_usd
        left = self._check_money(ask, budgets) if cost > 0 or budgets else None
        running = self._running.get(ask.member, 0)
        if limits.max_concurrent_requests is not None and (
            running >= limits.max_concurrent_requests
        ):
            raise too_many_at_once(limits.max_concurrent_requests)
        headers: dict[str, str] = {}
        if limits.requests_per_minute is not None:
            self._check_rate(ask, "requests", limits.requests_per_minute, 1)
        if limits.tokens_per_minute is not None:
            self._check_rate(ask, "tokens", limits.tokens_per_minute, ask.estimate.tokens)

        # Every check passed: reserve everything (nothing below can refuse).
        if limits.requests_per_minute is not None:
            self._take(ask, "requests", limits.requests_per_minute, 1, headers)
        if limits.tokens_per_minute is not None:
            self._take(ask, "tokens", limits.tokens_per_minute, ask.estimate.tokens, headers)
        self._running[ask.member] = running + 1
        self._admitted += 1
        self._reserved_total += cost
        holds = [(p.key, scope) for p in periods.values() for scope in self._scopes(ask, p)]
        for key, scope in holds:
            counters = self._reserved.setdefault(key, {})
            counters[scope] = counters.get(scope, ZERO) + cost
            if scope[0] == "end_user":
                self._end_users.setdefault(key, set()).add(scope)
        if left is not None:
            headers["x-gateway-budget-remaining-usd"] = f"{max(left, ZERO):.6f}"
        return Admission(ask=ask, periods=self._period_keys, holds=holds, headers=headers)

    def _periods_at(self, now: float) -> dict[Window, Period]:
        """The day and month around `now`, computed again only when the day changes (then
        the counters of past periods are let go)."""
        day = self._periods.get("day")
        if day is None or not day.start <= now < day.end:
            self._periods = {window: period(window, now, self.zone) for window in WINDOWS}
            self._period_keys = {window: p.key for window, p in self._periods.items()}
            self._forget_old_periods(set(self._period_keys.values()))
        return self._periods

    def _plan(self, limits: Limits) -> tuple[Plan, ...]:
        """Which budgets bound a member with these limits (with the team's), worked out once
        per set of limits."""
        plan = self._plans.get(limits)
        if plan is None:
            plan = self._plans[limits] = plan_budgets(limits, self.rules)
        return plan

    def _budgets(self, ask: Ask, periods: dict[Window, Period]) -> list[_Budget]:
        found = []
        for window, kind, amount, limit, code in self._plan(ask.limits):
            p = periods[window]
            if kind == "member":
                scope: Scope = ("member", ask.member)
            elif kind == "team":
                scope = ("team",)
            elif ask.end_user is not None:
                scope = self._end_user_scope(ask, p)
            else:
                continue
            found.append(_Budget(scope, p, amount, limit, code))
        return found

    def _check_money(self, ask: Ask, budgets: Sequence[_Budget]) -> Decimal | None:
        """Budgets, the NanoGPT daily-limit pause and the balance floor: they bound only
        requests that cost money, and a refusal by any of them is final for its period.
        Returns the least left across the budgets once this request is reserved."""
        cost = ask.estimate.cost_usd
        if cost > 0 and self._paused_until > ask.now:
            raise team_paused(self._paused_until, ask.now)
        least: Decimal | None = None
        for budget in budgets:
            spent = self._spent.get(budget.period.key, {}).get(budget.scope, ZERO)
            reserved = self._reserved.get(budget.period.key, {}).get(budget.scope, ZERO)
            left = budget.amount - spent - reserved - cost
            if least is None or left < least:
                least = left
            if left < 0 and cost > 0:
                raise over_budget(
                    limit=budget.limit,
                    code=budget.code,
                    whose=whose(budget.scope),
                    budget=budget.amount,
                    spent=spent,
                    reserved=reserved,
                    cost=cost,
                    resets=budget.period.end,
                    now=ask.now,
                )
        floor = self.rules.min_balance_usd
        if floor is None or cost <= 0:
            return least
        if self._balance is None:
            if not self._warned_no_balance:
                self._warned_no_balance = True
                logger.warning(
                    "limits.min_balance_usd is not applied yet: NanoGPT's balance has not "
                    "been read (metering.balance_poll_seconds)"
                )
        elif self._balance - self._reserved_total - cost < floor:
            raise below_floor(floor, self._balance, self._reserved_total, cost)
        return least

    def _check_rate(self, ask: Ask, kind: str, limit: int, needed: int) -> None:
        name = "requests_per_minute" if kind == "requests" else "tokens_per_minute"
        if needed > limit or limit == 0:
            raise rate_limited(kind, name, limit, 0, needed, wait=None)
        level = self._bucket(ask.member, kind, limit, ask.now).refill(limit, ask.now)
        if level < needed:
            wait = (needed - level) * 60 / limit
            raise rate_limited(kind, name, limit, limit - level, needed, wait)

    def _take(self, ask: Ask, kind: str, limit: int, needed: int, headers: dict[str, str]) -> None:
        """Take from a bucket already checked; the `x-ratelimit-*` headers after it."""
        bucket = self._bucket(ask.member, kind, limit, ask.now)
        bucket.level -= needed
        headers[f"x-ratelimit-limit-{kind}"] = str(limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(max(math.floor(bucket.level), 0))
        headers[f"x-ratelimit-reset-{kind}"] = go_duration((limit - bucket.level) * 60 / limit)

    def _bucket(self, member: str, kind: str, limit: int, now: float) -> _Bucket:
        bucket = self._buckets.get((member, kind))
        if bucket is None:
            bucket = self._buckets[(member, kind)] = _Bucket(float(limit), now)
        return bucket

    def _scopes(self, ask: Ask, p: Period) -> list[Scope]:
        scopes: list[Scope] = [("member", ask.member), ("team",)]
        if ask.end_user is not None:
            scopes.append(self._end_user_scope(ask, p))
        return scopes

    def _end_user_scope(self, ask: Ask, p: Period) -> Scope:
        """The end user's own counter, or the shared overflow one once `MAX_END_USERS` are
        counted in this period."""
        assert ask.end_user is not None
        scope: Scope = ("end_user", ask.member, ask.end_user)
        known = self._end_users.get(p.key, set())
        if scope in known or len(known) < MAX_END_USERS:
            return scope
        return ("end_user", ask.member, OVERFLOW_END_USER)

    def _forget_old_periods(self, keep: set[str]) -> None:
        """Past periods' counters: spend no longer bounds anything, and a past reservation
        only until its request ends."""
        for key in [k for k in self._spent if k not in keep]:
            del self._spent[key]
        for key in [k for k in self._end_users if k not in keep]:
            del self._end_users[key]
        for key in [k for k in self._reserved if k not in keep and not self._reserved[k]]:
            del self._reserved[key]

    # -- the end of a request ----------------------------------------------------------------

    def settle(self, admission: Admission, cost_usd: Decimal, tokens: int | None) -> None:
        if admission.ended:
            return
        admission.ended = True
        ask = admission.ask
        reserved = ask.estimate.cost_usd
        self._running[ask.member] -= 1
        if not self._running[ask.member]:
            del self._running[ask.member]
        self._admitted -= 1
        self._reserved_total -= reserved
        for key, scope in admission.holds:
            counters = self._reserved.get(key)
            if counters is not None and scope in counters:
                counters[scope] -= reserved
                if not counters[scope]:
                    del counters[scope]
            if cost_usd:
                spent = self._spent.setdefault(key, {})
                spent[scope] = spent.get(scope, ZERO) + cost_usd
        limit = ask.limits.tokens_per_minute
        if limit is not None and tokens is not None:
            bucket = self._buckets.get((ask.member, "tokens"))
            if bucket is not None:  # give back what was reserved and not used, or take more
                bucket.level = min(limit, bucket.level + ask.estimate.tokens - tokens)

    def release(self, admission: Admission) -> None:
        self.settle(admission, ZERO, 0)

    # -- what the ledger and NanoGPT say -----------------------------------------------------

    def seed(
        self, window: Window, now: float, spent: list[tuple[str, str | None, Decimal]]
    ) -> None:
        key = period(window, now, self.zone).key
        counters = self._spent.setdefault(key, {})
        for member, end_user, cost in spent:
            end_user_scope: Scope = ("end_user", member, end_user or "")
            self._end_users.setdefault(key, set()).add(end_user_scope)
            for scope in (("member", member), ("team",), end_user_scope):
                counters[scope] = counters.get(scope, ZERO) + cost

    def balance_polled(self, usd: float) -> None:
        self._balance = Decimal(repr(usd))

    def pause_team(self, until: float) -> None:
        self._paused_until = max(self._paused_until, until)

    # -- reading -----------------------------------------------------------------------------

    def reserved_usd(self) -> Decimal:
        return self._reserved_total

    def in_flight(self) -> int:
        return self._admitted

    def spent(self, member: str | None, window: Window, now: float) -> tuple[Decimal, Decimal]:
        key = period(window, now, self.zone).key
        scope: Scope = ("team",) if member is None else ("member", member)
        return (
            self._spent.get(key, {}).get(scope, ZERO),
            self._reserved.get(key, {}).get(scope, ZERO),
        )
