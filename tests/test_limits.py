"""Every limiter backend (in-process, and shared through a real Redis): every limit checked and
reserved in one step, all or nothing, and settled once. Each test runs on both and ends with
nothing in flight and nothing reserved."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.budgets import WINDOWS, Window, period
from gateway.errors import QuotaExceeded, RateLimited, Refusal
from gateway.limits import Admission, Ask, Limiter, MemoryLimiter
from gateway.limits import memory as memory_module
from gateway.limits import redis as shared
from gateway.limits.base import go_duration
from gateway.limits.fallback import Fallback
from gateway.types import LimitRules, Limits
from tests.limiters import CENT, NOW, Rows, ask, reading


@pytest.fixture(params=["memory", "redis"])
async def make(
    request: pytest.FixtureRequest,
) -> AsyncIterator[MakeLimiter]:
    """`make(ledger=rows, **team_rules)`: a limiter of the parametrised backend under those
    `LimitRules`, starting from what the `ledger` rows say was spent; checked at teardown for
    anything left in flight or reserved."""
    made: list[Limiter] = []

    def make(ledger: Rows = (), **rules: Any) -> Limiter:  # type: ignore[assignment]
        team = LimitRules(**rules)

        spend = reading(ledger)
        if request.param == "memory":
            limiter: Limiter = MemoryLimiter(team)
            for window in WINDOWS:
                since = period(window, NOW, ZoneInfo(team.timezone)).start
                limiter.seed(window, NOW, [(m, e, c) for t, m, e, c in ledger if t >= since])
        else:
            server = request.getfixturevalue("redis")
            fallback = Fallback(MemoryLimiter(team))
            client = shared.connect(server.url, None)
            prefix = f"test-{os.urandom(6).hex()}:{{limits}}:"
            limiter = shared.RedisLimiter(
                team, client, lease_ttl=30, fallback=fallback, spend=spend, prefix=prefix
            )
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:  # whatever a test did, nothing stays held
        await limiter.settled()
        assert limiter.in_flight() == 0
        assert limiter.reserved_usd() == 0
        for window in ("day", "month"):
            assert (await spent(limiter, None, window))[1] == 0
        await limiter.aclose()


MakeLimiter = Callable[..., Limiter]
pytestmark = pytest.mark.anyio


async def refused(limiter: Limiter, request: Ask) -> Refusal:
    with pytest.raises(Refusal) as excinfo:
        await limiter.admit(request)
    return excinfo.value


async def spent(limiter: Limiter, member: str | None, window: Window) -> tuple[Decimal, Decimal]:
    await limiter.settled()
    return limiter.spent(member, window, NOW)


async def test_a_refusal_by_one_limit_consumes_nothing_from_the_others(make: MakeLimiter) -> None:
    limiter = make()
    limits = Limits(requests_per_minute=2, max_concurrent_requests=1)
    first = await limiter.admit(ask(limits))
    second = await refused(limiter, ask(limits))
    assert second.code == "concurrency_limit_exceeded" and second.limit == "max_concurrent_requests"
    assert second.headers["retry-after"] == "1" and second.headers["x-should-retry"] == "true"
    limiter.settle(first, CENT, 100)
    third = await limiter.admit(ask(limits))  # the refused one spent no request of the minute
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    limiter.settle(third, CENT, 100)
    rpm = await refused(limiter, ask(limits))
    assert isinstance(rpm, RateLimited) and rpm.type == "requests"


async def test_requests_per_minute_refill_continuously(make: MakeLimiter) -> None:
    limiter, limits = make(), Limits(requests_per_minute=60)
    for _ in range(60):
        limiter.release(await limiter.admit(ask(limits)))
    error = await refused(limiter, ask(limits))
    assert error.status_code == 429 and error.code == "rate_limit_exceeded"
    assert "Limit 60, Used 60, Requested 1. Please try again in 1s." in error.message
    assert error.headers == {
        "retry-after": "1",
        "retry-after-ms": "1000",
        "x-should-retry": "true",
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1m0s",
    }
    half_a_second_later = await refused(limiter, ask(limits, now=NOW + 0.5))
    assert "try again in 500ms" in half_a_second_later.message
    assert half_a_second_later.headers["retry-after-ms"] == "500"
    admitted = await limiter.admit(ask(limits, now=NOW + 1))
    assert admitted.headers["x-ratelimit-limit-requests"] == "60"
    assert admitted.headers["x-ratelimit-reset-requests"] == "1m0s"
    limiter.release(admitted)


async def test_tokens_per_minute_reserve_the_estimate_and_settle_the_actual(
    make: MakeLimiter,
) -> None:
    limiter, limits = make(), Limits(tokens_per_minute=1000)
    first = await limiter.admit(ask(limits, tokens=800))
    assert first.headers["x-ratelimit-remaining-tokens"] == "200"
    error = await refused(limiter, ask(limits, tokens=300))
    assert error.type == "tokens" and "Limit 1000, Used 800, Requested 300" in error.message
    limiter.settle(first, CENT, 100)  # it used 100 of the 800 reserved: 700 come back
    second = await limiter.admit(ask(limits, tokens=300))
    assert second.headers["x-ratelimit-remaining-tokens"] == "600"
    limiter.settle(second, CENT, None)  # no usage known: the reservation stands
    assert (await refused(limiter, ask(limits, tokens=700))).type == "tokens"


async def test_a_request_larger_than_the_token_limit_can_never_pass(make: MakeLimiter) -> None:
    error = await refused(make(), ask(Limits(tokens_per_minute=1000), tokens=1001))
    assert error.code == "rate_limit_exceeded" and error.headers["x-should-retry"] == "false"
    assert "retry-after" not in error.headers
    assert error.headers["x-ratelimit-limit-tokens"] == "1000"
    assert "can never pass" in error.message


async def test_zero_allows_nothing(make: MakeLimiter) -> None:
    limiter = make()
    nothing = await refused(limiter, ask(Limits(requests_per_minute=0)))
    assert nothing.headers["x-should-retry"] == "false" and "retry-after" not in nothing.headers
    assert (await refused(limiter, ask(Limits(max_concurrent_requests=0)))).headers == {
        "x-should-retry": "false"
    }
    assert (
        await refused(limiter, ask(Limits(budget_usd_daily=Decimal(0))))
    ).code == "member_budget_exceeded"


async def test_a_budget_counts_reservations_in_flight_and_names_itself(make: MakeLimiter) -> None:
    limiter = make(timezone="Europe/Berlin")
    limits = Limits(budget_usd_daily=Decimal("0.05"))
    running = [await limiter.admit(ask(limits, cost="0.02")) for _ in range(2)]
    assert running[1].headers["x-gateway-budget-remaining-usd"] == "0.010000"
    error = await refused(limiter, ask(limits, cost="0.02"))
    assert isinstance(error, QuotaExceeded) and error.type == "insufficient_quota"
    assert (error.code, error.limit) == ("member_budget_exceeded", "budget_usd_daily")
    assert "more than the $0.0100 left of the daily budget of $0.05 of member 'alice'" in (
        error.message
    )
    assert "$0.0400 reserved by requests in flight" in error.message
    assert "resets at 2026-12-06T23:00:00Z" in error.message  # midnight in Berlin
    assert error.headers["x-gateway-budget-reset"] == "2026-12-06T23:00:00Z"
    assert (
        error.headers["retry-after"] == str(11 * 3600)
        and error.headers["x-should-retry"] == "false"
    )
    limiter.settle(running[0], Decimal("0.001"), 10)  # cheaper than reserved: room again
    limiter.settle(running[1], Decimal("0.001"), 10)
    assert await spent(limiter, "alice", "day") == (Decimal("0.002"), Decimal(0))
    limiter.release(await limiter.admit(ask(limits, cost="0.04")))


async def test_free_requests_pass_a_spent_budget(make: MakeLimiter) -> None:
    limiter = make()
    limits = Limits(budget_usd_monthly=CENT)
    limiter.settle(await limiter.admit(ask(limits, cost="0.01")), CENT, 10)
    assert (await refused(limiter, ask(limits, cost="0.0001"))).limit == "budget_usd_monthly"
    limiter.release(await limiter.admit(ask(limits, cost="0")))


async def test_spend_of_yesterday_does_not_count_today_but_counts_this_month(
    make: MakeLimiter,
) -> None:
    limiter = make(timezone="Asia/Tokyo")
    daily = Limits(budget_usd_daily=CENT)
    monthly = Limits(budget_usd_monthly=Decimal("0.015"))
    limiter.settle(await limiter.admit(ask(daily)), CENT, 10)
    assert (await refused(limiter, ask(daily))).limit == "budget_usd_daily"
    tomorrow_in_tokyo = datetime(2026, 12, 7, 0, 0, tzinfo=ZoneInfo("Asia/Tokyo")).timestamp()
    limiter.release(await limiter.admit(ask(daily, now=tomorrow_in_tokyo)))
    assert (
        await refused(limiter, ask(monthly, now=tomorrow_in_tokyo))
    ).limit == "budget_usd_monthly"


async def test_the_team_budget_caps_every_member_together(make: MakeLimiter) -> None:
    limiter = make(team_budget_usd_daily=Decimal("0.03"))
    held = [await limiter.admit(ask(Limits(), member=name)) for name in ("a", "b", "c")]
    error = await refused(limiter, ask(Limits(), member="d"))
    assert (error.code, error.limit) == ("team_budget_exceeded", "team_budget_usd_daily")
    assert error.message.startswith("The team has reached its daily budget of $0.03")
    for admission in held:
        limiter.release(admission)


async def test_a_new_end_user_is_created_once_even_by_concurrent_first_requests(
    make: MakeLimiter,
) -> None:
    limiter = make()
    limits = Limits(end_user_budget_usd_daily=Decimal("0.03"))
    first = await limiter.admit(ask(limits, cost="0.02", end_user="eve"))
    error = await refused(limiter, ask(limits, cost="0.02", end_user="eve"))
    assert error.code == "end_user_budget_exceeded" and "end user 'eve'" in error.message
    other = await limiter.admit(ask(limits, cost="0.02", end_user="mallory"))
    for admission in (first, other):
        limiter.release(admission)


async def test_end_users_beyond_the_bound_share_one_budget(
    make: MakeLimiter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_module, "MAX_END_USERS", 2)
    limiter = make()
    limits = Limits(end_user_budget_usd_daily=Decimal("0.03"))
    for name in ("u1", "u2"):
        limiter.settle(
            await limiter.admit(ask(limits, cost="0.02", end_user=name)), Decimal("0.02"), 1
        )
    limiter.settle(await limiter.admit(ask(limits, cost="0.02", end_user="u3")), Decimal("0.02"), 1)
    error = await refused(
        limiter, ask(limits, cost="0.02", end_user="u4")
    )  # u3 spent the shared one
    assert "(other end users)" in error.message, error.message


async def test_the_balance_floor_counts_what_is_in_flight(make: MakeLimiter) -> None:
    limiter = make(min_balance_usd=Decimal(5))
    before_the_first_poll = await limiter.admit(ask(Limits(), cost="100"))
    limiter.release(before_the_first_poll)
    limiter.balance_polled(5.05)
    held = await limiter.admit(ask(Limits(), cost="0.03"))
    error = await refused(limiter, ask(Limits(), cost="0.03"))
    assert (error.code, error.type, error.limit) == (
        "balance_floor_reached",
        "insufficient_quota",
        "min_balance_usd",
    )
    assert error.headers == {"x-should-retry": "false"}
    limiter.release(await limiter.admit(ask(Limits(), cost="0")))  # free models still go
    limiter.release(held)


async def test_nanogpts_daily_limit_pauses_what_costs_money(make: MakeLimiter) -> None:
    limiter = make()
    limiter.pause_team(NOW + 90)
    error = await refused(limiter, ask(Limits()))
    assert error.code == "team_daily_limit_exceeded" and error.headers["retry-after"] == "90"
    limiter.release(await limiter.admit(ask(Limits(), cost="0")))
    limiter.release(await limiter.admit(ask(Limits(), now=NOW + 90)))


async def test_settling_twice_counts_once(make: MakeLimiter) -> None:
    limiter = make()
    admission = await limiter.admit(ask(Limits()))
    limiter.settle(admission, CENT, 10)
    limiter.settle(admission, CENT, 10)
    limiter.release(admission)
    assert await spent(limiter, "alice", "day") == (CENT, Decimal(0))
    assert await spent(limiter, None, "month") == (CENT, Decimal(0))


async def test_a_hundred_concurrent_reservations_never_pass_the_budget(make: MakeLimiter) -> None:
    limiter = make()
    limits = Limits(budget_usd_daily=Decimal("1.00"))
    admitted: list[Admission] = []
    for i in range(100):
        with contextlib.suppress(QuotaExceeded):
            admitted.append(await limiter.admit(ask(limits, cost="0.03", request_id=str(i))))
    assert len(admitted) == 33
    for admission in admitted:  # each costs what it reserved: the worst case with max_tokens
        limiter.settle(admission, Decimal("0.03"), 10)
    assert (await spent(limiter, "alice", "day"))[0] == Decimal("0.99")


async def test_the_ledger_seeds_what_was_spent_before_a_restart(make: MakeLimiter) -> None:
    yesterday = NOW - 86400
    limiter = make(
        ledger=[
            (NOW - 60, "alice", None, Decimal("0.6")),
            (NOW - 60, "alice", "eve", Decimal("0.3")),
            (yesterday, "alice", None, Decimal("5")),  # another day, same month
        ]
    )
    limits = Limits(budget_usd_daily=Decimal(1), end_user_budget_usd_daily=Decimal("0.35"))
    assert await spent(limiter, "alice", "day") == (Decimal("0.9"), Decimal(0))
    assert (await refused(limiter, ask(limits, cost="0.2"))).limit == "budget_usd_daily"
    assert (await refused(limiter, ask(limits, cost="0.06", end_user="eve"))).limit == (
        "end_user_budget_usd_daily"
    )
    limiter.release(await limiter.admit(ask(limits, cost="0.05", end_user="eve")))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.012, "12ms"), (0.0001, "1ms"), (1, "1s"), (59.2, "1m0s"), (360, "6m0s"), (3723, "1h2m3s")],
)
def test_durations_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


async def test_a_request_too_big_for_what_is_left_says_so(make: MakeLimiter) -> None:
    """As Claude Code's 64,000-token asks meet a fresh budget: nothing is spent, the request's
    worst case alone is more than the budget."""
    limiter = make()
    error = await refused(limiter, ask(Limits(budget_usd_daily=Decimal(3)), cost="4.8511"))
    assert error.code == "member_budget_exceeded"
    assert error.message.startswith("This request may cost up to $4.8511 (its max_tokens")
    assert "more than the $3.0000 left of the daily budget of $3.00 of member 'alice'" in (
        error.message
    )
    assert "fewer tokens (max_tokens)" in error.message


async def test_a_free_request_ends_or_expires_without_taking_the_limits_down(
    make: MakeLimiter,
) -> None:
    """A free model's request reserves $0; giving that back (at its end, or when its lease
    expires) must not break the counters for everyone else."""
    limiter = make()
    budget = Limits(budget_usd_daily=Decimal(1))
    limiter.release(await limiter.admit(ask(budget, cost="0")))
    limiter.settle(await limiter.admit(ask(budget)), CENT, 10)
    forgotten = await limiter.admit(ask(budget, cost="0"))  # its replica never ends it
    after_its_lease = NOW + 60
    limiter.settle(await limiter.admit(ask(budget, now=after_its_lease)), CENT, 10)
    limiter.release(forgotten)
    assert await spent(limiter, "alice", "day") == (2 * CENT, Decimal(0))
