"""The admin API, `/admin/v1`: the stored keys (list, create, show, change, revoke, rotate),
the usage report and every member's budget windows, as JSON under the config's field names.

Only an admin credential calls it (`[admin]`'s token, or a key made with `keys create NAME
--admin`), and such a credential calls nothing under `/v1`; with none configured, every admin
endpoint answers 404 saying how to turn the API on. Each handler reads top to bottom: the
admin's name, the input checked, the action run on a thread (the key store and the ledger are
synchronous), the roster reloaded so this process sees a change at once, the answer. The key
store's and the ledger's failures become HTTP errors in one place (`admin`). Admin requests
spend nothing: no ledger row, no limiter.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway import reports
from gateway.budgets import period
from gateway.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    StoreUnavailable,
    UnsupportedMediaType,
)
from gateway.keys import shown
from gateway.keystore import KeyStore, KeyStoreError, NameTaken, StoredKey, UnknownKey, actions
from gateway.keystore.fields import described, everyones_limits, rfc3339
from gateway.ledger import LedgerError, spend, totals
from gateway.pipeline import Gateway, gateway_of, read_body

logger = logging.getLogger("gateway.admin")

MAX_BODY_BYTES = 64 * 1024
"""An admin body is a handful of fields: anything larger is a mistake."""
SHOWN_ONCE = (
    "This is the only time the key is shown: the gateway keeps only its SHA-256. "
    "Store it now; a lost key can only be rotated."
)
OFF = (
    "The admin API is off: no admin credential is configured. Turn it on with an [admin] "
    "section in the config (token_env = the name of an environment variable holding a token of "
    "16 or more characters, or token_sha256 = its `nanogpt-gateway hash-key`), or create an "
    "admin key with `nanogpt-gateway keys create NAME --admin`."
)

Handler = Callable[[Request, Gateway, str], Awaitable[Response]]


def admin(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """`handler(request, gateway, actor)` for admin credentials only, with the key store's and
    the ledger's errors answered as HTTP errors."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        gateway = gateway_of(request)
        try:
            actor = await _authenticate(request, gateway)
            return await handler(request, gateway, actor)
        except UnknownKey as exc:
            raise NotFound(f"{exc}.", code="key_not_found") from None
        except NameTaken as exc:
            raise Conflict(f"{exc}.", code="name_taken", param="name") from None
        except KeyStoreError as exc:
            logger.warning("admin API: %s", exc)
            raise StoreUnavailable(f"The key store cannot be used just now: {exc}") from None
        except LedgerError as exc:
            raise StoreUnavailable(
                f"The usage ledger cannot be read just now: {exc}", code="ledger_unavailable"
            ) from None

    return endpoint


async def _authenticate(request: Request, gateway: Gateway) -> str:
    """The admin credential's name (the audit's actor), 404 while the API is off. The store
    is looked at first, so a key another process just revoked is refused here at once."""
    roster = gateway.keys
    await roster.refresh()
    if not roster.ring.admin_api:
        raise NotFound(OFF, code="admin_api_disabled")
    return roster.authenticate_admin(request.headers, _now(gateway))


@admin
async def list_keys(request: Request, gateway: Gateway, actor: str) -> Response:
    """`GET /keys`: the stored keys, `?all=true` revoked and expired ones too."""
    query = _query(request, {"all"})
    every = _flag(query, "all")
    now = _now(gateway)
    stored = await asyncio.to_thread(_store(gateway).stored_keys)  # last used as written
    keys = [k for k in stored if every or k.status(now) not in ("revoked", "expired")]
    return JSONResponse({"object": "list", "data": [_listed(gateway, k, now) for k in keys]})


@admin
async def create_key(request: Request, gateway: Gateway, actor: str) -> Response:
    """`POST /keys`: a new key, shown in full in this answer and never again."""
    _query(request, set())
    data = await _json_object(request)
    now, store = _now(gateway), _store(gateway)
    members = {m.name for m in gateway.settings.members}
    key, secret = await asyncio.to_thread(
        actions.create, store, data, actor=actor, now=now, config_names=members
    )
    await _changed(gateway, actor, "create", key)
    headers = {"location": f"/admin/v1/keys/{key.name}", "cache-control": "no-store"}
    body = {**_listed(gateway, key, now), "key": secret, "warning": SHOWN_ONCE}
    return JSONResponse(body, status_code=201, headers=headers)


@admin
async def show_key(request: Request, gateway: Gateway, actor: str) -> Response:
    """`GET /keys/{name}`: the key of that name that is not revoked."""
    _query(request, set())
    key = await asyncio.to_thread(_store(gateway).get, request.path_params["name"])
    return JSONResponse(_listed(gateway, key, _now(gateway)))


@admin
async def update_key(request: Request, gateway: Gateway, actor: str) -> Response:
    """`PATCH /keys/{name}`: set the fields the body names (a limit set to `null` returns to
    the `[limits]` default); `"disabled": true|false` disables or enables the key."""
    _query(request, set())
    name, data = request.path_params["name"], await _json_object(request)
    now = _now(gateway)
    key = await asyncio.to_thread(actions.update, _store(gateway), name, data, actor=actor, now=now)
    if data:
        await _changed(gateway, actor, "update", key)
    return JSONResponse(_listed(gateway, key, now))


@admin
async def revoke_key(request: Request, gateway: Gateway, actor: str) -> Response:
    """`DELETE /keys/{name}`: the key stops working everywhere within a poll (here, at once);
    it stays listed under `?all=true`, and its name is free again."""
    _query(request, set())
    now, name = _now(gateway), request.path_params["name"]
    key = await asyncio.to_thread(actions.revoke, _store(gateway), name, actor=actor, now=now)
    await _changed(gateway, actor, "revoke", key)
    return JSONResponse(_listed(gateway, key, now))


@admin
async def rotate_key(request: Request, gateway: Gateway, actor: str) -> Response:
    """`POST /keys/{name}/rotate`: a new secret for the same key (name, limits, history); the
    old one keeps working for `grace_seconds` (default 0: it stops at once)."""
    _query(request, set())
    data = await _json_object(request, optional=True)
    for field in data:
        if field != "grace_seconds":
            raise InvalidRequest(
                f"{field}: unknown field; expected grace_seconds",
                param=field,
                code="invalid_key_field",
            )
    grace = data.get("grace_seconds", 0)
    if isinstance(grace, bool) or not isinstance(grace, int | float):
        raise InvalidRequest(
            f"grace_seconds: expected a number of seconds, got {grace!r}",
            param="grace_seconds",
            code="invalid_key_field",
        )
    now, name = _now(gateway), request.path_params["name"]
    key, secret = await asyncio.to_thread(
        actions.rotate, _store(gateway), name, float(grace), actor=actor, now=now
    )
    await _changed(gateway, actor, "rotate", key)
    body = {**_listed(gateway, key, now), "key": secret, "warning": SHOWN_ONCE}
    return JSONResponse(body, headers={"cache-control": "no-store"})


@admin
async def usage(request: Request, gateway: Gateway, actor: str) -> Response:
    """`GET /usage?since=&until=&by=`: the `usage` command's JSON report, from the ledger as
    written so far (rows still queued in this process are not in it yet)."""
    query = _query(request, {"since", "until", "by"})
    by = query.get("by", "member")
    if by not in reports.GROUPINGS:
        raise InvalidRequest(
            f"by: cannot group by {by!r}; expected one of {', '.join(reports.GROUPINGS)}",
            param="by",
        )
    now = datetime.fromtimestamp(_now(gateway), UTC)
    since, until = _when(query, "since", now), _when(query, "until", now)
    path = gateway.settings.database.location
    rows = await asyncio.to_thread(totals, path, since=since, until=until, by=by)
    document = reports.usage_document(rows, by)
    return JSONResponse({**document, "since": rfc3339(since), "until": rfc3339(until)})


@admin
async def limits(request: Request, gateway: Gateway, actor: str) -> Response:
    """`GET /limits`: what `nanogpt-gateway limits` prints, as this process counts it: every
    config member's and stored key's budget windows, members the ledger saw this month under
    the `[limits]` defaults, then the team's."""
    _query(request, set())
    settings, now = gateway.settings, _now(gateway)
    month = period("month", now, ZoneInfo(settings.limits.timezone)).start
    spent_by = await asyncio.to_thread(spend, settings.database.location, since=month)
    defaults = settings.anonymous.limits
    named = everyones_limits(settings.members, gateway.keys.stored, defaults, settings.policy)
    members = reports.limit_members(named, [m for m, _, _ in spent_by], defaults)
    rows = reports.limit_rows(members, settings.limits, gateway.limiter, now)
    return JSONResponse({"object": "list", "data": [reports.limit_record(r) for r in rows]})


async def _changed(gateway: Gateway, actor: str, action: str, key: StoredKey) -> None:
    """After a change: this process's roster reloaded, and one log line (never a secret)."""
    await gateway.keys.refresh()
    logger.info("admin %r: %s key %r (%s)", actor, action, key.name, shown(key.public_id))


def _listed(gateway: Gateway, key: StoredKey, now: float) -> dict[str, Any]:
    spent, _ = gateway.limiter.spent(key.name, "month", now)
    return {**described(key, now), "spent_usd_month": str(spent)}


def _store(gateway: Gateway) -> KeyStore:
    store = gateway.keys.store
    if store is None:
        raise StoreUnavailable("This gateway runs without a key store.")
    return store


def _now(gateway: Gateway) -> float:
    return gateway.tallies.clock()


async def _json_object(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's body: a JSON object (400 otherwise), sent as `application/json` (415
    otherwise); with `optional`, an empty body is `{}`."""
    try:
        body = await read_body(request, MAX_BODY_BYTES)
    except PayloadTooLarge:
        raise PayloadTooLarge(f"An admin API body is at most {MAX_BODY_BYTES} bytes.") from None
    if optional and not body.strip():
        return {}
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(
            f"The admin API reads JSON bodies: send 'Content-Type: application/json' "
            f"(got {media_type or 'none'!r}).",
        )
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest(
            f"The body must be a JSON object of fields, not {type(data).__name__}.",
            code="invalid_body",
        )
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _query(request: Request, allowed: Collection[str]) -> Mapping[str, str]:
    """The query parameters, 400 for one this endpoint does not read (a typo would otherwise
    go unnoticed)."""
    query = request.query_params
    for name in query:
        if name not in allowed:
            expected = f"expected {', '.join(sorted(allowed))}" if allowed else "it takes none"
            raise InvalidRequest(f"{name}: unknown query parameter; {expected}", param=name)
    return query


def _flag(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "false").strip().lower()
    if value not in ("true", "1", "false", "0"):
        raise InvalidRequest(f"{name}: expected true or false, got {value!r}", param=name)
    return value in ("true", "1")


def _when(query: Mapping[str, str], name: str, now: datetime) -> float | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        return reports.parse_when(text, now=now)
    except ValueError as exc:
        raise InvalidRequest(f"{name}: {exc}", param=name) from None


def _by_method(
    **handlers: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """One endpoint for a path several methods share, so a wrong method gets one 405 that
    names them all (`Allow`)."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return endpoint


ROUTES = [
    Route("/keys", _by_method(GET=list_keys, POST=create_key), methods=["GET", "POST"]),
    Route(
        "/keys/{name}",
        _by_method(GET=show_key, PATCH=update_key, DELETE=revoke_key),
        methods=["GET", "PATCH", "DELETE"],
    ),
    Route("/keys/{name}/rotate", rotate_key, methods=["POST"]),
    Route("/usage", usage, methods=["GET"]),
    Route("/limits", limits, methods=["GET"]),
]
"""The admin API's routes, mounted at `/admin/v1`."""
