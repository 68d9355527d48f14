"""The steps of a request, as typed functions the routes call in order: authenticate, classify,
check access, read the body, parse it, check the model (`forwarding` sends it on). And
`metered`, which opens a tally for a route and finishes it however the route ends.

Errors are raised as `GatewayError` and rendered by the one handler in `app.py`; nothing here
knows the HTTP client library or catches a client-library exception.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cachetools import TTLCache
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway import billing, budgets, compat, endpoints, logs, policy, pricing, protocol
from gateway.accounting import MAX_TEXT
from gateway.catalog import Catalog
from gateway.config import Settings
from gateway.endpoints import UNLISTED, Endpoint, Target
from gateway.errors import (
    CatalogUnavailable,
    GatewayError,
    InvalidRequest,
    ModelNotAllowed,
    ModelNotFound,
    PayloadTooLarge,
    PermissionDenied,
    Refusal,
    UpstreamError,
)
from gateway.keys import KeyRing
from gateway.limits import Admission, Ask, Limiter
from gateway.relay import Relay
from gateway.tally import REQUEST_ID_HEADER, Tallies, Tally
from gateway.types import Member, ModelInfo, ModelKind, Outcome
from gateway.upstream import Upstream

logger = logging.getLogger("gateway.pipeline")

LARGE_BODY_BYTES = 256 * 1024
"""Above this, a JSON body is decoded in slices, giving the event loop a turn between them."""
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before the answer
STREAM_OPTIONS_REFUSAL_SECONDS = 3600.0
"""How long a model whose upstream refused `stream_options` is not asked again: NanoGPT may
route it to another provider meanwhile, and its streams should not go unmetered for good."""


def _refusals() -> TTLCache[str, bool]:
    return TTLCache(maxsize=1024, ttl=STREAM_OPTIONS_REFUSAL_SECONDS)


@dataclass(frozen=True, slots=True)
class Gateway:
    """Everything a request needs, built once by the app's lifespan."""

    settings: Settings
    keys: KeyRing
    catalog: Catalog
    upstream: Upstream
    tallies: Tallies
    limiter: Limiter
    poll_balance_now: Callable[[], None] = lambda: None
    """Ask for NanoGPT's balance at once (after it answered 402), not at the next poll."""
    no_stream_usage: TTLCache[str, bool] = field(default_factory=_refusals)
    """Models whose upstream refused the `stream_options` the gateway added: not asked again
    for `STREAM_OPTIONS_REFUSAL_SECONDS`."""


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.state.gateway
    return gateway


Answer = Response | Relay
MeteredRoute = Callable[[Request, Gateway, Tally], Awaitable[Answer]]


def metered(route: MeteredRoute) -> Metered:
    """The route as an ASGI app, tallied (a decorator)."""
    return Metered(route)


class Metered:
    """A route as an ASGI app, tallied: every way it can end finishes the tally, except a
    `Relay`, which finishes it when its body has ended (or the client has left). A client that
    leaves before the answer (during its upload, or while NanoGPT thinks) gets none. Every log
    line written meanwhile names the request id."""

    def __init__(self, route: MeteredRoute) -> None:
        self.route = route
        self.__name__ = route.__name__

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        gateway = gateway_of(request)
        tally = gateway.tallies.start()
        request.state.request_id = tally.request_id  # for the error handlers' responses
        logged_as = logs.request_id.set(tally.request_id)
        try:
            answer = await self._answer(request, gateway, tally)
            if answer is not None:
                await answer(scope, receive, send)
        finally:
            logs.request_id.reset(logged_as)

    async def _answer(self, request: Request, gateway: Gateway, tally: Tally) -> Answer | None:
        try:
            answer = await self.route(request, gateway, tally)
        except ClientDisconnect:
            # Not an error of ours: nobody is left to answer, and the server logs nothing.
            logger.info("client disconnected before the answer")
            await tally.finish(CLIENT_CLOSED_REQUEST, "client_disconnected")
            return None
        except GatewayError as exc:
            if isinstance(exc, UpstreamError):
                tally.upstream_failure = exc.reason
                tally.forwarded = exc.reason != "connect"
            if isinstance(exc, Refusal):
                tally.limit = exc.limit
            await tally.finish(exc.status_code, _outcome_of(exc))
            raise
        except asyncio.CancelledError:
            await tally.finish(CLIENT_CLOSED_REQUEST, "client_disconnected")
            raise
        except BaseException:
            await tally.finish(500, "error")
            raise
        if not isinstance(answer, Relay):
            answer.headers[REQUEST_ID_HEADER] = tally.request_id
            await tally.finish(answer.status_code, "ok")
        return answer


def _outcome_of(exc: GatewayError) -> Outcome:
    if isinstance(exc, UpstreamError | CatalogUnavailable):
        return "upstream_failed"
    if isinstance(exc, Refusal) and exc.from_upstream:
        return "upstream_error"
    return "refused" if exc.status_code < 500 else "error"


def authenticate(request: Request, gateway: Gateway, tally: Tally) -> Member:
    """The member behind the request's key (401 otherwise), and the end user they name."""
    member = tally.member = gateway.keys.authenticate(request.headers)
    if member.end_user_header is not None:
        tally.end_user = request.headers.get(member.end_user_header)
    return member


def classify(request: Request, gateway: Gateway, tally: Tally) -> Target:
    """The request's entry in the endpoint table (400 / 404 / 405 otherwise)."""
    forward_unlisted = gateway.settings.upstream.forward_unlisted
    target = endpoints.classify(
        raw_subpath(request), request.method, forward_unlisted=forward_unlisted
    )
    tally.endpoint, tally.path = target.endpoint, target.path
    return target


def require_access(gateway: Gateway, target: Target, method: str, member: Member) -> None:
    """Admin-only endpoints are for admins; an unlisted path only for members whom no model
    rule and no budget restricts, since what it spends cannot be checked."""
    if target.endpoint.access == "admin" and not member.admin:
        raise PermissionDenied(
            f"Member {member.name!r} may not call {method} /v1/{target.path}: it reads or "
            "changes the team's account data, which is for gateway admins.",
            code="admin_required",
        )
    if target.endpoint is UNLISTED and (
        not policy.is_unrestricted(gateway.settings.policy, member) or _budgeted(gateway, member)
    ):
        raise PermissionDenied(
            f"/v1/{target.path} is not an endpoint the gateway knows, so its model and cost "
            f"cannot be checked, and member {member.name!r} is under model rules or a budget.",
            code="unlisted_endpoint",
        )


def _budgeted(gateway: Gateway, member: Member) -> bool:
    """Whether a budget bounds what this member spends: their own, their end users', the
    team's, or the balance floor."""
    rules = gateway.settings.limits
    team = (rules.team_budget_usd_daily, rules.team_budget_usd_monthly, rules.min_balance_usd)
    return member.limits.budgeted or any(b is not None for b in team)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body, or 413 as soon as it is known to exceed `limit`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than this gateway's limit of {limit} bytes "
        "(upstream.max_body_bytes)."
    )


async def parse(request: Request, endpoint: Endpoint, body: bytes) -> protocol.Call:
    """What the request asks for (400 if its body is malformed). A model named in the query
    as well is refused: the gateway checks the body's, and NanoGPT must not see another."""
    query: bytes = request.scope["query_string"]
    named = b"model" in query or b"%" in query  # `m%6Fdel` is `model` too
    if endpoint.names_model and named and "model" in request.query_params:
        raise InvalidRequest(
            "Name the model in the request body only, not in the query string.", param="model"
        )
    content_type = request.headers.get("content-type", "")
    if len(body) < LARGE_BODY_BYTES:
        return protocol.parse_call(endpoint, content_type, body)
    parsing = protocol.parse_call_in_slices(endpoint, content_type, body)
    while True:
        try:
            next(parsing)
        except StopIteration as done:
            call: protocol.Call = done.value
            return call
        await asyncio.sleep(0)


def translate(call: protocol.Call, body: bytes) -> tuple[protocol.Call, bytes]:
    """Cursor's agent mode posts a Responses-shaped body (`input`, no `messages`) to
    `/chat/completions` and reads Chat Completions back: the call and body NanoGPT expects,
    translated before the policy sees them (400 if the input cannot be translated)."""
    if call.endpoint.name != "chat/completions" or not compat.is_responses_shaped(call.payload):
        return call, body
    translated = json.dumps(compat.to_chat(dict(call.payload))).encode()
    return protocol.parse_call(call.endpoint, "application/json", translated), translated


async def check_model(gateway: Gateway, member: Member, call: protocol.Call) -> ModelInfo | None:
    """The catalog entry of the model the call names, if the policy lets this member use it;
    a call that could name a model but names none passes only when no rule could refuse
    anything, since NanoGPT picks one the gateway cannot check."""
    endpoint = call.endpoint
    if endpoint.catalog is None:
        return None
    if call.model is not None:
        return await allowed_model(gateway, member, call.model, endpoint.catalog)
    if not policy.is_unrestricted(gateway.settings.policy, member):
        raise ModelNotAllowed(
            "This request names no model, so it cannot be checked against the gateway's "
            "model policy; name the model explicitly.",
            param="model",
        )
    return None


async def allowed_model(
    gateway: Gateway, member: Member, model_id: str, kind: ModelKind = "text"
) -> ModelInfo:
    """The entry of `model_id` in NanoGPT's `kind` catalog: 404 if there is none, 403 if the
    policy refuses it to this member. An id that is not an entry itself may be one with
    NanoGPT suffixes (`:online`, `:fast`): the entry's rules apply, and the suffixes need the
    member's billing permissions."""
    rules = gateway.settings.policy
    _require(policy.check_name(rules, member, model_id), model_id, member)
    catalog = await gateway.catalog.get()
    model = catalog.find(model_id, kind)
    suffixed = billing.split_suffixes(model_id) if model is None else None
    if suffixed is not None and (base := catalog.find(suffixed.base, kind)) is not None:
        _require(policy.check_name(rules, member, suffixed.base), model_id, member)
        _require_billing(suffixed.needs, member, f"the model suffix in {model_id!r}")
        model = base
    if model is None and rules.subscription_only:
        raise ModelNotAllowed(
            f"The model {model_id!r} is not included in the NanoGPT subscription, "
            "and this gateway only serves subscription models.",
            param="model",
        )
    if model is None:
        raise ModelNotFound(
            f"The model {model_id!r} does not exist in NanoGPT's {_CATALOG_NAMES[kind]} catalog.",
            param="model",
        )
    _require(policy.check_entry(rules, model), model_id, member)
    return model


def check_billing(request: Request, member: Member, call: protocol.Call) -> None:
    """NanoGPT's pay-as-you-go override and provider selection only for members allowed them
    (403 `billing_override_not_allowed`): either bills the team's balance where the
    subscription would have covered the request."""
    needs = billing.requested(request.headers, call.payload)
    if needs:
        _require_billing(needs, member, "this request")


def _require_billing(needs: frozenset[billing.Override], member: Member, what: str) -> None:
    refused = billing.refused(
        needs, paygo=member.allow_paygo_override, provider=member.allow_provider_selection
    )
    if refused:
        asks = " and ".join(billing.DESCRIPTIONS[r] for r in refused)
        raise ModelNotAllowed(
            f"Member {member.name!r} may not use {asks}, which {what} asks for: it bills the "
            "team's NanoGPT balance instead of the subscription. Ask a gateway admin "
            "(members[].allow_paygo_override / allow_provider_selection).",
            code="billing_override_not_allowed",
        )


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
        if price is None and _budgeted(gateway, member):
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


def _require(decision: policy.Decision, model_id: str, member: Member) -> None:
    if not decision.allowed:
        raise ModelNotAllowed(
            f"The model {model_id!r} is not allowed for member {member.name!r}: {decision.reason}.",
            param="model",
        )


_CATALOG_NAMES: dict[ModelKind, str] = {
    "text": "text model",
    "embedding": "embedding model",
    "image": "image model",
    "audio": "audio model",
    "moderation": "moderation model",
}


def raw_subpath(request: Request) -> str:
    """The path below `/v1/` as the client encoded it, so ids with `%2F` survive forwarding."""
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    path = raw.split(b"?", 1)[0].decode("latin-1")
    prefix = "/api/v1/" if path.startswith("/api/v1/") else "/v1/"
    return path[len(prefix) :]
