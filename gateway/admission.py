"""Admission, the last checks before NanoGPT is called: NanoGPT's billing overrides only for
members allowed them, then one atomic reservation of every limit that applies. Nothing here
knows the limiter's storage.
"""

from __future__ import annotations

from starlette.requests import Request

from gateway import billing, budgets, pricing, protocol
from gateway.accounting import MAX_TEXT
from gateway.errors import ModelNotAllowed
from gateway.limits import Admission, Ask
from gateway.pipeline import Gateway
from gateway.tally import Tally
from gateway.types import Member, ModelInfo


def check_billing(request: Request, member: Member, call: protocol.Call) -> None:
    """NanoGPT's pay-as-you-go override and provider selection only for members allowed them
    (403 `billing_override_not_allowed`): either bills the team's balance where the
    subscription would have covered the request."""
    needs = billing.requested(request.headers, call.payload)
    if needs:
        billing.require(needs, member, "this request")


async def reserve(
    gateway: Gateway,
    member: Member,
    call: protocol.Call,
    body_size: int,
    model: ModelInfo | None,
    tally: Tally,
) -> Admission | None:
    """Check and reserve every limit that applies, in one step (429 otherwise, having
    reserved nothing). Only calls that run a model count; a member under a budget may not
    run a model whose price the gateway does not know (403 `model_not_priced`)."""
    endpoint = call.endpoint
    if endpoint.catalog is None:
        return None
    settings = gateway.settings
    rules = settings.limits
    price = None
    if endpoint.metering != "free":
        price = pricing.price_of(model, settings.pricing) if model is not None else None
        if price is None and budgets.bounded(member.limits, settings.limits):
            raise ModelNotAllowed(
                f"The model {call.model or '(default)'!r} has no per-token price in NanoGPT's "
                f"catalog, and member {member.name!r} is under a budget, so what it would "
                'cost cannot be reserved; set [pricing."<model id>"] or use another model.',
                param="model",
                code="model_not_priced",
            )
    estimate = budgets.estimate(
        endpoint.name,
        call.payload,
        body_size,
        price,
        default_max_tokens=rules.default_max_tokens,
        model_max_tokens=model.max_output_tokens if model is not None else None,
    )
    ask = Ask(
        request_id=tally.request_id,
        member=member.name,
        limits=member.limits,
        end_user=(tally.end_user or "")[:MAX_TEXT] if member.end_user_header else None,
        estimate=estimate,
        now=gateway.tallies.clock(),
    )
    tally.admission = await gateway.limiter.admit(ask)
    tally.reserved_usd = estimate.cost_usd
    return tally.admission
