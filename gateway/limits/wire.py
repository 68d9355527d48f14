"""What the shared limiter's Lua scripts (`scripts.py`) are sent and what their answers mean:
one request's `Ask` as the ADMIT document, the answer as an `Admission` or the refusal it
names, a settle as the SETTLE document, a ledger's spend as the REBUILD document. Money is
integer nano-dollars; scopes are hash fields (`t`, `m:<member>`, `e:<member>|<end user>`).
Pure: no I/O, no Redis client.
"""

from __future__ import annotations

import collections
import json
import math
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any

from gateway.budgets import Period, Window
from gateway.limits import memory
from gateway.limits.base import (
    Admission,
    Ask,
    Plan,
    Scope,
    below_floor,
    go_duration,
    over_budget,
    rate_limited,
    too_many_at_once,
    whose,
)

NANO = Decimal("1e9")
KEEP_SECONDS = 3 * 86400
"""How long a period's counters outlive it in Redis (no reset job: they expire)."""
END_USER = "@eu"
"""In a budget: the end user's counter, which the script picks (own, or the shared one)."""


def nanos(amount: Decimal, *, up: bool = False) -> int:
    scaled = amount * NANO
    return int(scaled.to_integral_value(ROUND_CEILING) if up else scaled.to_integral_value())


def usd(amount: Any) -> Decimal:
    return Decimal(int(amount or 0)) / NANO


def field_of(scope: Scope) -> str:
    if scope[0] == "team":
        return "t"
    if scope[0] == "member":
        return f"m:{scope[1]}"
    return f"e:{scope[1]}|{scope[2]}"


def scope_of(name: str) -> Scope:
    if name == "t":
        return ("team",)
    if name.startswith("m:"):
        return ("member", name[2:])
    member, _, end_user = name[2:].partition("|")  # member names have no "|"
    return ("end_user", member, end_user)


def expires(p: Period) -> int:
    return math.ceil(p.end) + KEEP_SECONDS


@dataclass(slots=True)
class AdmitDocument:
    """The ADMIT script's argument, and what reading its answer needs besides."""

    ask: Ask
    periods: dict[Window, Period]
    document: dict[str, Any]
    budgets: list[Plan] = field(default_factory=list)
    """Which budget each of the document's `budgets` entries is, in order."""


def admit_document(
    ask: Ask,
    periods: dict[Window, Period],
    plan: tuple[Plan, ...],
    *,
    lease_ttl: float,
    floor: Decimal | None,
    balance: int | None,
) -> AdmitDocument:
    """Everything ADMIT checks and reserves for `ask`, in the current `periods`."""
    limits, windows = ask.limits, list(periods)
    budgets = [p for p in plan if p.kind != "end_user" or ask.end_user is not None]
    own = {"member": field_of(("member", ask.member)), "team": "t", "end_user": END_USER}
    document: dict[str, Any] = {
        "id": ask.request_id,
        "m": ask.member,
        "now": ask.now,
        "ttl": lease_ttl,
        "cost": nanos(ask.estimate.cost_usd, up=True),
        "periods": [{"k": p.key, "expires": expires(p)} for p in periods.values()],
        "budgets": [[windows.index(b.window) + 1, own[b.kind], nanos(b.amount)] for b in budgets],
        "rates": [],
    }
    if ask.end_user is not None:
        document["eu"] = {
            "own": field_of(("end_user", ask.member, ask.end_user)),
            "over": field_of(("end_user", ask.member, memory.OVERFLOW_END_USER)),
            "max": memory.MAX_END_USERS,
        }
    if limits.max_concurrent_requests is not None:
        document["conc"] = limits.max_concurrent_requests
    if limits.requests_per_minute is not None:
        document["rates"].append(["requests", limits.requests_per_minute, 1])
    if limits.tokens_per_minute is not None:
        document["rates"].append(["tokens", limits.tokens_per_minute, ask.estimate.tokens])
    if floor is not None and balance is not None:
        document["floor"], document["balance"] = nanos(floor), balance
    return AdmitDocument(ask, periods, document, budgets)


def admission_from(sent: AdmitDocument, answer: list[Any], *, floor: Decimal | None) -> Admission:
    """ADMIT's answer: the admission with its headers, or the refusal it names, raised."""
    ask, verdict, cost = sent.ask, answer[0], sent.ask.estimate.cost_usd
    rates = {kind: (limit, needed) for kind, limit, needed in sent.document["rates"]}
    if verdict == "budget":  # which one, and the counter it read (an end user's own or shared)
        budget = sent.budgets[int(answer[1]) - 1]
        raise over_budget(
            limit=budget.limit,
            code=budget.code,
            whose=whose(scope_of(answer[4])),
            budget=budget.amount,
            spent=usd(answer[2]),
            reserved=usd(answer[3]),
            cost=cost,
            resets=sent.periods[budget.window].end,
            now=ask.now,
        )
    if verdict == "floor":
        assert floor is not None
        raise below_floor(floor, usd(sent.document["balance"]), usd(answer[1]), cost)
    if verdict == "concurrency":
        raise too_many_at_once(sent.document["conc"])
    if verdict == "rate":
        kind = answer[1]
        limit, needed = rates[kind]
        name = "requests_per_minute" if kind == "requests" else "tokens_per_minute"
        if answer[2] == "never":
            raise rate_limited(kind, name, limit, 0, needed, wait=None)
        level = float(answer[2])
        raise rate_limited(kind, name, limit, limit - level, needed, (needed - level) * 60 / limit)
    headers: dict[str, str] = {}
    for kind, level_text in zip(answer[3::2], answer[4::2], strict=True):
        limit, level = rates[kind][0], float(level_text)
        headers[f"x-ratelimit-limit-{kind}"] = str(limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(max(math.floor(level), 0))
        headers[f"x-ratelimit-reset-{kind}"] = go_duration((limit - level) * 60 / limit)
    if answer[2] is not None and answer[2] is not False:  # the least left of any budget
        headers["x-gateway-budget-remaining-usd"] = f"{max(usd(answer[2]), Decimal(0)):.6f}"
    return Admission(
        ask=ask,
        periods={window: p.key for window, p in sent.periods.items()},
        holds=[(key, scope_of(name)) for key, name in json.loads(answer[1]) or []],
        headers=headers,
        shared=True,
    )


def settle_document(
    admission: Admission, cost_usd: Decimal, tokens: int | None, periods: dict[Window, Period]
) -> dict[str, Any]:
    """SETTLE's argument: give back the reservation, add what was spent where it was held."""
    ask = admission.ask
    document: dict[str, Any] = {
        "id": ask.request_id,
        "m": ask.member,
        "cost": nanos(cost_usd),
        "holds": [[key, field_of(scope)] for key, scope in admission.holds],
        "expires": {p.key: expires(p) for p in periods.values()},
    }
    limit = ask.limits.tokens_per_minute
    if limit is not None and tokens is not None:
        document["tokens"] = [limit, ask.estimate.tokens - tokens]
    return document


def rebuild_document(p: Period, rows: list[tuple[str, str | None, Decimal]]) -> dict[str, Any]:
    """REBUILD's argument: a period's counters as the ledger's rows add up."""
    fields: dict[str, int] = collections.defaultdict(int)
    end_users = set()
    for member, end_user, cost in rows:
        amount = nanos(cost)
        own = field_of(("end_user", member, end_user or ""))
        end_users.add(own)
        for name in (field_of(("member", member)), "t", own):
            fields[name] += amount
    return {
        "k": p.key,
        "expires": expires(p),
        "fields": fields,
        "end_users": sorted(end_users)[: memory.MAX_END_USERS],
    }
