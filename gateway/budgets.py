"""Budget arithmetic: the calendar windows spend is counted in, and what a request may cost
before it is sent (the reservation). Pure: instants and values in, values out.

A window is a calendar day or month in the configured time zone, computed with `zoneinfo` from
an aware instant, so a day across a DST change has 23 or 25 hours and a month its own length.
The period is part of a counter's identity (`day:2026-03-29`), so nothing resets counters: a
new period simply starts at zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from gateway.pricing import PER_MILLION
from gateway.types import LimitRules, Limits, Price

Window = Literal["day", "month"]
WINDOWS: tuple[Window, ...] = ("day", "month")
ADVERB: dict[Window, str] = {"day": "daily", "month": "monthly"}


def budget_key(window: Window, whose: str = "") -> str:
    """The setting that holds a budget for `window`: `budget_usd_daily`,
    `team_budget_usd_monthly` (`whose` = `team_`), `end_user_budget_usd_daily`."""
    return f"{whose}budget_usd_{ADVERB[window]}"


def budget_of(owner: Limits | LimitRules, window: Window, whose: str = "") -> Decimal | None:
    """The budget `owner` (a member's limits, or the team's rules) sets for `window`."""
    amount: Decimal | None = getattr(owner, budget_key(window, whose))
    return amount


BYTES_PER_PROMPT_TOKEN = 2
"""The prompt estimate: one token per two bytes of the whole request body. Tokenizers give
English prose about four bytes a token, code about three, CJK text three (one character), and
the body's JSON syntax stands in for the chat template's tokens, so this reserves about twice
what a natural-language or code prompt costs. Only unusual input (long runs of emoji or random
bytes) tokenizes to more; the settle step corrects the difference either way."""
_MAX_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_NO_COMPLETION = frozenset({"embeddings", "moderations"})


@dataclass(frozen=True, slots=True)
class Period:
    """One calendar day or month: `key` names it, `[start, end)` in unix seconds."""

    window: Window
    key: str
    start: float
    end: float


def period(window: Window, instant: float, zone: ZoneInfo) -> Period:
    """The day or month of `zone`'s calendar that contains `instant` (unix seconds)."""
    local = datetime.fromtimestamp(instant, zone).date()
    if window == "day":
        first, after = local, local + timedelta(days=1)
        key = first.isoformat()
    else:
        first = local.replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
        key = first.isoformat()[:7]
    return Period(window, f"{window}:{key}", _midnight(first, zone), _midnight(after, zone))


def _midnight(day: date, zone: ZoneInfo) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a request is reserved at: tokens (for the per-minute token limit) and USD."""

    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def completion_allowance(
    endpoint: str,
    payload: Mapping[str, Any],
    *,
    default_max_tokens: int,
    model_max_tokens: int | None,
) -> int:
    """The most completion tokens the request can produce: its own limit (`max_tokens`,
    `max_completion_tokens`, `max_output_tokens`), else `default_max_tokens`, capped by the
    model's output limit when the catalog gives one, times the `n` choices it asks for."""
    if endpoint in _NO_COMPLETION:
        return 0
    asked = [payload[f] for f in _MAX_TOKEN_FIELDS if _is_count(payload.get(f))]
    limit = min(asked) if asked else default_max_tokens
    if model_max_tokens is not None:
        limit = min(limit, model_max_tokens)
    choices = payload.get("n")
    return limit * choices if type(choices) is int and choices > 1 else limit


def estimate(
    endpoint: str,
    payload: Mapping[str, Any],
    body_bytes: int,
    price: Price | None,
    *,
    default_max_tokens: int,
    model_max_tokens: int | None = None,
) -> Estimate:
    """The reservation for one request: prompt tokens from the body's size
    (`BYTES_PER_PROMPT_TOKEN`), the completion allowance, and both at the model's price
    (no cost when the price is unknown: the caller decides whether that may pass)."""
    prompt = math.ceil(body_bytes / BYTES_PER_PROMPT_TOKEN)
    completion = completion_allowance(
        endpoint,
        payload,
        default_max_tokens=default_max_tokens,
        model_max_tokens=model_max_tokens,
    )
    cost = Decimal(0)
    if price is not None:
        cost = (prompt * price.prompt + completion * price.completion) / PER_MILLION
    return Estimate(prompt, completion, cost)


def _is_count(value: Any) -> bool:
    return type(value) is int and value > 0


def bounded(limits: Limits, rules: LimitRules) -> bool:
    """Whether a budget bounds what a member with `limits` spends: their own, their end
    users', the team's, or the balance floor. Such a member may not run what cannot be priced."""
    team = (rules.team_budget_usd_daily, rules.team_budget_usd_monthly, rules.min_balance_usd)
    return limits.budgeted or any(b is not None for b in team)
