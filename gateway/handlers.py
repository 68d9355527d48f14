"""The routes, each readable top to bottom: authenticate, parse, check policy, proxy, relay.

Errors are raised as `GatewayError` and rendered by the one handler in `app.py`; nothing here
knows the HTTP client library or catches a client-library exception.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway import policy, protocol
from gateway.catalog import Catalog
from gateway.config import Settings
from gateway.errors import (
    ModelNotAllowed,
    ModelNotFound,
    PayloadTooLarge,
    PermissionDenied,
)
from gateway.keys import KeyRing
from gateway.proxy import Upstream
from gateway.relay import Relay
from gateway.types import Member, ModelInfo

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Gateway:
    """Everything a request needs, built once by the app's lifespan."""

    settings: Settings
    keys: KeyRing
    catalog: Catalog
    upstream: Upstream


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.state.gateway
    return gateway


async def proxy(request: Request) -> Response:
    """Any `/v1/{path}`: checked, then forwarded to NanoGPT and relayed as it streams."""
    gateway = gateway_of(request)
    member = gateway.keys.authenticate(request.headers)
    raw_subpath = _raw_subpath(request)
    endpoint = protocol.endpoint_of(raw_subpath)
    changes_account = request.method not in READ_METHODS and endpoint.split("/")[0] == "characters"
    if changes_account and not member.admin:
        raise PermissionDenied(
            f"Member {member.name!r} may not change account data ({request.method} /v1/{endpoint}); "
            "ask a gateway admin.",
            code="admin_required",
        )
    body = await _read_body(request, gateway.settings.upstream.max_body_bytes)
    call = protocol.parse_call(
        endpoint, request.method, request.headers.get("content-type", ""), body
    )
    if call.model is not None:
        await _allowed_model(gateway, member, call.model)
    elif endpoint in protocol.MODEL_ENDPOINTS and not policy.is_unrestricted(
        gateway.settings.policy, member
    ):
        raise ModelNotAllowed(
            "This request names no model, so it cannot be checked against the gateway's "
            "model policy; name the model explicitly.",
            param="model",
        )
    upstream = await gateway.upstream.open(
        request.method,
        "/v1/" + raw_subpath,
        request.scope.get("query_string", b""),
        request.headers.items(),
        body,
    )
    return Relay(upstream)


async def list_models(request: Request) -> Response:
    """`GET /v1/models`: the models this member may use, from the cached catalog."""
    gateway = gateway_of(request)
    member = gateway.keys.authenticate(request.headers)
    snapshot = await gateway.catalog.get()
    models = policy.visible(gateway.settings.policy, member, snapshot.text)
    detailed = _wants_detailed(request)
    return JSONResponse({"object": "list", "data": [_render(m, detailed) for m in models]})


async def retrieve_model(request: Request) -> Response:
    """`GET /v1/models/{id}`: one model, if this member may use it."""
    gateway = gateway_of(request)
    member = gateway.keys.authenticate(request.headers)
    model = await _allowed_model(gateway, member, request.path_params["model_id"])
    return JSONResponse(_render(model, _wants_detailed(request)))


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready once a catalog has loaded: without one, no request could be checked."""
    catalog = gateway_of(request).catalog
    snapshot = catalog.snapshot or await catalog.get()
    return JSONResponse({"status": "ready", "models": len(snapshot.text)})


async def _allowed_model(gateway: Gateway, member: Member, model_id: str) -> ModelInfo:
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


def _wants_detailed(request: Request) -> bool:
    return request.query_params.get("detailed", "").lower() in ("true", "1")


def _render(model: ModelInfo, detailed: bool) -> dict[str, object]:
    """OpenAI's four fields, or with `?detailed=true` everything NanoGPT gave (as NanoGPT does)."""
    return {**model.detailed, **model.basic()} if detailed else model.basic()


def _raw_subpath(request: Request) -> str:
    """The path below `/v1/` as the client encoded it, so ids with `%2F` survive forwarding."""
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    path = raw.split(b"?", 1)[0].decode("latin-1")
    prefix = "/api/v1/" if path.startswith("/api/v1/") else "/v1/"
    return path[len(prefix) :]


async def _read_body(request: Request, limit: int) -> bytes:
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
