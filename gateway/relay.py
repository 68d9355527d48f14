"""Relaying an upstream response to the client, chunk by chunk, as an ASGI response.

Starlette's `StreamingResponse` only notices a gone client on its next write (ASGI 2.4), which
for a silent upstream (a model still thinking) may be minutes away; this relay listens for the
disconnect itself and closes the upstream at once. Once headers are out, a failure can no
longer become an error response: an event stream then ends with an OpenAI error event.
"""

from __future__ import annotations

import json
import logging

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import UpstreamError
from gateway.proxy import UpstreamResponse

logger = logging.getLogger("gateway.relay")


class Relay(Response):
    def __init__(self, upstream: UpstreamResponse) -> None:
        self.upstream = upstream
        self.status_code = upstream.status_code
        self.background = None
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in upstream.headers]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(_cancel_on_disconnect, receive, task_group.cancel_scope)
                await self._relay(send)
                task_group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.upstream.aclose()

    async def _relay(self, send: Send) -> None:
        start = {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self.raw_headers,
        }
        try:
            await send(start)
            try:
                async for chunk in self.upstream.chunks():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except UpstreamError as exc:
                logger.warning("upstream failed mid-response: %s", exc.message)
                if self.upstream.is_event_stream:
                    event = b"data: " + json.dumps(exc.body()).encode() + b"\n\n"
                    await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away between two chunks (ASGI 2.4 servers)
            logger.info("client disconnected mid-response")


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
