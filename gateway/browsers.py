"""What browsers may do with the gateway, as one pure ASGI middleware: the `Host` a request
names must be one the gateway answers to (DNS rebinding), a cross-site request that could
spend money must come from an allowed origin, and allowed origins get CORS.

Not starlette's `CORSMiddleware` and `TrustedHostMiddleware`: they answer a preflight `200 OK`
and refusals in plain text, where clients here expect `204` and every refusal in OpenAI's
error shape, and neither refuses a cross-site simple request (a form POST with `text/plain`
needs no preflight, so CORS alone never stops it from spending).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_body

EXPOSED = ", ".join(
    (
        "x-gateway-request-id",
        "retry-after",
        "retry-after-ms",
        "x-should-retry",
        "x-gateway-budget-remaining-usd",
        "x-gateway-budget-reset",
        *(
            f"x-ratelimit-{what}-{kind}"
            for kind in ("requests", "tokens")
            for what in ("limit", "remaining", "reset")
        ),
    )
)
"""Response headers page scripts may read: the request id and everything about limits."""
ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
MAX_AGE_SECONDS = "600"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class BrowserGuard:
    """Host check, cross-site refusal and CORS in front of the app (see the module docstring).
    `hosts`: the names the gateway answers to (`*` any); `origins`: the page origins allowed
    to call it (`*` any)."""

    def __init__(self, app: ASGIApp, *, hosts: Iterable[str], origins: Iterable[str]) -> None:
        self.app = app
        self.hosts = frozenset(h.lower() for h in hosts)
        self.any_host = "*" in self.hosts
        self.origins = frozenset(o.lower().rstrip("/") for o in origins)
        self.any_origin = "*" in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = preflight = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"access-control-request-method":
                preflight = value
        if not self.any_host and _hostname(host) not in self.hosts:
            await _refuse(send, 400, "invalid_host", f"This gateway does not answer to {host!r}.")
            return
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = self.any_origin or origin.lower().rstrip("/") in self.origins
        method = scope["method"]
        if method == "OPTIONS" and preflight is not None:
            await self._preflight(scope, send, origin, allowed)
            return
        if not allowed and method not in SAFE_METHODS and not _same_origin(origin, host):
            await _refuse(
                send,
                403,
                "cross_origin_not_allowed",
                f"Requests from pages at {origin!r} are not allowed (server.cors_origins).",
            )
            return
        if not allowed:
            await self.app(scope, receive, send)
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if not k.startswith(b"access-")
                ]
                headers += _cors(origin)
                headers.append((b"access-control-expose-headers", EXPOSED.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_cors)

    async def _preflight(self, scope: Scope, send: Send, origin: str, allowed: bool) -> None:
        """Answered here, without a member key and without reaching NanoGPT; the requested
        headers are echoed (browser SDKs send `X-Stainless-*` headers no fixed list keeps up
        with)."""
        if not allowed:
            await _refuse(
                send,
                403,
                "cross_origin_not_allowed",
                f"Pages at {origin!r} may not call this gateway (server.cors_origins).",
            )
            return
        requested = next(
            (v for k, v in scope["headers"] if k == b"access-control-request-headers"), b""
        )
        headers = [
            *_cors(origin),
            (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
            (b"access-control-max-age", MAX_AGE_SECONDS.encode()),
        ]
        if requested:
            headers.append((b"access-control-allow-headers", requested))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def _cors(origin: str) -> list[tuple[bytes, bytes]]:
    return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]


def _hostname(host: str | None) -> str:
    """The name in a `Host` header, without its port (`[::1]:8080` is `::1`)."""
    if not host:
        return ""
    host = host.lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _same_origin(origin: str, host: str | None) -> bool:
    """A page served by the gateway's own host and port (the gateway serves none, but a
    reverse proxy in front might)."""
    return host is not None and origin.lower().split("://", 1)[-1] == host.lower()


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps(error_body(message, type="invalid_request_error", code=code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
