"""What a limiter is to the gateway, whatever keeps its counters: one atomic `admit` that
checks and reserves every limit that applies (or reserves nothing and raises the refusal), and
`settle` / `release` when the request ends. Also the refusals and headers every backend gives,
in the shapes OpenAI's SDKs understand. No storage library here.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import NamedTuple, Protocol

from gateway.budgets import WINDOWS, Estimate, Window, budget_key, budget_of
from gateway.errors import QuotaExceeded, RateLimited
from gateway.types import LimitRules, Limits

LIMIT_NAMES = (
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent_requests",
    "budget_usd_daily",
    "budget_usd_monthly",
    "end_user_budget_usd_daily",
    "end_user_budget_usd_monthly",
    "team_budget_usd_daily",
    "team_budget_usd_monthly",
    "min_balance_usd",
    "nanogpt_balance",
    "nanogpt_daily_limit",
    "limits_unavailable",
)
"""Every limit a request can be refused by: the metric's `limit` label and the ledger's."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ask:
    """One request asking to be admitted: who, for whom, and what it is reserved at."""

    request_id: str
    member: str
    limits: Limits
    end_user: str | None
    estimate: Estimate
    now: float

    @property
    def costs_money(self) -> bool:
        return self.estimate.cost_usd > 0


@dataclass(slots=True, kw_only=True)
class Admission:
    """What `admit` reserved for one request, and the headers its answer carries."""

    ask: Ask
    periods: dict[Window, str]
    """The budget windows the reservation was made in (`day:2026-12-06`, `month:2026-12`)."""
    holds: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    """Where the reservation sits: (period, whose) pairs, in the backend's terms."""
    headers: dict[str, str] = field(default_factory=dict)
    ended: bool = False
    shared: bool = False
    """Held in the shared backend (not counted by this replica alone)."""


Spend = Callable[[float], Awaitable[list[tuple[str, str | None, Decimal]]]]
"""What the ledger says each (member, end user) spent since a time: a shared backend rebuilds a
lost counter from it."""

Scope = tuple[str, ...]
"""Whose spend: `("member", name)`, `("end_user", member, end user)`, or `("team",)`."""


class Plan(NamedTuple):
    """One budget that bounds a request: in which window, whose (`member`, `end_user`,
    `team`), how much, and the limit's name and refusal code."""

    window: Window
    kind: str
    amount: Decimal
    limit: str
    code: str


def plan_budgets(limits: Limits, rules: LimitRules) -> tuple[Plan, ...]:
    """Which budgets bound a member with these `limits`, with the team's `rules`."""
    found = []
    for window in WINDOWS:
        for kind, owner, prefix, code in (
            ("member", limits, "", "member_budget_exceeded"),
            ("end_user", limits, "end_user_", "end_user_budget_exceeded"),
            ("team", rules, "team_", "team_budget_exceeded"),
        ):
            amount = budget_of(owner, window, prefix)
            if amount is not None:
                found.append(Plan(window, kind, amount, budget_key(window, prefix), code))
    return tuple(found)


def whose(scope: Scope) -> str:
    """A scope as a refusal names it."""
    if scope[0] == "team":
        return "The team"
    if scope[0] == "member":
        return f"Member {scope[1]!r}"
    return f"End user {scope[2]!r} of member {scope[1]!r}"


class Limiter(Protocol):
    """Counters for every limit. `admit` is all-or-nothing; `settle` and `release` run when a
    request ends (in `Tally.finish`, before any await) and are idempotent per admission, so
    they never block: a backend that needs I/O queues the work."""

    async def start(self) -> None:
        """Begin background work (renewing leases, reading shared counters), if any."""

    async def aclose(self) -> None:
        """Hand over what is queued and stop; nothing is lost while the backend answers."""

    async def settled(self) -> None:
        """Wait until every `settle` and `release` so far has reached the counters `spent`
        reads (for tests and reports; the request path never waits)."""

    async def admit(self, ask: Ask) -> Admission: ...

    def settle(self, admission: Admission, cost_usd: Decimal, tokens: int | None) -> None:
        """The request ended having cost `cost_usd` and used `tokens` (`None`: unknown, the
        reservation's stand)."""

    def release(self, admission: Admission) -> None:
        """The request ended without reaching NanoGPT: nothing spent."""

    def seed(
        self, window: Window, now: float, spent: list[tuple[str, str | None, Decimal]]
    ) -> None:
        """What the ledger says was spent in the `window` around `now`, per (member, end
        user): a restart forgets nothing."""

    def balance_polled(self, usd: float) -> None: ...

    def reconfigure(self, rules: LimitRules) -> None:
        """A reloaded config's team rules (its time zone stays: counters are kept by it)."""

    def pause_team(self, until: float) -> None:
        """NanoGPT refused the team key's daily limit: refuse what costs money until then."""

    def reserved_usd(self) -> Decimal:
        """Everything reserved by requests in flight, all members together."""

    def in_flight(self) -> int:
        """Requests admitted and not yet settled or released."""

    def spent(self, member: str | None, window: Window, now: float) -> tuple[Decimal, Decimal]:
        """(settled, reserved in flight) in the current `window` for `member`, or for the
        whole team when `member` is `None`."""


def go_duration(seconds: float) -> str:
    """A duration as OpenAI's rate-limit headers write it (Go's `time.Duration`): `1s`,
    `6m0s`, `12ms`, `1h2m3s`."""
    if seconds < 1:
        return f"{max(math.ceil(seconds * 1000), 0)}ms"
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rfc3339(instant: float) -> str:
    return datetime.fromtimestamp(instant, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def rate_limited(
    kind: str, name: str, limit: int, used: float, requested: int, wait: float | None
) -> RateLimited:
    """A per-minute limit's refusal; `wait=None` when this request can never pass."""
    unit = "requests" if kind == "requests" else "tokens"
    counts = f"Limit {limit}, Used {math.ceil(used)}, Requested {requested}."
    if wait is None:
        message = (
            f"This request needs {requested} {unit} but the limit ({name}) is {limit} per "
            f"minute, so it can never pass; ask for fewer (max_tokens) or a higher limit. {counts}"
        )
        headers = {"x-should-retry": "false"}
    else:
        message = (
            f"Rate limit reached for {unit} per minute ({name}). {counts} "
            f"Please try again in {go_duration(wait)}."
        )
        headers = {
            "retry-after": str(max(math.ceil(wait), 1)),
            "retry-after-ms": str(max(math.ceil(wait * 1000), 1)),
            "x-should-retry": "true",
        }
    headers |= {
        f"x-ratelimit-limit-{unit}": str(limit),
        f"x-ratelimit-remaining-{unit}": str(max(limit - math.ceil(used), 0)),
        f"x-ratelimit-reset-{unit}": go_duration(used * 60 / limit) if limit else "0s",
    }
    return RateLimited(message, limit=name, type=unit, headers=headers)


def too_many_at_once(limit: int) -> RateLimited:
    if limit == 0:
        return RateLimited(
            "This member may not send requests (max_concurrent_requests = 0).",
            limit="max_concurrent_requests",
            code="concurrency_limit_exceeded",
            headers={"x-should-retry": "false"},
        )
    return RateLimited(
        f"Too many requests at once: this member may have {limit} in flight "
        "(max_concurrent_requests); try again when one has finished.",
        limit="max_concurrent_requests",
        code="concurrency_limit_exceeded",
        headers={"retry-after": "1", "retry-after-ms": "1000", "x-should-retry": "true"},
    )


def over_budget(
    *,
    limit: str,
    code: str,
    whose: str,
    budget: Decimal,
    spent: Decimal,
    reserved: Decimal,
    cost: Decimal,
    resets: float,
    now: float,
) -> QuotaExceeded:
    """A budget's refusal: which budget, how much, what was spent, when it resets."""
    window = "daily" if limit.endswith("daily") else "monthly"
    in_flight = f" (and ${reserved:.4f} reserved by requests in flight)" if reserved else ""
    left = budget - spent - reserved
    if left > 0:  # the budget has room, but not for this request's worst case
        message = (
            f"This request may cost up to ${cost:.4f} (its max_tokens at the model's price), "
            f"more than the ${left:.4f} left of the {window} budget of ${_money(budget)} of "
            f"{whose[0].lower()}{whose[1:]} ({limit}): ${spent:.4f} spent{in_flight}. Ask for "
            f"fewer tokens (max_tokens), or wait: the budget resets at {rfc3339(resets)}."
        )
    else:
        message = (
            f"{whose} has reached its {window} budget of ${_money(budget)} ({limit}): "
            f"${spent:.4f} spent{in_flight}, and this request may cost up to ${cost:.4f}. "
            f"The budget resets at {rfc3339(resets)}."
        )
    headers = {
        "retry-after": str(max(math.ceil(resets - now), 1)),
        "x-should-retry": "false",
        "x-gateway-budget-reset": rfc3339(resets),
    }
    return QuotaExceeded(message, limit=limit, code=code, headers=headers)


def _money(amount: Decimal) -> str:
    """Cents where they say it all (`5.00`), every digit otherwise (`0.002`)."""
    cents = f"{amount:.2f}"
    return cents if Decimal(cents) == amount else f"{amount.normalize():f}"


def below_floor(
    floor: Decimal, balance: Decimal, reserved: Decimal, cost: Decimal
) -> QuotaExceeded:
    return QuotaExceeded(
        f"The team's NanoGPT balance is too low: ${balance:.2f} less ${reserved:.4f} reserved "
        f"in flight and up to ${cost:.4f} for this request would fall below the floor of "
        f"${floor:.2f} (limits.min_balance_usd). Free models still work.",
        limit="min_balance_usd",
        code="balance_floor_reached",
        headers={"x-should-retry": "false"},
    )


def team_paused(until: float, now: float) -> QuotaExceeded:
    return QuotaExceeded(
        "NanoGPT refused the team key: its daily limit is reached. Requests that cost money "
        f"are refused until {rfc3339(until)}; free models still work.",
        limit="nanogpt_daily_limit",
        code="team_daily_limit_exceeded",
        headers={
            "retry-after": str(max(math.ceil(until - now), 1)),
            "x-should-retry": "false",
            "x-gateway-budget-reset": rfc3339(until),
        },
    )


def budget_left(
    limiter: Limiter, member: str | None, budget: Decimal, window: Window, now: float
) -> Decimal:
    """What is left of `budget` in the current `window` after what is spent and reserved
    (for `member`, or the whole team when `None`); negative once overspent."""
    spent, reserved = limiter.spent(member, window, now)
    return budget - spent - reserved
