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
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from gateway.budgets import WINDOWS, Period, Window, period
from gateway.limits import scripts, wire
from gateway.limits.base import Admission, Ask, Plan, Spend, plan_budgets, team_paused
from gateway.limits.breaker import Breaker
from gateway.limits.fallback import Fallback
from gateway.limits.wire import field_of, nanos, usd
from gateway.types import LimitRules

logger = logging.getLogger("gateway.limits")

SOCKET_TIMEOUT = 0.25
"""Seconds for one Redis command or connection: a Redis that does not answer costs a decision
at most this (twice, with a reconnect), never a hung request."""
DECISION_TIMEOUT = 0.8
"""Seconds a decision may wait on Redis in all (the issue's bound is 1 s)."""
MAX_CONNECTIONS = 32
SHUTDOWN_SECONDS = 5.0
TICK = 1.0
"""Seconds between the background loop's rounds: shared counters read for `spent`, queued
settles retried, a probe while Redis is away."""
MAX_UNSETTLED = 100_000
PREFIX = "nanogpt-gateway:{limits}:"


def connect(url: str, password: str | None) -> aioredis.Redis:
    """A client whose every command answers or fails within `SOCKET_TIMEOUT` (`_try` tries a
    decision twice; the breaker decides when to try again after that). Its pool is bounded: a
    burst of decisions shares `MAX_CONNECTIONS` warm connections instead of opening one each."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        password=password or None,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
        max_connections=MAX_CONNECTIONS,
        timeout=DECISION_TIMEOUT / 2,
    )
    return aioredis.Redis(connection_pool=pool)


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
        self._outbox: list[dict[str, Any]] = []
        """Settles of this turn of the event loop, sent together (one round trip)."""
        self._sending: dict[str, asyncio.Future[None]] = {}
        """Each member's settles on their way to Redis, as the batch that carries the latest:
        a member's next request waits for it, so finishing one request frees its slot for
        the next."""
        self._batch: asyncio.Future[None] | None = None
        self._asking: list[tuple[dict[str, Any], asyncio.Future[Any]]] = []
        """Admissions of this turn of the event loop, sent together."""
        self._answering: set[asyncio.Task[None]] = set()
        self._current: dict[Window, Period] = {}
        self._rebuilds: dict[str, asyncio.Task[bool]] = {}
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
        """Stop the background rounds, hand Redis what is queued (within `SHUTDOWN_SECONDS`:
        a Redis that hangs must not hold up the process's exit), close the client."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_SECONDS):
                await self._sent_all()
                await self._flush_unsettled()
        if self._unsettled:
            logger.warning(
                "%d settled requests did not reach Redis before shutdown; the ledger has "
                "them, and Redis counts them again only if it loses this period",
                len(self._unsettled),
            )
        await self.client.aclose(close_connection_pool=True)  # connect() made the pool

    async def settled(self) -> None:
        await self._sent_all()
        if self.breaker.closed:
            await self._flush_unsettled()
            await self._read_counters(everyone=True)

    async def _sent_all(self) -> None:
        """Wait for the admissions and settles on their way to Redis."""
        while self._sending or self._answering:
            waiting = [*self._sending.values(), *self._answering]
            await asyncio.gather(*waiting, return_exceptions=True)

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
        if (ending := self._sending.get(ask.member)) is not None:
            await asyncio.shield(ending)  # bounded: a batch is sent within DECISION_TIMEOUT
        periods = self._periods_at(ask.now)
        floor = self.rules.min_balance_usd
        sent = wire.admit_document(
            ask,
            periods,
            self._plan(ask),
            lease_ttl=self.lease_ttl,
            floor=floor,
            balance=self._balance,
        )
        self._watched.add(field_of(("member", ask.member)))
        for _ in range(3):  # a counter missing: rebuilt from the ledger, then asked again
            answer = await self._admit_batched(sent.document)
            if answer is None:
                self._abandon(ask)
                return self.fallback.admit(ask, self._plan(ask))
            if answer[0] != "seed":
                break
            if not await self._rebuild(next(p for p in periods.values() if p.key == answer[1])):
                break
        if answer[0] in ("seed", "gone"):  # the budgets cannot be known: as if Redis were away
            return self.fallback.admit(ask, self._plan(ask))
        admission = wire.admission_from(sent, answer, floor=floor)
        if ask.request_id not in self._active:
            self._reserved_here += ask.estimate.cost_usd
        self._active[ask.request_id] = admission
        return admission

    async def _admit_batched(self, document: dict[str, Any]) -> Any:
        """ADMIT's answer (`None` when Redis failed), sent with the other admissions of this
        turn of the event loop in one pipeline."""
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[Any] = loop.create_future()
        self._asking.append((document, answered))
        if len(self._asking) == 1:
            loop.call_soon(self._send_asks)
        return await answered

    def _send_asks(self) -> None:
        asking, self._asking = self._asking, []
        task = asyncio.get_running_loop().create_task(self._answer(asking))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(self, asking: list[tuple[dict[str, Any], asyncio.Future[Any]]]) -> None:
        answers = await self._try_all("ADMIT", [document for document, _ in asking])
        for i, (document, answered) in enumerate(asking):
            answer = None if answers is None else answers[i]
            if isinstance(answer, Exception):  # the script refused it: as if Redis were away
                logger.error("Redis refused the admission of %s: %s", document["id"], answer)
                answer = None
            if not answered.cancelled():
                answered.set_result(answer)
            elif answer is not None and answer[0] == "ok":  # its request left meanwhile
                self._queue_release(document["id"], document["m"])

    def _abandon(self, ask: Ask) -> None:
        """A decision given up on may still run in Redis once it answers (a hung Redis reads
        it later): release it then, so its reservation and slot do not wait for the lease to
        expire; and should the release arrive first, ADMIT refuses the id as ended."""
        self._queue_release(ask.request_id, ask.member)

    def _queue_release(self, request_id: str, member: str) -> None:
        self._queue({"id": request_id, "m": member, "cost": 0, "holds": [], "expires": {}})

    def _plan(self, ask: Ask) -> tuple[Plan, ...]:
        plan = self._plans.get(ask.limits)
        if plan is None:
            plan = self._plans[ask.limits] = plan_budgets(ask.limits, self.rules)
        return plan

    async def _rebuild(self, p: Period) -> bool:
        """The period's spend counters from the ledger, set only if no replica did first;
        false if the ledger or Redis could not be read (said in the log)."""
        task = self._rebuilds.get(p.key)
        if task is None:
            task = self._rebuilds[p.key] = asyncio.create_task(self._rebuild_now(p))
            task.add_done_callback(lambda _: self._rebuilds.pop(p.key, None))
        return await asyncio.shield(task)

    async def _rebuild_now(self, p: Period) -> bool:
        try:
            rows = await self._spend(p.start) if self._spend is not None else []
        except Exception as exc:  # the injected reader's own error (LedgerError in the app)
            logger.warning("budget counters of %s cannot be rebuilt: %s", p.key, exc)
            return False
        done = await self._try("REBUILD", wire.rebuild_document(p, rows))
        if done:  # 0: another replica was first
            logger.info("budget counters of %s rebuilt from the ledger (%d rows)", p.key, len(rows))
        return done is not None

    # -- the end of a request ----------------------------------------------------------------

    def settle(self, admission: Admission, cost_usd: Decimal, tokens: int | None) -> None:
        if not admission.shared:
            self.fallback.settle(admission, cost_usd, tokens)
            return
        if admission.ended:
            return
        admission.ended = True
        ask = admission.ask
        if self._active.pop(ask.request_id, None) is not None:  # reserved by this replica
            self._reserved_here -= ask.estimate.cost_usd
        periods = self._periods_at(ask.now)
        self._outbox.append(wire.settle_document(admission, cost_usd, tokens, periods))
        if self._batch is None:  # the first settle of this turn: send them all next turn
            self._batch = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._send_batch)
        self._sending[ask.member] = self._batch

    def release(self, admission: Admission) -> None:
        self.settle(admission, Decimal(0), 0)

    def _periods_at(self, now: float) -> dict[Window, Period]:
        """The day and month around `now`, worked out again only when the day changes."""
        day = self._current.get("day")
        if day is not None and day.start <= now < day.end:
            return self._current
        periods = {window: period(window, now, self.zone) for window in WINDOWS}
        if day is None or now >= day.end:  # not for a request from before the change
            self._current = periods
        return periods

    def _send_batch(self) -> None:
        batch, done, self._outbox, self._batch = self._outbox, self._batch, [], None
        assert done is not None
        task = asyncio.get_running_loop().create_task(self._settle_all(batch))
        task.add_done_callback(lambda _: self._batch_sent(done))

    def _batch_sent(self, done: asyncio.Future[None]) -> None:
        done.set_result(None)
        for member in [m for m, batch in self._sending.items() if batch is done]:
            del self._sending[member]

    async def _settle_all(self, batch: list[dict[str, Any]]) -> None:
        """Every settle of `batch` in one round trip; while Redis does not answer, they wait
        in `_unsettled` for the next round."""
        answers = await self._try_all("SETTLE", batch) if self.breaker.closed else None
        if answers is None:
            for document in batch:
                self._queue(document)
            return
        for document, answer in zip(batch, answers, strict=True):
            if isinstance(answer, Exception):  # the script refused it: sent again, it would be too
                logger.error("Redis refused the settle of request %s: %s", document["id"], answer)

    def _queue(self, payload: dict[str, Any]) -> None:
        """A settle for when Redis answers again (the oldest dropped past `MAX_UNSETTLED`)."""
        if len(self._unsettled) >= MAX_UNSETTLED:
            self._unsettled.popleft()
        self._unsettled.append(payload)

    async def _flush_unsettled(self) -> None:
        while self._unsettled and self.breaker.closed:
            batch = [self._unsettled.popleft() for _ in range(min(500, len(self._unsettled)))]
            await self._settle_all(batch)

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
        field = "t" if member is None else field_of(("member", member))
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
            async with asyncio.timeout(DECISION_TIMEOUT):
                answers, fields = await self._counters(periods, everyone)
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.failed(_reason(exc), now)
            return
        for i, key in enumerate(keys):
            spent, reserved = answers[2 * i], answers[2 * i + 1]
            for name, s, r in zip(fields, spent, reserved, strict=True):
                self._cache[(key, name)] = (usd(s), max(usd(r), Decimal(0)))

    async def _counters(self, periods: list[Period], everyone: bool) -> tuple[list[Any], list[str]]:
        """The watched counters of `periods` (spent, reserved), rebuilding a lost one first."""
        for p in periods:
            spent = f"{self.prefix}spent:{p.key}"
            if self._spend is not None and not await self.client.exists(spent):
                await self._rebuild(p)  # Redis lost it, or never had it: from the ledger
            if everyone:
                found: list[str] = await self.client.hkeys(spent)  # type: ignore[assignment]
                self._watched.update(f for f in found if f.startswith("m:"))
        fields = sorted(self._watched)
        async with self.client.pipeline(transaction=False) as pipe:
            for p in periods:
                pipe.hmget(f"{self.prefix}spent:{p.key}", fields)
                pipe.hmget(f"{self.prefix}reserved:{p.key}", fields)
            return await pipe.execute(), fields

    async def _try(self, name: str, document: dict[str, Any]) -> Any:
        """The script's answer within `DECISION_TIMEOUT`, tried again once (a connection
        dropped or slow under a burst); `None`, with the breaker told, when Redis failed."""
        failure: BaseException | None = None
        try:
            async with asyncio.timeout(DECISION_TIMEOUT):
                for _ in range(2):
                    try:
                        return await self._call(name, document)
                    except (RedisError, OSError) as exc:
                        failure = exc
        except TimeoutError as exc:
            failure = exc
        assert failure is not None
        self.breaker.failed(_reason(failure), self.clock())
        return None

    async def _try_all(self, name: str, documents: list[dict[str, Any]]) -> list[Any] | None:
        """`_try` for several documents in one pipeline: each one's answer (an exception for
        one Redis refused), or `None`, with the breaker told, when Redis failed."""
        script = self._scripts[name]
        arguments = [json.dumps({**d, "p": self.prefix}, separators=(",", ":")) for d in documents]
        failure: BaseException | None = None
        try:
            async with asyncio.timeout(DECISION_TIMEOUT):
                for _ in range(2):
                    try:
                        async with self.client.pipeline(transaction=False) as pipe:
                            for argument in arguments:
                                pipe.evalsha(script.sha, 0, argument)
                            answers: list[Any] = await pipe.execute(raise_on_error=False)
                        if not any(isinstance(a, NoScriptError) for a in answers):
                            return answers
                        await self.client.script_load(script.script)  # Redis restarted
                    except (RedisError, OSError) as exc:
                        failure = exc
        except TimeoutError as exc:
            failure = exc
        self.breaker.failed(_reason(failure or TimeoutError()), self.clock())
        return None

    async def _call(self, name: str, document: dict[str, Any]) -> Any:
        """One script, its document (`wire`) under this limiter's key prefix."""
        argument = json.dumps({**document, "p": self.prefix}, separators=(",", ":"))
        return await self._scripts[name](args=[argument])


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {SOCKET_TIMEOUT} s"
    return f"{type(exc).__name__}: {exc}"[:200]
