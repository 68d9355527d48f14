"""The shared limiter: every budget, rate and concurrency counter in Redis, so replicas behind
one load balancer enforce one set of limits. Admission is one Lua script (`scripts.ADMIT`):
it checks and reserves every limit, or reserves nothing and names the first that refused.
Settling is a script too, idempotent by request id, sent off the request path. What a request
holds is a lease its replica renews; a replica that dies lets go of it after `lease_ttl`.

The only module that imports `redis`. While Redis does not answer, a circuit breaker sends
decisions to the fallback at once (`fallback.py` says what it does per class of limit) and a
probe tries Redis again every few seconds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from decimal import ROUND_CEILING, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.budgets import WINDOWS, Period, Window, period
from gateway.limits import memory, scripts
from gateway.limits.base import (
    Admission,
    Ask,
    Plan,
    Scope,
    Spend,
    below_floor,
    go_duration,
    over_budget,
    plan_budgets,
    rate_limited,
    team_paused,
    too_many_at_once,
    whose,
)
from gateway.limits.breaker import Breaker
from gateway.limits.fallback import Fallback
from gateway.types import LimitRules

logger = logging.getLogger("gateway.limits")

NANO = Decimal("1e9")
SOCKET_TIMEOUT = 0.25
"""Seconds for one Redis command or connection: a Redis that does not answer costs a decision
at most this (twice, with a reconnect), never a hung request."""
DECISION_TIMEOUT = 0.8
TICK = 1.0
"""Seconds between the background loop's rounds: shared counters read for `spent`, queued
settles retried, a probe while Redis is away."""
KEEP_SECONDS = 3 * 86400
"""How long a period's counters outlive it in Redis (no reset job: they expire)."""
MAX_UNSETTLED = 100_000
PREFIX = "nanogpt-gateway:{limits}:"


def connect(url: str, password: str | None) -> aioredis.Redis:
    """A client whose every command answers or fails within `SOCKET_TIMEOUT` (no retries:
    the breaker decides when to try again)."""
    return aioredis.Redis.from_url(
        url,
        password=password or None,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def nanos(amount: Decimal, *, up: bool = False) -> int:
    scaled = amount * NANO
    return int(scaled.to_integral_value(ROUND_CEILING) if up else scaled.to_integral_value())


def usd(amount: Any) -> Decimal:
    return Decimal(int(amount or 0)) / NANO


def _field(scope: Scope) -> str:
    if scope[0] == "team":
        return "t"
    if scope[0] == "member":
        return f"m:{scope[1]}"
    return f"e:{scope[1]}|{scope[2]}"


def _scope(field: str) -> Scope:
    if field == "t":
        return ("team",)
    if field.startswith("m:"):
        return ("member", field[2:])
    member, _, end_user = field[2:].partition("|")  # member names have no "|"
    return ("end_user", member, end_user)


class RedisLimiter:
    """Counters shared through Redis (see the module docstring)."""

    def __init__(
        self,
        rules: LimitRules,
        client: aioredis.Redis,
        *,
        lease_ttl: float,
        fallback: Fallback,
        spend: Spend | None = None,
        prefix: str = PREFIX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules = rules
        self.zone = ZoneInfo(rules.timezone)
        self.client = client
        self.lease_ttl = lease_ttl
        self.fallback = fallback
        self.local = fallback.local
        self.prefix = prefix
        self.clock = clock
        self._spend = spend
        self.breaker = Breaker(self._changed)
        self._scripts = {
            name: client.register_script(getattr(scripts, name))
            for name in ("ADMIT", "SETTLE", "RENEW", "REBUILD")
        }
        self._plans: dict[Any, tuple[Plan, ...]] = {}
        self._active: dict[str, Admission] = {}
        self._reserved_here = Decimal(0)
        self._unsettled: collections.deque[dict[str, Any]] = collections.deque()
        self._sending: dict[asyncio.Task[None], str] = {}
        """Settles on their way to Redis, by member: a member's next request waits for them
        (one round trip), so finishing one request frees its slot for the next."""
        self._rebuilds: dict[str, asyncio.Task[None]] = {}
        self._cache: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
        self._watched: set[str] = {"t"}
        self._periods: dict[str, Period] = {}
        self._balance: int | None = None
        self._paused_until = 0.0
        self._loop: asyncio.Task[None] | None = None
        self._renewed = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self._round()
        self._loop = asyncio.create_task(self._background())

    async def aclose(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        await self.settled()
        if self._unsettled:
            logger.warning(
                "%d settled requests did not reach Redis before shutdown; the ledger has "
                "them, and Redis counts them again only if it loses this period",
                len(self._unsettled),
            )
        await self.client.aclose()

    async def settled(self) -> None:
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        if self.breaker.closed:
            await self._flush_unsettled()
            await self._read_counters(everyone=True)

    async def _background(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                await self._round()
            except Exception:  # the loop must outlive any one round
                logger.exception("the shared limiter's background round failed")

    async def _round(self) -> None:
        """Probe while Redis is away; renew this replica's leases every third of their life;
        send settles that waited; read the counters `spent` shows."""
        now = self.clock()
        if not self.breaker.closed and not self.breaker.probe_due(now):
            return
        try:
            async with asyncio.timeout(DECISION_TIMEOUT):
                await self.client.ping()
                if now - self._renewed >= self.lease_ttl / 3:
                    payload = {"now": now, "ttl": self.lease_ttl, "ids": [*self._active]}
                    await self._call("RENEW", payload)
                    self._renewed = now
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.failed(_reason(exc), now)
            return
        self.breaker.succeeded()
        await self._flush_unsettled()
        await self._read_counters()

    def _changed(self, available: bool, reason: str) -> None:
        if available:
            logger.warning("Redis answers again: limits are shared across replicas again")
        else:
            logger.error(
                "Redis does not answer (%s): budgets %s, rates %s until it does",
                reason,
                self.fallback.describe("budgets"),
                self.fallback.describe("rates"),
            )

    # -- admission ---------------------------------------------------------------------------

    async def admit(self, ask: Ask) -> Admission:
        cost = ask.estimate.cost_usd
        if cost > 0 and self._paused_until > ask.now:
            raise team_paused(self._paused_until, ask.now)
        if not self.breaker.closed:
            return self.fallback.admit(ask, self._plan(ask))
        if ending := [task for task, member in self._sending.items() if member == ask.member]:
            await asyncio.wait(ending, timeout=DECISION_TIMEOUT)
        periods = {window: period(window, ask.now, self.zone) for window in WINDOWS}
        payload = self._payload(ask, periods)
        self._watched.add(_field(("member", ask.member)))
        try:
            async with asyncio.timeout(DECISION_TIMEOUT):
                result = await self._call("ADMIT", payload)
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.failed(_reason(exc), self.clock())
            return self.fallback.admit(ask, self._plan(ask))
        if result[0] == "seed":
            await self._rebuild(next(p for p in periods.values() if p.key == result[1]))
            return await self.admit(ask)
        return self._admitted(ask, payload, periods, result)

    def _plan(self, ask: Ask) -> tuple[Plan, ...]:
        plan = self._plans.get(ask.limits)
        if plan is None:
            plan = self._plans[ask.limits] = plan_budgets(ask.limits, self.rules)
        return plan

    def _payload(self, ask: Ask, periods: dict[Window, Period]) -> dict[str, Any]:
        limits, windows = ask.limits, list(periods)
        budgets = []
        for p in self._plan(ask):
            if p.kind == "end_user" and ask.end_user is None:
                continue
            scope: Scope = ("member", ask.member) if p.kind == "member" else ("team",)
            field = "@eu" if p.kind == "end_user" else _field(scope)
            budgets.append([windows.index(p.window) + 1, field, nanos(p.amount), p.limit, p.code])
        payload: dict[str, Any] = {
            "id": ask.request_id,
            "m": ask.member,
            "now": ask.now,
            "ttl": self.lease_ttl,
            "cost": nanos(ask.estimate.cost_usd, up=True),
            "periods": [
                {"k": p.key, "expires": math.ceil(p.end) + KEEP_SECONDS} for p in periods.values()
            ],
            "budgets": [b[:3] for b in budgets],
            "rates": [],
        }
        payload["_budgets"] = budgets
        if ask.end_user is not None:
            payload["eu"] = {
                "own": _field(("end_user", ask.member, ask.end_user)),
                "over": _field(("end_user", ask.member, memory.OVERFLOW_END_USER)),
                "max": memory.MAX_END_USERS,
            }
        if limits.max_concurrent_requests is not None:
            payload["conc"] = limits.max_concurrent_requests
        if limits.requests_per_minute is not None:
            payload["rates"].append(["requests", limits.requests_per_minute, 1])
        if limits.tokens_per_minute is not None:
            payload["rates"].append(["tokens", limits.tokens_per_minute, ask.estimate.tokens])
        if self.rules.min_balance_usd is not None and self._balance is not None:
            payload["floor"] = nanos(self.rules.min_balance_usd)
            payload["balance"] = self._balance
        return payload

    def _admitted(
        self, ask: Ask, payload: dict[str, Any], periods: dict[Window, Period], result: list[Any]
    ) -> Admission:
        verdict = result[0]
        cost = ask.estimate.cost_usd
        if verdict == "budget":  # which one, and the counter it read (an end user's own or shared)
            window_index, _, amount, limit, code = payload["_budgets"][int(result[1]) - 1]
            window = list(periods)[window_index - 1]
            scope = _scope(result[4])
            raise over_budget(
                limit=limit,
                code=code,
                whose=whose(scope),
                budget=usd(amount),
                spent=usd(result[2]),
                reserved=usd(result[3]),
                cost=cost,
                resets=periods[window].end,
                now=ask.now,
            )
        if verdict == "floor":
            assert self.rules.min_balance_usd is not None and self._balance is not None
            raise below_floor(self.rules.min_balance_usd, usd(self._balance), usd(result[1]), cost)
        if verdict == "concurrency":
            assert ask.limits.max_concurrent_requests is not None
            raise too_many_at_once(ask.limits.max_concurrent_requests)
        if verdict == "rate":
            kind = result[1]
            limit, needed = next((r[1], r[2]) for r in payload["rates"] if r[0] == kind)
            name = "requests_per_minute" if kind == "requests" else "tokens_per_minute"
            if result[2] == "never":
                raise rate_limited(kind, name, limit, 0, needed, wait=None)
            level = float(result[2])
            raise rate_limited(
                kind, name, limit, limit - level, needed, (needed - level) * 60 / limit
            )
        holds = [(key, _scope(field)) for key, field in json.loads(result[1] or "[]") or []]
        headers: dict[str, str] = {}
        for kind, level_text in zip(result[3::2], result[4::2], strict=True):
            limit = next(r[1] for r in payload["rates"] if r[0] == kind)
            level = float(level_text)
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(math.floor(level), 0))
            headers[f"x-ratelimit-reset-{kind}"] = go_duration((limit - level) * 60 / limit)
        if result[2] is not None and result[2] is not False:
            headers["x-gateway-budget-remaining-usd"] = f"{max(usd(result[2]), Decimal(0)):.6f}"
        admission = Admission(
            ask=ask,
            periods={w: p.key for w, p in periods.items()},
            holds=holds,
            headers=headers,
            shared=True,
        )
        self._active[ask.request_id] = admission
        self._reserved_here += cost
        return admission

    async def _rebuild(self, p: Period) -> None:
        """The period's spend counters from the ledger, set only if no replica did first."""
        task = self._rebuilds.get(p.key)
        if task is None:
            task = self._rebuilds[p.key] = asyncio.create_task(self._rebuild_now(p))
            task.add_done_callback(lambda _: self._rebuilds.pop(p.key, None))
        await asyncio.shield(task)

    async def _rebuild_now(self, p: Period) -> None:
        rows = await self._spend(p.start) if self._spend is not None else []
        fields: dict[str, int] = collections.defaultdict(int)
        end_users = set()
        for member, end_user, cost in rows:
            amount = nanos(cost)
            eu = _field(("end_user", member, end_user or ""))
            end_users.add(eu)
            for field in (_field(("member", member)), "t", eu):
                fields[field] += amount
        payload = {"k": p.key, "expires": math.ceil(p.end) + KEEP_SECONDS, "fields": fields}
        payload["end_users"] = sorted(end_users)[: memory.MAX_END_USERS]
        if await self._call("REBUILD", payload):
            logger.info("budget counters of %s rebuilt from the ledger (%d rows)", p.key, len(rows))

    # -- the end of a request ----------------------------------------------------------------

    def settle(self, admission: Admission, cost_usd: Decimal, tokens: int | None) -> None:
        if not admission.shared:
            self.fallback.settle(admission, cost_usd, tokens)
            return
        if admission.ended:
            return
        admission.ended = True
        ask = admission.ask
        self._active.pop(ask.request_id, None)
        self._reserved_here -= ask.estimate.cost_usd
        expires = {
            key: math.ceil(period(window, ask.now, self.zone).end) + KEEP_SECONDS
            for window, key in admission.periods.items()
        }
        payload: dict[str, Any] = {
            "id": ask.request_id,
            "m": ask.member,
            "cost": nanos(cost_usd),
            "holds": [[key, _field(scope)] for key, scope in admission.holds],
            "expires": expires,
        }
        limit = ask.limits.tokens_per_minute
        if limit is not None and tokens is not None:
            payload["tokens"] = [limit, ask.estimate.tokens - tokens]
        task = asyncio.get_running_loop().create_task(self._send(payload))
        self._sending[task] = ask.member
        task.add_done_callback(self._sent)

    def release(self, admission: Admission) -> None:
        self.settle(admission, Decimal(0), 0)

    def _sent(self, task: asyncio.Task[None]) -> None:
        del self._sending[task]

    async def _send(self, payload: dict[str, Any]) -> None:
        if self.breaker.closed:
            try:
                async with asyncio.timeout(DECISION_TIMEOUT):
                    await self._call("SETTLE", payload)
                return
            except (RedisError, OSError, TimeoutError) as exc:
                self.breaker.failed(_reason(exc), self.clock())
        if len(self._unsettled) >= MAX_UNSETTLED:
            self._unsettled.popleft()
        self._unsettled.append(payload)

    async def _flush_unsettled(self) -> None:
        while self._unsettled and self.breaker.closed:
            payload = self._unsettled[0]
            try:
                await self._call("SETTLE", payload)
            except (RedisError, OSError, TimeoutError) as exc:
                self.breaker.failed(_reason(exc), self.clock())
                return
            self._unsettled.popleft()

    # -- what the ledger and NanoGPT say -----------------------------------------------------

    def seed(
        self, window: Window, now: float, spent: list[tuple[str, str | None, Decimal]]
    ) -> None:
        """For the fallback only: Redis rebuilds its counters from the ledger when it lacks
        them."""
        self.local.seed(window, now, spent)

    def balance_polled(self, usd_balance: float) -> None:
        self._balance = nanos(Decimal(repr(usd_balance)))
        self.local.balance_polled(usd_balance)

    def reconfigure(self, rules: LimitRules) -> None:
        self.local.reconfigure(rules)
        self.rules = self.local.rules
        self._plans.clear()

    def pause_team(self, until: float) -> None:
        self._paused_until = max(self._paused_until, until)
        self.local.pause_team(until)

    # -- reading -----------------------------------------------------------------------------

    def reserved_usd(self) -> Decimal:
        """What this replica's requests in flight reserve (Prometheus sums the replicas)."""
        return self._reserved_here + self.local.reserved_usd()

    def in_flight(self) -> int:
        return len(self._active) + self.local.in_flight()

    def spent(self, member: str | None, window: Window, now: float) -> tuple[Decimal, Decimal]:
        """As Redis said at its last reading (within `TICK`); a member asked about is read
        from then on."""
        field = "t" if member is None else _field(("member", member))
        self._watched.add(field)
        key = self._watch(period(window, now, self.zone))
        return self._cache.get((key, field), (Decimal(0), Decimal(0)))

    def _watch(self, p: Period) -> str:
        """Read `p`'s counters from now on (the last few periods asked about)."""
        if p.key not in self._periods:
            self._periods[p.key] = p
            while len(self._periods) > 2 * len(WINDOWS):
                del self._periods[next(iter(self._periods))]
        return p.key

    async def _read_counters(self, *, everyone: bool = False) -> None:
        """The watched members' and the team's counters (`everyone`: all of them)."""
        if not self.breaker.closed:
            return
        now = self.clock()
        for window in WINDOWS:
            self._watch(period(window, now, self.zone))
        periods = list(self._periods.values())
        keys = [p.key for p in periods]
        try:
            for p in periods:
                spent = f"{self.prefix}spent:{p.key}"
                if self._spend is not None and not await self.client.exists(spent):
                    await self._rebuild(p)  # Redis lost it, or never had it: from the ledger
                if everyone:
                    found: list[str] = await self.client.hkeys(spent)  # type: ignore[assignment]
                    self._watched.update(f for f in found if f.startswith("m:"))
            fields = sorted(self._watched)
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(f"{self.prefix}spent:{key}", fields)
                    pipe.hmget(f"{self.prefix}reserved:{key}", fields)
                answers = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.failed(_reason(exc), now)
            return
        for i, key in enumerate(keys):
            spent, reserved = answers[2 * i], answers[2 * i + 1]
            for field, s, r in zip(fields, spent, reserved, strict=True):
                self._cache[(key, field)] = (usd(s), max(usd(r), Decimal(0)))

    async def _call(self, name: str, payload: dict[str, Any]) -> Any:
        document = {k: v for k, v in payload.items() if not k.startswith("_")}
        document["p"] = self.prefix
        return await self._scripts[name](args=[json.dumps(document, separators=(",", ":"))])


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {SOCKET_TIMEOUT} s"
    return f"{type(exc).__name__}: {exc}"[:200]
