"""`metered`: a route as an ASGI app whose tally is opened first and finished exactly once,
whichever way the route ends (an answer, a refusal, an upstream failure, the client leaving,
a crash), with every log line meanwhile naming the request id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway import logs
from gateway.errors import CatalogUnavailable, GatewayError, Refusal, UpstreamError
from gateway.pipeline import Gateway, gateway_of
from gateway.relay import Relay
from gateway.tally import REQUEST_ID_HEADER, Tally
from gateway.types import Outcome

logger = logging.getLogger("gateway.metered")

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before the answer
SERVICE_UNAVAILABLE = 503  # what the server answers a request it cuts at shutdown

Answer = Response | Relay
MeteredRoute = Callable[[Request, Gateway, Tally], Awaitable[Answer]]


def metered(route: MeteredRoute) -> Metered:
    """The route as an ASGI app, tallied (a decorator)."""
    return Metered(route)


class Metered:
    """A route as an ASGI app, tallied: every way it can end finishes the tally, except a
    `Relay`, which finishes it when its body has ended (or the client has left). A client that
    leaves before the answer (during its upload, or while NanoGPT thinks) gets none. Every log
    line written meanwhile names the request id."""

    def __init__(self, route: MeteredRoute) -> None:
        self.route = route
        self.__name__ = route.__name__

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        gateway = gateway_of(request)
        tally = gateway.tallies.start()
        request.state.request_id = tally.request_id  # for the error handlers' responses
        logged_as = logs.request_id.set(tally.request_id)
        try:
            answer = await self._answer(request, gateway, tally)
            if answer is not None:
                await answer(scope, receive, send)
        finally:
            logs.request_id.reset(logged_as)

    async def _answer(self, request: Request, gateway: Gateway, tally: Tally) -> Answer | None:
        try:
            answer = await self.route(request, gateway, tally)
        except ClientDisconnect:
            # Not an error of ours: nobody is left to answer, and the server logs nothing.
            logger.info("client disconnected before the answer")
            await tally.finish(CLIENT_CLOSED_REQUEST, "client_disconnected")
            return None
        except GatewayError as exc:
            if isinstance(exc, UpstreamError):
                tally.upstream_failure = exc.reason
                tally.forwarded = exc.reason != "connect"
                logger.warning("upstream failed: %s", exc.detail)  # the client gets less
            if isinstance(exc, Refusal):
                tally.limit = exc.limit
            await tally.finish(exc.status_code, _outcome_of(exc))
            raise
        except asyncio.CancelledError:
            # The server's cut at the end of its shutdown grace (`server.Drain`), or the
            # client leaving: the ledger must tell them apart.
            if getattr(request.scope.get("nanogpt_gateway.drain"), "cutting", False):
                await tally.finish(SERVICE_UNAVAILABLE, "shutdown")
            else:
                await tally.finish(CLIENT_CLOSED_REQUEST, "client_disconnected")
            raise
        except BaseException:
            await tally.finish(500, "error")
            raise
        if not isinstance(answer, Relay):
            answer.headers[REQUEST_ID_HEADER] = tally.request_id
            await tally.finish(answer.status_code, "ok")
        return answer


def _outcome_of(exc: GatewayError) -> Outcome:
    if isinstance(exc, UpstreamError | CatalogUnavailable):
        return "upstream_failed"
    if isinstance(exc, Refusal):  # a limit's refusal, 503 limits_unavailable too
        return "upstream_error" if exc.from_upstream else "refused"
    return "refused" if exc.status_code < 500 else "error"
