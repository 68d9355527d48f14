"""Forwarding a checked call to NanoGPT: asking a stream for its usage on the client's behalf
(and taking that back if NanoGPT refuses it), and choosing what reads usage from the answer.
Nothing here knows the HTTP client library.
"""

from __future__ import annotations

import logging

from starlette.requests import Request

from gateway import protocol
from gateway.endpoints import Target
from gateway.pipeline import Gateway
from gateway.sse import EventStream
from gateway.tally import Tally
from gateway.upstream import UpstreamResponse
from gateway.usage import BodyWatcher, Dialect, JsonBody, Passthrough, UsageReader

logger = logging.getLogger("gateway.forwarding")


async def send(
    request: Request,
    gateway: Gateway,
    target: Target,
    call: protocol.Call,
    body: bytes,
    tally: Tally,
) -> tuple[UpstreamResponse, bool]:
    """Send the request upstream, asking for stream usage on the client's behalf where needed;
    also says whether the relay must hide that usage from the client."""
    tally.forwarded = True
    if not _asks_stream_usage(gateway, call, tally):
        return await _open(request, gateway, target, body), False
    upstream = await _open(request, gateway, target, protocol.with_stream_usage(call, body))
    if not await _refuses_stream_options(upstream):
        return upstream, True
    gateway.no_stream_usage.add(str(call.model))
    tally.stream_usage_unsupported = True
    logger.warning(
        "NanoGPT refused stream_options for %s; its streams go unmetered from now on", call.model
    )
    return await _open(request, gateway, target, body), False


def _asks_stream_usage(gateway: Gateway, call: protocol.Call, tally: Tally) -> bool:
    """Whether to add `stream_options.include_usage` for a client that did not ask for it."""
    if not (call.stream_usage_injectable and gateway.settings.metering.inject_stream_usage):
        return False
    if call.model in gateway.no_stream_usage:
        tally.stream_usage_unsupported = True
        return False
    return True


async def _open(
    request: Request, gateway: Gateway, target: Target, body: bytes
) -> UpstreamResponse:
    return await gateway.upstream.open(
        request.method,
        "/v1/" + target.path,
        request.scope.get("query_string", b""),
        request.headers.items(),
        body,
        at_root=target.endpoint.base == "root",
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
    """What reads usage and cost from this response's body as it passes (nothing, for an
    error or an endpoint that costs nothing)."""
    metering = call.endpoint.metering
    if upstream.status_code >= 400 or metering == "free":
        return Passthrough()
    dialect: Dialect = "anthropic" if metering == "anthropic" else "openai"
    reader = UsageReader(dialect, top_level_cost=metering in ("cost", "unreported"))
    if upstream.is_event_stream:
        return EventStream(reader, hide_usage=hide_usage)
    return JsonBody(reader) if upstream.is_json else Passthrough()
