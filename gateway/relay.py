"""Relaying an upstream response to the client, chunk by chunk, as a plain ASGI callable, and
finishing its tally however it ends.

Starlette's `StreamingResponse` only notices a gone client on its next write (ASGI 2.4), which
for a silent upstream (a model still thinking) may be minutes away; this relay listens for the
disconnect itself and closes the upstream at once. Once headers are out, a failure can no
longer become an error response: an event stream then ends with an OpenAI error event, any
other body is left unfinished, so the client's HTTP library raises instead of taking a cut-off
body for a whole one. Every chunk passes through a `BodyWatcher`, which reads usage without
holding the stream back.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.types import Receive, Scope, Send

from gateway.errors import GatewayError, UpstreamError
from gateway.tally import REQUEST_ID_HEADER, Tally
from gateway.types import Outcome
from gateway.upstream import UpstreamResponse
from gateway.usage import BodyWatcher

logger = logging.getLogger("gateway.relay")

INTERNAL_ERROR = GatewayError("The gateway failed while relaying this response.")


class ShuttingDown(GatewayError):
    status_code = 503
    type = "service_unavailable_error"
    code = "shutting_down"


SHUTTING_DOWN = ShuttingDown("The gateway is shutting down; retry the request.")


class Relay:
    """The upstream response, relayed: an ASGI app for one request."""

    def __init__(self, upstream: UpstreamResponse, watcher: BodyWatcher, tally: Tally) -> None:
        self.upstream = upstream
        self.watcher = watcher
        self.tally = tally
        self.status_code = upstream.status_code
        self.headers = [
            *upstream.raw_headers,
            (REQUEST_ID_HEADER.encode(), tally.request_id.encode()),
        ]
        if tally.admission is not None and tally.admission.headers:
            # The limits' headers are the gateway's, in place of any the upstream sent.
            ours = [(k.encode(), v.encode()) for k, v in tally.admission.headers.items()]
            names = {k for k, _ in ours}
            self.headers = [(k, v) for k, v in self.headers if k.lower() not in names]
            self.headers += ours

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Until the relay says otherwise, the client left: a cancelled relay never returns.
        outcome: Outcome = "client_disconnected"
        relaying = _Relaying(asyncio.current_task())
        # A plain task rather than a task group: this runs once per request, and a task group's
        # cancel scopes cost more than the rest of the relay (bench/README.md).
        watch = asyncio.ensure_future(_cancel_on_disconnect(receive, relaying))
        try:
            outcome = await self._relay(send)
        except asyncio.CancelledError:
            if not relaying.client_left or relaying.uncancel():
                # Cancelled by someone else: the server, at the end of its grace period. The
                # stream says so and ends; the task has nothing left to do but finish.
                outcome = "shutdown"
                logger.warning("relay cut short: the server is shutting down")
                if relaying.task is not None and relaying.task.uncancel() == 0:
                    await self._fail(send, SHUTTING_DOWN, outcome)
                else:
                    raise
        finally:
            relaying.task = None
            watch.cancel()
            if watch.done() and not watch.cancelled():
                watch.exception()  # a receive() that failed: nothing left to tell
            try:
                await self.tally.finish(self.status_code, outcome, self.watcher.usage)
            finally:
                await self.upstream.aclose()

    async def _relay(self, send: Send) -> Outcome:
        start = {"type": "http.response.start", "status": self.status_code, "headers": self.headers}
        outcome: Outcome = "ok" if self.status_code < 400 else "upstream_error"
        try:
            await send(start)
            try:
                async for chunk in self.upstream.chunks():
                    await self._send(send, self.watcher.feed(chunk))
                await self._send(send, self.watcher.finish())
            except UpstreamError as exc:
                logger.warning("upstream failed mid-response: %s", exc.detail)
                outcome, self.tally.upstream_failure = "upstream_failed", exc.reason
                return await self._fail(send, exc, outcome)
            except Exception:
                logger.exception("relaying the response failed")
                return await self._fail(send, INTERNAL_ERROR, "error")
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away between two chunks (ASGI 2.4 servers)
            logger.info("client disconnected mid-response")
            return "client_disconnected"
        return outcome

    async def _fail(self, send: Send, error: GatewayError, outcome: Outcome) -> Outcome:
        """End a broken body so the client can tell: an event stream with an error event (a
        partial event is dropped, not flushed: glued to the error event, it would garble both);
        any other body stays unfinished, and the server aborts it."""
        if self.upstream.is_event_stream:
            event = b"data: " + json.dumps(error.body()).encode() + b"\n\n"
            await self._send(send, event)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return outcome

    async def _send(self, send: Send, body: bytes) -> None:
        if body:
            self.tally.first_byte()
            await send({"type": "http.response.body", "body": body, "more_body": True})


class _Relaying:
    """The relay's task while it streams; the disconnect watch cancels it, once, only then."""

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.client_left = False

    def cancel(self) -> None:
        if self.task is not None:
            self.client_left = True
            self.task.cancel()

    def uncancel(self) -> int:
        """Take back this watch's cancellation; what is left was asked for by others."""
        assert self.task is not None
        return self.task.uncancel()


async def _cancel_on_disconnect(receive: Receive, relaying: _Relaying) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    relaying.cancel()
