"""What the gateway learns when NanoGPT refuses `stream_options`: only from a field the gateway
added itself (a member's odd field must not switch off stream metering for everyone), and only
for a while (the model may be served by another provider an hour later)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cachetools import TTLCache

from gateway.app import create_app
from tests.conftest import (
    ALICE_KEY,
    BOB_KEY,
    FakeNanoGPT,
    auth,
    ledger_rows,
    make_settings,
    served,
    with_lifespan_state,
)

pytestmark = pytest.mark.anyio
GPT = "openai/gpt-5.2"
USAGE = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def gateway(
    tmp_path: Path, nanogpt: FakeNanoGPT, clock: Clock | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in-process; with a `clock`, its stream_options refusals are kept on it."""
    async with served(make_settings(tmp_path), nanogpt) as settings:
        app = create_app(settings)
        async with app.router.lifespan_context(app) as lifespan_state:
            assert lifespan_state is not None
            state = dict(lifespan_state)
            if clock is not None:
                refusals: TTLCache[str, bool] = TTLCache(maxsize=16, ttl=3600, timer=clock)
                current = state["current"]
                current.gateway = dataclasses.replace(current.gateway, no_stream_usage=refusals)
            await state["current"].gateway.catalog.refresh()
            transport = httpx.ASGITransport(app=with_lifespan_state(app, state))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://localhost"
            ) as client:
                yield client


def strict_upstream(nanogpt: FakeNanoGPT, known: set[str]) -> list[dict[str, Any]]:
    """NanoGPT behind a provider that refuses any `stream_options` key it does not know, and
    streams with a usage event when asked."""
    bodies: list[dict[str, Any]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        options = body.get("stream_options") or {}
        if set(options) - known:
            message = f"Unknown parameter in stream_options: {sorted(set(options) - known)}"
            return httpx.Response(400, json={"error": {"message": message, "type": "x"}})
        events: list[dict[str, Any]] = [
            {"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
        ]
        if options.get("include_usage"):
            events.append({"id": "c", "choices": [], "usage": USAGE})
        content = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, headers=headers, content=content + b"data: [DONE]\n\n")

    nanogpt.handler = handler
    return bodies


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": GPT, "messages": [{"role": "user", "content": "hi"}], "stream": True, **extra}


async def test_a_members_odd_stream_options_does_not_unmeter_everyone(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    bodies = strict_upstream(nanogpt, known={"include_usage"})
    async with gateway(tmp_path, nanogpt) as client:
        odd = chat(stream_options={"odd": True})
        refused = await client.post("/v1/chat/completions", json=odd, headers=auth(ALICE_KEY))
        assert refused.status_code == 400  # the member's own field, refused as sent
        answered = await client.post("/v1/chat/completions", json=chat(), headers=auth(BOB_KEY))
        assert answered.status_code == 200
    assert [b.get("stream_options") for b in bodies] == [
        {"odd": True, "include_usage": True},
        {"odd": True},
        {"include_usage": True},  # Bob's stream is still asked for its usage
    ]
    alice, bob = ledger_rows()
    assert (alice["status"], alice["unmetered"]) == (400, "upstream_error")
    assert (bob["member"], bob["prompt_tokens"], bob["unmetered"]) == ("bob", 10, None)


async def test_a_model_that_refused_stream_options_is_asked_again_an_hour_later(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    bodies = strict_upstream(nanogpt, known=set())
    clock = Clock()
    async with gateway(tmp_path, nanogpt, clock) as client:
        for _ in range(2):
            response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
            assert response.status_code == 200
        clock.now += 3601
        bodies_before = len(bodies)
        response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
        assert response.status_code == 200
    asked = ["stream_options" in b for b in bodies]
    assert asked[:bodies_before] == [True, False, False]  # refused once, then not asked
    assert asked[bodies_before:] == [True, False]  # an hour later: asked again
    assert [r["unmetered"] for r in ledger_rows()] == ["stream_usage_unsupported"] * 3
