"""The routes, each readable top to bottom as the pipeline's steps: authenticate, classify,
read, check the model, send, relay. Every `/v1` route is `metered`.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway import policy, protocol
from gateway.errors import InvalidApiKey
from gateway.keys import presented_key
from gateway.metrics import Metrics
from gateway.pipeline import (
    Answer,
    Gateway,
    allowed_model,
    authenticate,
    check_model,
    gateway_of,
    metered,
    parse,
    raw_subpath,
    read_body,
    require_admin_for,
    send,
    watcher_for,
)
from gateway.relay import Relay
from gateway.tally import Tally
from gateway.types import ModelInfo


@metered
async def proxy(request: Request, gateway: Gateway, tally: Tally) -> Answer:
    """Any `/v1/{path}`: checked, then forwarded to NanoGPT and relayed as it streams."""
    member = authenticate(request, gateway, tally)
    subpath = raw_subpath(request)
    endpoint = tally.endpoint = protocol.endpoint_of(subpath)
    require_admin_for(endpoint, request.method, member)
    body = await read_body(request, gateway.settings.upstream.max_body_bytes)
    call = await parse(request, endpoint, body)
    tally.model_id, tally.stream = call.model, call.stream
    tally.model = await check_model(gateway, member, call)
    upstream, hide_usage = await send(request, gateway, subpath, call, body, tally)
    return Relay(upstream, watcher_for(call, upstream, hide_usage=hide_usage), tally)


@metered
async def list_models(request: Request, gateway: Gateway, tally: Tally) -> Response:
    """`GET /v1/models`: the models this member may use, from the cached catalog."""
    member = authenticate(request, gateway, tally)
    tally.endpoint = "models"
    snapshot = await gateway.catalog.get()
    models = policy.visible(gateway.settings.policy, member, snapshot.text)
    detailed = _wants_detailed(request)
    return JSONResponse({"object": "list", "data": [_render(m, detailed) for m in models]})


@metered
async def retrieve_model(request: Request, gateway: Gateway, tally: Tally) -> Response:
    """`GET /v1/models/{id}`: one model, if this member may use it."""
    member = authenticate(request, gateway, tally)
    tally.endpoint = "models"
    model = await allowed_model(gateway, member, request.path_params["model_id"])
    return JSONResponse(_render(model, _wants_detailed(request)))


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
    """Ready once a catalog has loaded: without one, no request could be checked."""
    catalog = gateway_of(request).catalog
    snapshot = catalog.snapshot or await catalog.get()
    return JSONResponse({"status": "ready", "models": len(snapshot.text)})


def _wants_detailed(request: Request) -> bool:
    return request.query_params.get("detailed", "").lower() in ("true", "1")


def _render(model: ModelInfo, detailed: bool) -> dict[str, object]:
    """OpenAI's four fields, or with `?detailed=true` everything NanoGPT gave (as NanoGPT does)."""
    return {**model.detailed, **model.basic()} if detailed else model.basic()
