"""Forwarding a checked call to NanoGPT: asking a stream for its usage on the client's behalf
(and taking that back if NanoGPT refuses it), dropping the request if the client leaves before
NanoGPT answers, and choosing what reads usage from the answer. Nothing here knows the HTTP
client library.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from gateway import protocol
from gateway.endpoints import Target
from gateway.errors import QuotaExceeded
from gateway.limits.base import team_paused
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
    also says whether the relay must hide that usage from the client. A client that leaves
    before NanoGPT's headers arrive drops the upstream request (`ClientDisconnect`)."""
    tally.forwarded = True
    async with _Hangup(request.receive):
        return await _send(request, gateway, target, call, body, tally)


async def _send(
    request: Request,
    gateway: Gateway,
    target: Target,
    call: protocol.Call,
    body: bytes,
    tally: Tally,
) -> tuple[UpstreamResponse, bool]:
    if not _asks_stream_usage(gateway, call, tally):
        return await _checked(await _open(request, gateway, target, body, tally), gateway), False
    upstream = await _open(request, gateway, target, protocol.with_stream_usage(call, body), tally)
    if not await _refuses_stream_options(upstream):
        return await _checked(upstream, gateway), True
    tally.stream_usage_unsupported = True
    if "stream_options" in call.payload:
        # The client's own stream_options may be what NanoGPT refused: one member's odd field
        # must not switch off metering for everyone. Sent as written, it is theirs to answer.
        logger.info(
            "NanoGPT refused stream_options for %s; sent again as the client wrote it",
            call.model,
        )
    else:
        gateway.no_stream_usage[str(call.model)] = True
        logger.warning(
            "NanoGPT refused stream_options for %s; its streams go unmetered for %.0f s",
            call.model,
            gateway.no_stream_usage.ttl,
        )
    return await _checked(await _open(request, gateway, target, body, tally), gateway), False


DAILY_LIMIT_CODES = frozenset({"daily_rpd_limit_exceeded", "daily_usd_limit_exceeded"})
"""NanoGPT's per-key daily caps (reset at 00:00 UTC): the team key's own limits."""


async def _checked(upstream: UpstreamResponse, gateway: Gateway) -> UpstreamResponse:
    """NanoGPT's own refusals of the team key, in the words the OpenAI SDKs act on: an empty
    balance (402, which the SDKs do not know) and the key's daily limit (a 429 the SDKs would
    retry for hours) become final `insufficient_quota` answers; the daily limit also pauses
    what costs money until it resets, without asking NanoGPT again."""
    if upstream.status_code not in (402, 429):
        return upstream
    try:
        body = await upstream.error_body()
    finally:
        if upstream.status_code == 402:
            await upstream.aclose()
    if upstream.status_code == 402:
        gateway.poll_balance_now()
        raise QuotaExceeded(
            "NanoGPT refused the request: the team's balance is used up (402 Insufficient "
            "balance). A gateway admin needs to top it up.",
            limit="nanogpt_balance",
            code="credit_balance_exhausted",
            headers={"x-should-retry": "false"},
            from_upstream=True,
        )
    if _error_code(body) not in DAILY_LIMIT_CODES:
        return upstream
    await upstream.aclose()
    now = gateway.tallies.clock()
    until = now + _retry_after(upstream, now)
    gateway.limiter.pause_team(until)
    refusal = team_paused(until, now)
    refusal.from_upstream = True
    raise refusal


def _error_code(body: bytes) -> str | None:
    try:
        error: Any = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def _retry_after(upstream: UpstreamResponse, now: float) -> float:
    """NanoGPT's `Retry-After` seconds, else the time to the next 00:00 UTC (when its daily
    limits reset)."""
    for name, value in upstream.raw_headers:
        if name.lower() == b"retry-after" and value.strip().isdigit():
            return float(value)
    today = datetime.fromtimestamp(now, UTC).date()
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)
    return midnight.timestamp() - now


def _asks_stream_usage(gateway: Gateway, call: protocol.Call, tally: Tally) -> bool:
    """Whether to add `stream_options.include_usage` for a client that did not ask for it."""
    if not (call.stream_usage_injectable and gateway.settings.metering.inject_stream_usage):
        return False
    if call.model in gateway.no_stream_usage:
        tally.stream_usage_unsupported = True
        return False
    return True


async def _open(
    request: Request, gateway: Gateway, target: Target, body: bytes, tally: Tally
) -> UpstreamResponse:
    member = tally.member
    header = member.end_user_header if member is not None else None
    return await gateway.upstream.open(
        request.method,
        "/v1/" + target.path,
        request.scope.get("query_string", b""),
        request.headers.items(),
        body,
        at_root=target.endpoint.base == "root",
        drop_headers=frozenset((header,)) if header else frozenset(),
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


WATCH_AFTER_SECONDS = 0.05
"""How long NanoGPT may take to answer before the client's disconnect is watched for."""


class _Hangup:
    """Cancels the task it is entered in when the client disconnects, and turns that
    cancellation into `ClientDisconnect` on the way out.

    A model may think for minutes before NanoGPT sends its headers, and nothing is written to
    the client meanwhile, so without this watch a client that gives up is noticed only at the
    read timeout, with the whole answer billed. The body has been read by now, so what the
    client sends next can only be its disconnect. The watch task starts only once NanoGPT has
    kept the request `WATCH_AFTER_SECONDS`: started at once, it cost ~10 us a request (uvloop,
    measured), 3 % of a fast answer; behind a timer, ~3 us. A client gone meanwhile is seen as
    soon as the watch starts."""

    __slots__ = ("_client_left", "_receive", "_task", "_timer", "_watch")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._client_left = False
        self._watch: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        self._task = asyncio.current_task()
        self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_SECONDS, self._start)

    def _start(self) -> None:
        self._watch = asyncio.ensure_future(self._cancel_on_disconnect())

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._timer.cancel()
        watch = self._watch
        if watch is not None:
            watch.cancel()
            if watch.done() and not watch.cancelled():
                watch.exception()  # a receive() that failed: nothing left to tell
        if kind is asyncio.CancelledError and self._client_left:
            assert self._task is not None
            if self._task.uncancel() == 0:  # nobody else asked: not a shutdown
                raise ClientDisconnect() from None

    async def _cancel_on_disconnect(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if self._task is not None:
            self._client_left = True
            self._task.cancel()


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
