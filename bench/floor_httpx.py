"""The bare starlette + httpx passthrough: no auth, policy or metering. One of the two floors
the gateway is measured against. `BENCH_UPSTREAM` is the API root, e.g. http://127.0.0.1:9001/api;
`BENCH_TRANSPORT=aiohttp` swaps in the httpx-aiohttp transport (the client comparison)."""

import contextlib
import os

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

UPSTREAM = os.environ["BENCH_UPSTREAM"]
DROPPED = {"host", "content-length", "connection", "transfer-encoding"}


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    transport = None
    if os.environ.get("BENCH_TRANSPORT") == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport()
    async with httpx.AsyncClient(transport=transport, timeout=60) as client:
        yield {"client": client}


async def proxy(request: Request) -> StreamingResponse:
    headers = [(k, v) for k, v in request.headers.items() if k not in DROPPED]
    upstream = request.state.client.build_request(
        request.method,
        UPSTREAM + "/v1/" + request.path_params["path"],
        headers=headers,
        content=await request.body(),
    )
    response = await request.state.client.send(upstream, stream=True)
    returned = {k: v for k, v in response.headers.items() if k not in DROPPED}
    return StreamingResponse(
        response.aiter_raw(),
        response.status_code,
        returned,
        background=BackgroundTask(response.aclose),
    )


app = Starlette(
    routes=[Route("/v1/{path:path}", proxy, methods=["GET", "POST"])], lifespan=lifespan
)
