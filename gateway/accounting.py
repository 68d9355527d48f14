"""Accounting: what a finished request cost, and why not when it is unknown. Pure.

Turns what the route learned about one request (a `Learned`, in practice the `Tally`) and how
it ended into the `Finished` record every sink reads. What NanoGPT says it charged wins over
the catalog's prices. Label values are bounded here, before any sink sees them: endpoints are
the table's names, text is cut to `MAX_TEXT`.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Protocol

from gateway import pricing
from gateway.endpoints import UNLISTED, Endpoint
from gateway.types import CostSource, Finished, Member, ModelInfo, Outcome, Price, Usage

UNMETERED_REASONS = (
    "no_usage",
    "no_price",
    "not_reported",
    "unlisted",
    "client_disconnected",
    "upstream_failed",
    "upstream_error",
    "stream_usage_unsupported",
    "shutdown",
)
MAX_TEXT = 256


class Learned(Protocol):
    """What the route found out about a request on its way (the `Tally` holds it)."""

    request_id: str
    started_at: float
    member: Member | None
    end_user: str | None
    endpoint: Endpoint
    path: str | None
    model_id: str | None
    model: ModelInfo | None
    stream: bool
    forwarded: bool
    stream_usage_unsupported: bool
    upstream_failure: str | None
    reserved_usd: Decimal | None
    limit: str | None
    key_id: str | None


def account(
    learned: Learned,
    *,
    status: int,
    outcome: Outcome,
    usage: Usage | None,
    duration: float,
    ttft: float | None,
    price_overrides: Mapping[str, Price],
) -> Finished:
    """The finished request: its cost as charged or at the model's price, or why it has none."""
    cost, source = cost_of(learned.model, usage, price_overrides)
    unmetered = unmetered_reason(learned, outcome, usage, priced=cost is not None)
    if cost is None and _may_have_been_billed(learned, outcome):
        cost, source = learned.reserved_usd, "estimate"
    return Finished(
        time=learned.started_at,
        request_id=learned.request_id,
        member=learned.member.name if learned.member is not None else None,
        end_user=learned.end_user[:MAX_TEXT] if learned.end_user else None,
        model=learned.model_id[:MAX_TEXT] if learned.model_id else None,
        endpoint=learned.endpoint.name,
        path=learned.path[:MAX_TEXT] if learned.path else None,
        status=status,
        outcome=outcome,
        stream=learned.stream,
        usage=usage,
        cost_usd=cost,
        cost_source=source,
        unmetered=unmetered,
        duration_seconds=duration,
        ttft_seconds=ttft,
        upstream_failure=learned.upstream_failure,
        limit=learned.limit,
        key_id=learned.key_id,
    )


_BILLABLE_ENDINGS = frozenset({"ok", "client_disconnected", "upstream_failed", "shutdown"})


def _may_have_been_billed(learned: Learned, outcome: Outcome) -> bool:
    """A request that reached NanoGPT and ended without saying what it cost (the client left,
    the answer broke off, no usage came): what it reserved is what it counts as. An error
    answer and a connection never made cost nothing."""
    return (
        learned.reserved_usd is not None
        and learned.reserved_usd > 0
        and learned.forwarded
        and outcome in _BILLABLE_ENDINGS
        and learned.upstream_failure != "connect"
    )


def cost_of(
    model: ModelInfo | None, usage: Usage | None, price_overrides: Mapping[str, Price]
) -> tuple[Decimal | None, CostSource | None]:
    """What NanoGPT charged if it said so, else the usage at the model's price, else nothing.
    An override in `[pricing]` is the operator's word against the catalog, not against a
    charge."""
    if usage is None:
        return None, None
    if usage.charged_usd is not None:
        return usage.charged_usd, "charged"
    price = pricing.price_of(model, price_overrides) if model is not None else None
    if price is None:
        return None, None
    return pricing.cost(usage, price), "catalog"


def unmetered_reason(
    learned: Learned, outcome: Outcome, usage: Usage | None, priced: bool
) -> str | None:
    """Why a request that reached NanoGPT has no known cost, or `None` if it has one (or
    could not have had one: refusals never reached NanoGPT, free endpoints cost nothing)."""
    endpoint = learned.endpoint
    if not learned.forwarded or endpoint.metering == "free" or priced:
        return None
    if endpoint is UNLISTED:
        return "unlisted"
    if usage is not None:
        return "no_price"
    if outcome != "ok":
        return outcome if outcome in UNMETERED_REASONS else "upstream_failed"
    if endpoint.metering in ("cost", "unreported"):
        return "not_reported"
    return "stream_usage_unsupported" if learned.stream_usage_unsupported else "no_usage"
