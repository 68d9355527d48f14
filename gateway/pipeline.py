"""The steps of a request, as typed functions the routes call in order: authenticate, classify,
check access, read the body, parse it, translate it, check the model (`admission` checks
billing and reserves the limits, `forwarding` sends it on), and the `Gateway` they share.

Errors are raised as `GatewayError` and rendered by the one handler in `app.py`; nothing here
knows the HTTP client library or catches a client-library exception.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from cachetools import TTLCache
from starlette.requests import Request

from gateway import billing, budgets, compat, endpoints, policy, protocol
from gateway.catalog import Catalog
from gateway.config import Settings
from gateway.endpoints import UNLISTED, Endpoint, Target
from gateway.errors import (
    InvalidRequest,
    ModelNotAllowed,
    ModelNotFound,
    PayloadTooLarge,
    PermissionDenied,
    UnsupportedMediaType,
)
from gateway.limits import Limiter
from gateway.roster import Roster
from gateway.tally import Tallies, Tally
from gateway.types import Member, ModelInfo, ModelKind
from gateway.upstream import Upstream

logger = logging.getLogger("gateway.pipeline")

LARGE_BODY_BYTES = 256 * 1024
"""Above this, a JSON body is decoded in slices, giving the event loop a turn between them."""
STREAM_OPTIONS_REFUSAL_SECONDS = 3600.0
"""How long a model whose upstream refused `stream_options` is not asked again: NanoGPT may
route it to another provider meanwhile, and its streams should not go unmetered for good."""


def _refusals() -> TTLCache[str, bool]:
    return TTLCache(maxsize=1024, ttl=STREAM_OPTIONS_REFUSAL_SECONDS)


@dataclass(frozen=True, slots=True)
class Gateway:
    """Everything a request needs, built once by the app's lifespan."""

    settings: Settings
    keys: Roster
    catalog: Catalog
    upstream: Upstream
    tallies: Tallies
    limiter: Limiter
    poll_balance_now: Callable[[], None] = lambda: None
    """Ask for NanoGPT's balance at once (after it answered 402), not at the next poll."""
    no_stream_usage: TTLCache[str, bool] = field(default_factory=_refusals)
    """Models whose upstream refused the `stream_options` the gateway added: not asked again
    for `STREAM_OPTIONS_REFUSAL_SECONDS`."""


class Current:
    """The gateway new requests start with. A config reload replaces it whole, so a request
    sees one config from its start to its end."""

    __slots__ = ("gateway",)

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway


def gateway_of(request: Request) -> Gateway:
    current: Current = request.state.current
    return current.gateway


def authenticate(request: Request, gateway: Gateway, tally: Tally) -> Member:
    """The member behind the request's key (401 otherwise), and the end user they name."""
    holder = gateway.keys.identify(request.headers, gateway.tallies.clock())
    member = tally.member = holder.member
    tally.key_id = holder.stored.public_id if holder.stored is not None else None
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
        not policy.is_unrestricted(gateway.settings.policy, member)
        or budgets.bounded(member.limits, gateway.settings.limits)
    ):
        raise PermissionDenied(
            f"/v1/{target.path} is not an endpoint the gateway knows, so its model and cost "
            f"cannot be checked, and member {member.name!r} is under model rules or a budget.",
            code="unlisted_endpoint",
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body, or 413 as soon as it is known to exceed `limit`. A body sent
    compressed is refused (415): the checks read it as it is, and NanoGPT must get what
    they read."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(
            f"Request bodies sent with Content-Encoding {encoding!r} are not accepted: send "
            "the body uncompressed.",
            code="unsupported_content_encoding",
        )
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
        billing.require(suffixed.needs, member, f"the model suffix in {model_id!r}")
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
