"""The HTTP server's own protections, before a request reaches the app and as the server stops.

`guarded(settings)` is uvicorn's httptools protocol with bounds it lacks: a request head over
`max_header_bytes` or `max_headers` is answered 431, a head not in within
`header_timeout_seconds` (of the connection, or of the previous answer) or a body not in within
`body_timeout_seconds` of its head 408; the timers cover receiving a request only, never an
answer. `Drain` wraps the app for shutdown: 503 `shutting_down` once it drains, and `cut()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.config import Settings
from gateway.errors import error_body
from gateway.relay import SHUTTING_DOWN

logger = logging.getLogger("gateway.server")

LINGER_SECONDS = 2.0
"""After a refusal, what the client still sends is read and dropped for this long before the
connection closes: closing with unread data sends a reset, which can destroy the answer before
the client reads it (RFC 9112 section 9.6)."""


def guarded(settings: Settings) -> type[asyncio.Protocol]:
    """The protocol class to pass as `uvicorn.Config(http=...)`, with `[server]`'s bounds."""
    server = settings.server

    class Protocol(GuardedProtocol):
        max_header_bytes = server.max_header_bytes
        max_headers = server.max_headers
        header_timeout = server.header_timeout_seconds
        body_timeout = server.body_timeout_seconds

    return Protocol


class GuardedProtocol(HttpToolsProtocol):
    """Per request: a byte count while the head arrives, and one timer armed and cancelled."""

    max_header_bytes: int
    max_headers: int
    header_timeout: float
    body_timeout: float
    _head = True  # receiving a request head (or lingering after a refusal)
    _seen = 0  # bytes received since that head began
    _body_due = False  # head in, body not yet complete
    _refused = False
    _refusal: tuple[int, str, str] | None = None
    _timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head:
            if self._refused:
                return
            self._seen += len(data)
        super().data_received(data)
        if self._refused:
            return
        if self._head and self._seen > self.max_header_bytes:
            self._refuse(431, "request_header_fields_too_large", self._too_large())
        elif self._body_due and self._timer is None:
            self._arm(self.body_timeout, self._body_timed_out)

    def on_headers_complete(self) -> None:
        self._disarm()
        if len(self.headers) > self.max_headers:
            message = f"A request may carry at most {self.max_headers} header fields."
            self._refusal = (431, "request_header_fields_too_large", message)
            raise _Refused  # httptools turns it into a parser error; see send_400_response
        if self._seen > self.max_header_bytes and self._head_bytes() > self.max_header_bytes:
            self._refusal = (431, "request_header_fields_too_large", self._too_large())
            raise _Refused
        self._head, self._body_due = False, True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._head, self._body_due, self._seen = True, False, 0
        if self.cycle.response_complete:  # answered before its body was in (a 401)
            self._arm(self.header_timeout, self._head_timed_out)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        queued = bool(self.pipeline)
        super().on_response_complete()
        if self._head and not queued and not self.transport.is_closing():
            self._arm(self.header_timeout, self._head_timed_out)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to an unparsable request (and to a callback's `_Refused`), in the
        one error shape."""
        refusal, self._refusal = self._refusal, None
        self._refuse(*(refusal or (400, "invalid_http_request", msg)))

    def _head_timed_out(self) -> None:
        self._timer = None
        if not self._seen:  # an idle connection: nothing to answer
            self.transport.close()
            return
        seconds = self.header_timeout
        self._refuse(408, "request_timeout", f"The request head took longer than {seconds} s.")

    def _body_timed_out(self) -> None:
        self._timer = None
        seconds = self.body_timeout
        self._refuse(408, "request_timeout", f"The request body took longer than {seconds} s.")

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer in the OpenAI error shape, stop parsing, and close after a linger; or just
        close, when an answer on this connection has begun (this request's, or a previous
        one's still going out to a pipelining client) and the refusal would garble it."""
        logger.info("refused a request from %s: %s %s", self.client, status, code)
        cycle, in_head = self.cycle, self._head
        self._head, self._refused, self._body_due = True, True, False
        if cycle is not None and (
            not cycle.response_complete if in_head else cycle.response_started
        ):
            self.transport.close()
            return
        body = json.dumps(error_body(message, type="invalid_request_error", code=code)).encode()
        head = [STATUS_LINE[status]]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm(LINGER_SECONDS, self.transport.close)

    def _too_large(self) -> str:
        return f"The request line and headers may take at most {self.max_header_bytes} bytes."

    def _head_bytes(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _arm(self, seconds: float, callback: Callable[[], object]) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; `_refusal` says how to answer."""


DRAIN_SCOPE_KEY = "nanogpt_gateway.drain"
"""Where `Drain` puts itself in each request's scope (`metered` reads `.cutting` there)."""


class Drain:
    """The app, as the server stops: from `begin()` every new request is answered 503
    `shutting_down` (with `Retry-After`); `cut()` (the end of the grace) cancels what still
    runs, and a request cancelled before its answer began gets that 503 too. A relayed
    stream ends itself with an error event (`relay.py`)."""

    def __init__(self, app: ASGIApp, *, retry_after_seconds: int = 5) -> None:
        self.app = app
        self.draining = False
        self.cutting = False
        self._headers = [
            (b"content-type", b"application/json"),
            (b"retry-after", str(retry_after_seconds).encode()),
            (b"connection", b"close"),
        ]

    def begin(self) -> None:
        self.draining = True

    def cut(self, tasks: set[asyncio.Task[None]]) -> None:
        self.cutting = True
        if tasks:
            logger.warning("the grace period is over: cutting %d request(s)", len(tasks))
        for task in tasks:
            task.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.draining and scope["type"] == "http":
            await self._refuse(send)
            return
        try:
            # The routes learn from the scope that a cancellation is the server's cut.
            await self.app({**scope, DRAIN_SCOPE_KEY: self}, receive, send)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self.cutting or task is None:
                raise
            task.uncancel()
            # uvicorn raises if the answer had already begun: then there is nothing to add.
            with contextlib.suppress(RuntimeError):
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(SHUTTING_DOWN.body()).encode()
        await send({"type": "http.response.start", "status": 503, "headers": self._headers})
        await send({"type": "http.response.body", "body": body})
