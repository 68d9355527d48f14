"""The bare starlette + aiohttp passthrough: no auth, policy or metering. One of the two floors
the gateway is measured against. `BENCH_UPSTREAM` is the API root, e.g. http://127.0.0.1:9001/api."""

import contextlib
import os

import aiohttp
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

UPSTREAM = os.environ["BENCH_UPSTREAM"]
DROPPED = {"host", "content-length", "connection", "transfer-encoding"}


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        yield {"session": session}


async def proxy(request: Request) -> StreamingResponse:
    headers = [(k, v) for k, v in request.headers.items() if k not in DROPPED]
    response = await request.state.session.request(
        request.method,
        UPSTREAM + "/v1/" + request.path_params["path"],
        headers=headers,
        data=await request.body(),
    )
    returned = {k: v for k, v in response.headers.items() if k.lower() not in DROPPED}
    return StreamingResponse(
        response.content.iter_any(),
        response.status,
        returned,
        background=BackgroundTask(response.release),
    )


app = Starlette(
    routes=[Route("/v1/{path:path}", proxy, methods=["GET", "POST"])], lifespan=lifespan
)
