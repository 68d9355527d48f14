"""The composition root: `create_app(settings)` wires config, keys, catalog, upstream, tallies.

The lifespan builds the one upstream client, the catalog and the usage ledger, starts loading
the catalog and polling the balance in the background (the gateway starts even when NanoGPT is
down), and at shutdown, once the server has let in-flight requests finish, flushes the ledger.
Every error leaves as an OpenAI error body, whichever layer raised it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from gateway import admin, endpoints, routes
from gateway.balance import BALANCE_PATH, poll_balance
from gateway.browsers import BrowserGuard
from gateway.budgets import WINDOWS, Window, budget_of, period
from gateway.catalog import Catalog, Snapshot
from gateway.config import ConfigError, Settings, reloaded
from gateway.endpoints import ALL_METHODS
from gateway.errors import GatewayError, error_body
from gateway.keystore import KeyStore, open_keystore
from gateway.keystore.fields import clashing_name
from gateway.ledger import Ledger, LedgerError, open_ledger, spend
from gateway.limits import Limiter, open_limiter
from gateway.limits.base import budget_left
from gateway.metrics import Metrics
from gateway.pipeline import Current, Gateway
from gateway.roster import Roster
from gateway.tally import REQUEST_ID_HEADER, Tallies
from gateway.upstream import Upstream

logger = logging.getLogger("gateway")

CATALOG_RETRY_SECONDS = 5.0


def create_app(
    settings: Settings,
    *,
    upstream: Upstream | None = None,
    keystore: KeyStore | None = None,
    ledger: Ledger | None = None,
    metrics: Metrics | None = None,
    limiter: Limiter | None = None,
    clock: Callable[[], float] = time.time,
    catalog_retry_seconds: float = CATALOG_RETRY_SECONDS,
) -> Starlette:
    """The gateway as an ASGI app, in front of NanoGPT at `settings.upstream.base_url`.

    The seams: `upstream` (a NanoGPT client; built in the lifespan when not given, and then
    closed there too), `keystore` (the stored keys; opened beside the ledger when not given,
    closed at shutdown either way), `ledger` (opened at `[database] url` when not given;
    closed at shutdown either way), `metrics`, and
    `limiter` (the one `[state]` names, in-process or in Redis, seeded from the ledger, when
    not given; started and closed in the lifespan either way), and `clock`
    (wall-clock seconds, for the ledger's times and the budget windows).
    `app.state.metrics` holds the metrics, for a server that exposes them on another port;
    while the app runs, `await app.state.reload(settings)` applies a reloaded config
    (`ConfigError` if it cannot apply, and then nothing changes) and returns the settings it
    kept at their running values.
    """
    metrics = metrics if metrics is not None else Metrics()
    metering = settings.metering

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Current]]:
        client = (
            upstream
            if upstream is not None
            else Upstream(
                settings.upstream.base_url,
                settings.team_key,
                connect_timeout=settings.upstream.connect_timeout_seconds,
                read_timeout=settings.upstream.read_timeout_seconds,
                client_headers=settings.upstream.forward_client_headers,
            )
        )
        sink = ledger if ledger is not None else open_ledger(settings.database.location)
        metrics.watch_ledger(sink)
        store = keystore if keystore is not None else open_keystore(settings.database.location)
        limits = (
            limiter
            if limiter is not None
            else seeded_limiter(
                settings, clock(), on_fallback=metrics.limit_decided_without_backend
            )
        )
        await limits.start()
        tallies = Tallies(
            metrics, sink, limiter=limits, price_overrides=settings.pricing, clock=clock
        )
        _watch_limits(metrics, settings, limits, clock)

        def refreshed(snapshot: Snapshot | None) -> None:
            models = snapshot.models() if snapshot is not None else None
            metrics.catalog_refreshed(settings.catalog.source, models)

        catalog = Catalog(
            client.get_json,
            source=settings.catalog.source,
            ttl_seconds=settings.catalog.ttl_seconds,
            retry_seconds=catalog_retry_seconds,
            on_refresh=refreshed,
        )
        roster = Roster(settings, store)
        await roster.refresh()
        tasks = [
            asyncio.create_task(_load_until_ready(catalog, catalog_retry_seconds)),
            asyncio.create_task(roster.watch()),
        ]
        balance_wanted = asyncio.Event()
        if metering.balance_poll_seconds > 0:
            fetch_balance = functools.partial(client.post_json, BALANCE_PATH)

            def balance_polled(usd: float, nano: float) -> None:
                metrics.balance_polled(usd, nano)
                limits.balance_polled(usd)

            poll = poll_balance(
                fetch_balance, balance_polled, metering.balance_poll_seconds, balance_wanted
            )
            tasks.append(asyncio.create_task(poll))
        gateway = Gateway(settings, roster, catalog, client, tallies, limits, balance_wanted.set)
        current = Current(gateway)

        async def reload(new: Settings) -> list[str]:
            merged, kept = reloaded(current.gateway.settings, new)
            await roster.refresh()  # the names taken in the store now, not 0.5 s ago
            if clash := clashing_name(merged.members, roster.stored):
                raise ConfigError(clash)
            limits.reconfigure(merged.limits)
            tallies.price_overrides = merged.pricing
            roster.configure(merged)
            _watch_limits(metrics, merged, limits, clock)
            current.gateway = dataclasses.replace(current.gateway, settings=merged)
            return kept

        app.state.reload = reload
        try:
            yield {"current": current}
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await roster.close()
            await limits.aclose()
            if upstream is None:
                await client.aclose()
            await asyncio.to_thread(sink.close)
            await asyncio.to_thread(store.close)

    table: list[BaseRoute] = [Route("/healthz", routes.healthz), Route("/readyz", routes.readyz)]
    if metering.metrics_port is None:
        table.append(Route("/metrics", routes.metrics_endpoint(metrics, metering.metrics_token)))
    for prefix in ("/v1", "/api/v1"):
        table.append(Route(f"{prefix}/{{path:path}}", routes.v1, methods=sorted(ALL_METHODS)))
    table.append(Mount("/admin/v1", routes=admin.ROUTES))
    server = settings.server
    if "*" in server.cors_origins:
        logger.warning(
            'server.cors_origins = ["*"]: any web page a member opens may call the gateway '
            "with a key it holds; name the origins instead"
        )
    guard = Middleware(BrowserGuard, hosts=server.allowed_hosts, origins=server.cors_origins)
    app = Starlette(
        routes=table,
        lifespan=lifespan,
        exception_handlers=_EXCEPTION_HANDLERS,
        middleware=[guard],
    )
    app.state.metrics = metrics
    return app


def create_metrics_app(metrics: Metrics, token: str | None) -> Starlette:
    """Only `/metrics`, for `metering.metrics_port`: scrapes then need not reach the API port."""
    table = [Route("/metrics", routes.metrics_endpoint(metrics, token))]
    return Starlette(routes=table, exception_handlers=_EXCEPTION_HANDLERS)


def _watch_limits(
    metrics: Metrics, settings: Settings, limiter: Limiter, clock: Callable[[], float]
) -> None:
    """The limiter's gauges, read at each scrape: configured members' and the team's
    budgets (never end users': unbounded)."""
    budgets: list[tuple[str, str | None, Decimal | None, Window]] = []
    for window in WINDOWS:
        budgets.append(("team", None, budget_of(settings.limits, window, "team_"), window))
        for member in (*settings.members, settings.anonymous):
            budgets.append((member.name, member.name, budget_of(member.limits, window), window))

    def reader(who: str | None, budget: Decimal, window: Window) -> Callable[[], float]:
        return lambda: float(budget_left(limiter, who, budget, window, clock()))

    remaining: dict[tuple[str, str], Callable[[], float]] = {
        (label, window): reader(who, budget, window)
        for label, who, budget, window in budgets
        if budget is not None
    }
    names = [m.name for m in settings.members] or [settings.anonymous.name]
    metrics.watch_limits(names, lambda: float(limiter.reserved_usd()), remaining)


def seeded_limiter(
    settings: Settings,
    now: float,
    *,
    shared: bool = True,
    on_fallback: Callable[[str], None] = lambda _: None,
) -> Limiter:
    """The limiter `[state]` asks for (in Redis, unless `shared` is false), with what the
    ledger says was spent in the current day and month: a restart forgets nothing."""
    location = settings.database.location

    async def spend_since(since: float) -> list[tuple[str, str | None, Decimal]]:
        return await asyncio.to_thread(spend, location, since=since)

    state = settings.state
    limiter = open_limiter(
        settings.limits,
        redis_url=state.redis_url if shared else None,
        redis_password=settings.redis_password.reveal(),
        lease_ttl=state.lease_ttl_seconds,
        on_error=(state.on_redis_error.budgets, state.on_redis_error.rates),
        spend=spend_since,
        on_fallback=on_fallback,
    )
    zone = ZoneInfo(settings.limits.timezone)
    for window in WINDOWS:
        since = period(window, now, zone).start
        try:
            limiter.seed(window, now, spend(settings.database.location, since=since))
        except LedgerError as exc:
            logger.warning("budgets start from zero: %s", exc)
    return limiter


async def _load_until_ready(catalog: Catalog, retry_seconds: float) -> None:
    """Keep trying until the first catalog loads; after that, requests keep it fresh."""
    delay = retry_seconds
    while catalog.snapshot is None and await catalog.refresh() is None:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 60.0)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    headers = {**exc.headers, **_request_id(request)}
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = f"{exc.detail}: {request.method} {request.url.path}"
    if exc.status_code == 404 and (hint := _v1_hint(request) or _admin_hint(request)):
        message = f"{message}. {hint}"
    body = error_body(message, type="invalid_request_error", code=code)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    body = error_body(
        "The gateway failed to handle this request.", type="api_error", code="internal_error"
    )
    return JSONResponse(body, status_code=500, headers=_request_id(request))


def _v1_hint(request: Request) -> str | None:
    """For a known endpoint asked for without `/v1` (`/api/chat/completions`, as a user
    following NanoGPT's own setup pages types it): the URL to use instead."""
    below = request.url.path.removeprefix("/api").strip("/")
    try:
        target = endpoints.classify(below, request.method, forward_unlisted=False)
    except GatewayError:
        return None
    base = f"{request.url.scheme}://{request.url.netloc}/v1"
    return (
        f"The gateway's API is under /v1: set your client's base URL to {base} "
        f"(this request would be {request.method} {base}/{target.path})."
    )


def _admin_hint(request: Request) -> str | None:
    """For a path under `/admin/` that is none of the admin API's: the ones there are."""
    if not request.url.path.startswith("/admin/"):
        return None
    paths = ", ".join(f"/admin/v1{route.path}" for route in admin.ROUTES)
    return f"The admin API's endpoints are {paths}."


def _request_id(request: Request) -> dict[str, str]:
    request_id = getattr(request.state, "request_id", None)
    return {REQUEST_ID_HEADER: request_id} if request_id else {}


_EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    GatewayError: _gateway_error,
    HTTPException: _http_error,
    Exception: _internal_error,
}
