"""Stopping the gateway: from SIGTERM on, new requests get 503 `shutting_down`; requests in
flight have `server.shutdown_grace_seconds`, after which a stream ends with an error event that
says so (its ledger row: `shutdown`) and an unanswered request gets the 503."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from gateway.server import Drain
from tests.conftest import (
    ALICE_KEY,
    MEMBERS_TOML,
    TEAM_KEY,
    FakeNanoGPT,
    assert_openai_error,
    auth,
    ledger_rows,
    running,
)

CHAT = {"model": "openai/gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}
FIRST = b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n'
SHUTTING_DOWN = {
    "message": "The gateway is shutting down; retry the request.",
    "type": "service_unavailable_error",
    "code": "shutting_down",
    "param": None,
}


class Held(httpx.AsyncByteStream):
    """An SSE body that sends one event and then nothing, for as long as the server lives."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield FIRST
        await asyncio.Event().wait()


async def hold(request: httpx.Request) -> httpx.Response:
    """A stream sends its first event and holds; any other request is never answered."""
    if json.loads(request.content).get("stream"):
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Held())
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


@contextlib.contextmanager
def upstream_in_a_thread(nanogpt: FakeNanoGPT) -> Iterator[str]:
    """`nanogpt` served from a thread of its own (the gateway is another process)."""
    loop = asyncio.new_event_loop()
    ready, roots = threading.Event(), []
    stop = asyncio.Event()

    async def serve() -> None:
        async with nanogpt.serving() as root:
            roots.append(root)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),))
    thread.start()
    try:
        assert ready.wait(10)
        yield roots[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def test_sigterm_ends_streams_after_the_grace_with_an_error_event(tmp_path: Path) -> None:
    nanogpt = FakeNanoGPT()
    nanogpt.handler = hold
    config = tmp_path / "gateway.toml"
    config.write_text("[server]\nshutdown_grace_seconds = 1\n" + MEMBERS_TOML)
    headers = auth(ALICE_KEY)
    with upstream_in_a_thread(nanogpt) as root, ThreadPoolExecutor(1) as pool:
        env = {"NANOGPT_API_KEY": TEAM_KEY, "BOB_KEY": "sk-bob", "NANOGPT_BASE_URL": root}
        with running(["serve", "--config", str(config)], "/readyz", **env) as (base, gateway, _):
            url = f"{base}/v1/chat/completions"
            body = {**CHAT, "stream": True}
            with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as stream:
                chunks = stream.iter_raw()
                assert next(chunks) == FIRST
                unanswered = pool.submit(httpx.post, url, json=CHAT, headers=headers, timeout=30)
                deadline = time.monotonic() + 10
                while len(nanogpt.requests) < 2:  # readiness poll: both are upstream now
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                started = time.monotonic()
                gateway.send_signal(signal.SIGTERM)
                rest = b"".join(chunks)
            cut_after = time.monotonic() - started
            answer = unanswered.result(timeout=30)
    assert 0.9 < cut_after < 10  # the grace, then the cut
    event = json.loads(rest.removeprefix(b"data: ").removesuffix(b"\n\n"))
    assert event == {"error": SHUTTING_DOWN}
    assert assert_openai_error(answer, 503, "shutting_down")["type"] == SHUTTING_DOWN["type"]
    assert answer.headers["retry-after"] == "5"
    rows = ledger_rows(tmp_path / "gateway-usage.db")
    (streamed,) = [r for r in rows if r["stream"]]
    (cut,) = [r for r in rows if not r["stream"]]
    assert streamed["outcome"] == "shutdown"
    assert (cut["status"], cut["outcome"]) == (503, "shutdown")  # not a client that left


class Answers:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.anyio
async def test_a_request_that_arrives_while_the_server_drains_gets_503() -> None:
    drain = Drain(Answers())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=drain), base_url="http://localhost"
    ) as http:
        assert (await http.get("/v1/models")).status_code == 200
        drain.begin()
        response = await http.post("/v1/chat/completions", json=CHAT)
    assert assert_openai_error(response, 503, "shutting_down") == SHUTTING_DOWN
    assert response.headers["retry-after"] == "5"
    assert response.headers["connection"] == "close"
