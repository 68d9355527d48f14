"""The steps of a request, as typed functions the routes call in order: authenticate, classify,
read the body, check the model, send upstream, pick the body watcher. And `metered`, which
opens a tally for a route and finishes it however the route ends.

Errors are raised as `GatewayError` and rendered by the one handler in `app.py`; nothing here
knows the HTTP client library or catches a client-library exception.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway import logs, policy, protocol
from gateway.catalog import Catalog
from gateway.config import Settings
from gateway.errors import (
    CatalogUnavailable,
    GatewayError,
    ModelNotAllowed,
    ModelNotFound,
    PayloadTooLarge,
    PermissionDenied,
    UpstreamError,
)
from gateway.keys import KeyRing
from gateway.relay import Relay
from gateway.tally import REQUEST_ID_HEADER, Tallies, Tally
from gateway.types import Member, ModelInfo, Outcome
from gateway.upstream import Upstream, UpstreamResponse
from gateway.usage import BodyWatcher, EventStream, JsonBody, Passthrough

logger = logging.getLogger("gateway.pipeline")

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LARGE_BODY_BYTES = 256 * 1024
"""Above this, a JSON body is decoded in slices, giving the event loop a turn between them."""
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before the answer


@dataclass(frozen=True, slots=True)
class Gateway:
    """Everything a request needs, built once by the app's lifespan."""

    settings: Settings
    keys: KeyRing
    catalog: Catalog
    upstream: Upstream
    tallies: Tallies
    no_stream_usage: set[str] = field(default_factory=set)
    """Models whose upstream refused `stream_options`: not asked again in this process."""


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
    `Relay`, which finishes it when its body has ended (or the client has left). Every log line
    written meanwhile names the request id."""

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
            await answer(scope, receive, send)
        finally:
            logs.request_id.reset(logged_as)

    async def _answer(self, request: Request, gateway: Gateway, tally: Tally) -> Answer:
        try:
            answer = await self.route(request, gateway, tally)
        except GatewayError as exc:
            if isinstance(exc, UpstreamError):
                tally.upstream_failure = exc.reason
                tally.forwarded = exc.reason != "connect"
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
    return "refused" if exc.status_code < 500 else "error"


def authenticate(request: Request, gateway: Gateway, tally: Tally) -> Member:
    """The member behind the request's key (401 otherwise), and the end user they name."""
    member = tally.member = gateway.keys.authenticate(request.headers)
    if member.end_user_header is not None:
        tally.end_user = request.headers.get(member.end_user_header)
    return member


def require_admin_for(endpoint: str, method: str, member: Member) -> None:
    """Account changes (any write under `/v1/characters`) are for admins only."""
    changes_account = method not in READ_METHODS and endpoint.split("/")[0] == "characters"
    if changes_account and not member.admin:
        raise PermissionDenied(
            f"Member {member.name!r} may not change account data ({method} /v1/{endpoint}); "
            "ask a gateway admin.",
            code="admin_required",
        )


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


async def parse(request: Request, endpoint: str, body: bytes) -> protocol.Call:
    """What the request asks for (400 if its body is malformed)."""
    content_type = request.headers.get("content-type", "")
    if len(body) < LARGE_BODY_BYTES:
        return protocol.parse_call(endpoint, request.method, content_type, body)
    parsing = protocol.parse_call_in_slices(endpoint, request.method, content_type, body)
    while True:
        try:
            next(parsing)
        except StopIteration as done:
            call: protocol.Call = done.value
            return call
        await asyncio.sleep(0)


async def check_model(gateway: Gateway, member: Member, call: protocol.Call) -> ModelInfo | None:
    """The catalog entry of the model the call names, if the policy lets this member use it;
    a model-bearing call that names none passes only when no rule could refuse anything."""
    if call.model is not None:
        return await allowed_model(gateway, member, call.model)
    if call.endpoint in protocol.MODEL_ENDPOINTS and not policy.is_unrestricted(
        gateway.settings.policy, member
    ):
        raise ModelNotAllowed(
            "This request names no model, so it cannot be checked against the gateway's "
            "model policy; name the model explicitly.",
            param="model",
        )
    return None


async def allowed_model(gateway: Gateway, member: Member, model_id: str) -> ModelInfo:
    """The catalog entry of `model_id`: 404 if NanoGPT has no such model, 403 if the policy
    refuses it to this member."""
    rules = gateway.settings.policy
    model = (await gateway.catalog.get()).by_id.get(model_id)
    if model is None and rules.subscription_only:
        raise ModelNotAllowed(
            f"The model {model_id!r} is not included in the NanoGPT subscription, "
            "and this gateway only serves subscription models.",
            param="model",
        )
    if model is None:
        raise ModelNotFound(
            f"The model {model_id!r} does not exist in the NanoGPT catalog.", param="model"
        )
    decision = policy.check(rules, member, model)
    if not decision.allowed:
        raise ModelNotAllowed(
            f"The model {model_id!r} is not allowed for member {member.name!r}: {decision.reason}.",
            param="model",
        )
    return model


async def send(
    request: Request,
    gateway: Gateway,
    raw_subpath: str,
    call: protocol.Call,
    body: bytes,
    tally: Tally,
) -> tuple[UpstreamResponse, bool]:
    """Send the request upstream, asking for stream usage on the client's behalf where needed;
    also says whether the relay must hide that usage from the client."""
    tally.forwarded = True
    if not _asks_stream_usage(gateway, call, tally):
        return await _open(request, gateway, raw_subpath, body), False
    upstream = await _open(request, gateway, raw_subpath, protocol.with_stream_usage(call, body))
    if not await _refuses_stream_options(upstream):
        return upstream, True
    gateway.no_stream_usage.add(str(call.model))
    tally.stream_usage_unsupported = True
    logger.warning(
        "NanoGPT refused stream_options for %s; its streams go unmetered from now on", call.model
    )
    return await _open(request, gateway, raw_subpath, body), False


def _asks_stream_usage(gateway: Gateway, call: protocol.Call, tally: Tally) -> bool:
    """Whether to add `stream_options.include_usage` for a client that did not ask for it."""
    if not (call.stream_usage_injectable and gateway.settings.metering.inject_stream_usage):
        return False
    if call.model in gateway.no_stream_usage:
        tally.stream_usage_unsupported = True
        return False
    return True


async def _open(
    request: Request, gateway: Gateway, raw_subpath: str, body: bytes
) -> UpstreamResponse:
    return await gateway.upstream.open(
        request.method,
        "/v1/" + raw_subpath,
        request.scope.get("query_string", b""),
        request.headers.items(),
        body,
    )


async def _refuses_stream_options(upstream: UpstreamResponse) -> bool:
    """A 400 that names `stream_options`: this upstream does not take it, and nothing has
    reached the client yet, so the request can be sent again without it."""
    if upstream.status_code != 400:
        return False
    try:
        refused = b"stream_options" in await upstream.error_body()
    except BaseException:
        await upstream.aclose()
        raise
    if refused:
        await upstream.aclose()
    return refused


def watcher_for(
    call: protocol.Call, upstream: UpstreamResponse, *, hide_usage: bool
) -> BodyWatcher:
    """What reads usage from this response's body as it passes (nothing, for an error)."""
    if upstream.status_code >= 400 or call.endpoint not in protocol.MODEL_ENDPOINTS:
        return Passthrough()
    if upstream.is_event_stream:
        return EventStream(hide_usage=hide_usage)
    return JsonBody() if upstream.is_json else Passthrough()


def raw_subpath(request: Request) -> str:
    """The path below `/v1/` as the client encoded it, so ids with `%2F` survive forwarding."""
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    path = raw.split(b"?", 1)[0].decode("latin-1")
    prefix = "/api/v1/" if path.startswith("/api/v1/") else "/v1/"
    return path[len(prefix) :]
