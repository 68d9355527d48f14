"""The routes. `/v1/{path}` reads top to bottom as the pipeline's steps: authenticate,
classify, check access, read, parse, check billing and the model, reserve, send, relay; it is
`metered`.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Awaitable, Callable
from decimal import Decimal
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway import policy
from gateway.admission import check_billing, reserve
from gateway.budgets import ADVERB, WINDOWS, budget_of, period
from gateway.endpoints import Target
from gateway.errors import InvalidApiKey, error_body
from gateway.forwarding import send, watcher_for
from gateway.keys import presented_key
from gateway.limits.base import budget_left, rfc3339
from gateway.metered import Answer, metered
from gateway.metrics import Metrics
from gateway.pipeline import (
    Gateway,
    allowed_model,
    authenticate,
    check_model,
    classify,
    gateway_of,
    parse,
    read_body,
    require_access,
    translate,
)
from gateway.relay import Relay
from gateway.tally import Tally
from gateway.types import Member, ModelInfo


@metered
async def v1(request: Request, gateway: Gateway, tally: Tally) -> Answer:
    """Any `/v1/{path}`: checked against the endpoint table, the key, the policy, then
    answered from the catalog or forwarded to NanoGPT and relayed as it streams."""
    member = authenticate(request, gateway, tally)
    target = classify(request, gateway, tally)
    require_access(gateway, target, request.method, member)
    if target.endpoint.name == "key":
        return JSONResponse({"data": _key_report(gateway, member)})
    if target.endpoint.served_here:
        return await _models(request, gateway, member, target)
    body = await read_body(request, gateway.settings.upstream.max_body_bytes)
    call, body = translate(await parse(request, target.endpoint, body), body)
    tally.model_id, tally.stream = call.model, call.stream
    check_billing(request, member, call)
    model = tally.model = await check_model(gateway, member, call)
    await reserve(gateway, member, call, len(body), model, tally)
    upstream, hide_usage = await send(request, gateway, target, call, body, tally)
    return Relay(upstream, watcher_for(call, upstream, hide_usage=hide_usage), tally)


async def _models(request: Request, gateway: Gateway, member: Member, target: Target) -> Response:
    """`GET /v1/models`: the text models this member may use, from the cached catalog;
    `GET /v1/models/{id}`: one of them. `?detailed=true` gives everything NanoGPT gave."""
    detailed = request.query_params.get("detailed", "").lower() in ("true", "1")
    if target.path == "models":
        snapshot = await gateway.catalog.get()
        models = policy.visible(gateway.settings.policy, member, snapshot.text)
        return JSONResponse({"object": "list", "data": [_render(m, detailed) for m in models]})
    model = await allowed_model(gateway, member, target.tail)
    return JSONResponse(_render(model, detailed))


def _key_report(gateway: Gateway, member: Member) -> dict[str, object]:
    """`GET /v1/key`: "how much do I have left?", with OpenRouter's field names where they
    fit (`limit`, `limit_remaining`, `limit_reset`, `usage_daily`, `usage_monthly`)."""
    now, limits, rules = gateway.tallies.clock(), member.limits, gateway.settings.limits
    zone = ZoneInfo(rules.timezone)
    windows = []
    tightest: tuple[Decimal, Decimal, str] | None = None  # (left, budget, window)
    usage: dict[str, str] = {}
    for window in WINDOWS:
        span = period(window, now, zone)
        spent, reserved = gateway.limiter.spent(member.name, window, now)
        usage[window] = str(spent)
        entry: dict[str, object] = {
            "window": window,
            "spent_usd": str(spent),
            "reserved_usd": str(reserved),
            "resets_at": rfc3339(span.end),
        }
        for whose, budget, name in (
            (member.name, budget_of(limits, window), "budget_usd"),
            (None, budget_of(rules, window, "team_"), "team_budget_usd"),
        ):
            if budget is None:
                continue
            left = budget_left(gateway.limiter, whose, budget, window, now)
            entry[name], entry[f"{name}_remaining"] = str(budget), str(max(left, Decimal(0)))
            if tightest is None or left < tightest[0]:
                tightest = (left, budget, ADVERB[window])
        windows.append(entry)
    return {
        "label": member.name,
        "name": member.name,
        "limit": float(tightest[1]) if tightest else None,
        "limit_remaining": float(max(tightest[0], Decimal(0))) if tightest else None,
        "limit_reset": tightest[2] if tightest else None,
        "usage_daily": float(usage["day"]),
        "usage_monthly": float(usage["month"]),
        "limits": {
            name: (str(value) if isinstance(value, Decimal) else value)
            for name, value in dataclasses.asdict(limits).items()
        },
        "windows": windows,
        "timezone": rules.timezone,
    }


def metrics_endpoint(
    metrics: Metrics, token: str | None
) -> Callable[[Request], Awaitable[Response]]:
    """`GET /metrics` in Prometheus's text format; with a token, only for whoever presents it."""

    async def serve_metrics(request: Request) -> Response:
        if token is not None:
            presented = presented_key(request.headers) or ""
            if not hmac.compare_digest(presented.encode(), token.encode()):
                raise InvalidApiKey(
                    "The metrics need 'Authorization: Bearer <metering.metrics_token>'."
                )
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    return serve_metrics


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready once a catalog has loaded (without one, no request could be checked) and while
    the usage ledger can be written (otherwise usage piles up in memory, then is lost). A
    ledger every replica shares (PostgreSQL) is down for all of them at once: they stay ready,
    queueing rows, until the queue is full."""
    gateway = gateway_of(request)
    catalog = gateway.catalog
    snapshot = catalog.snapshot or await catalog.get()
    ledger = gateway.tallies.ledger
    if not getattr(ledger, "writable", True) and (  # a sink that cannot tell: ready
        not getattr(ledger, "shared", False) or getattr(ledger, "full", True)
    ):
        message = "The usage ledger cannot be written; its rows are queued and retried."
        body = error_body(message, type="service_unavailable_error", code="ledger_unavailable")
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", "models": len(snapshot.text)})


def _render(model: ModelInfo, detailed: bool) -> dict[str, object]:
    """OpenAI's four fields, or with `?detailed=true` everything NanoGPT gave (as NanoGPT does)."""
    return {**model.detailed, **model.basic()} if detailed else model.basic()
