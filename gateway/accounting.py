"""Accounting: what a finished request cost, and why not when it is unknown. Pure.

Turns what the route learned about one request (a `Learned`, in practice the `Tally`) and how
it ended into the `Finished` record every sink reads. Label values are bounded here, before
any sink sees them: endpoints are a fixed list, text is cut to `MAX_TEXT`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from gateway import pricing
from gateway.protocol import MODEL_ENDPOINTS
from gateway.types import Finished, Member, ModelInfo, Outcome, Price, Usage

OTHER = "other"
ENDPOINT_LABELS = MODEL_ENDPOINTS | {
    "models",
    "embedding-models",
    "moderations",
    "images/generations",
    "audio/speech",
    "audio/transcriptions",
    "characters",
}
UNMETERED_REASONS = (
    "no_usage",
    "no_price",
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
    endpoint: str
    model_id: str | None
    model: ModelInfo | None
    stream: bool
    forwarded: bool
    stream_usage_unsupported: bool
    upstream_failure: str | None


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
    """The finished request: its cost at the model's price, or why it has none."""
    model = learned.model
    price = pricing.price_of(model, price_overrides) if model is not None else None
    cost = pricing.cost(usage, price) if usage is not None and price is not None else None
    return Finished(
        time=learned.started_at,
        request_id=learned.request_id,
        member=learned.member.name if learned.member is not None else None,
        end_user=learned.end_user[:MAX_TEXT] if learned.end_user else None,
        model=learned.model_id[:MAX_TEXT] if learned.model_id else None,
        endpoint=learned.endpoint[:MAX_TEXT],
        status=status,
        outcome=outcome,
        stream=learned.stream,
        usage=usage,
        cost_usd=cost,
        unmetered=unmetered_reason(learned, outcome, usage, priced=cost is not None),
        duration_seconds=duration,
        ttft_seconds=ttft,
        upstream_failure=learned.upstream_failure,
    )


def unmetered_reason(
    learned: Learned, outcome: Outcome, usage: Usage | None, priced: bool
) -> str | None:
    """Why a request that reached NanoGPT has no known cost, or `None` if it has one (or
    could not have had one: refusals never reached NanoGPT, `/models` costs nothing)."""
    if not learned.forwarded or learned.endpoint not in MODEL_ENDPOINTS:
        return None
    if usage is not None:
        return None if priced else "no_price"
    if outcome == "ok":
        return "stream_usage_unsupported" if learned.stream_usage_unsupported else "no_usage"
    return outcome if outcome in UNMETERED_REASONS else "upstream_failed"


def endpoint_label(endpoint: str) -> str:
    """A fixed set of endpoint names: the path is the client's to choose, the label is not."""
    if endpoint in ENDPOINT_LABELS:
        return endpoint
    head = endpoint.split("/", 1)[0]
    return head if head in ENDPOINT_LABELS else OTHER
