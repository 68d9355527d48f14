"""Browsers against a real server: CORS for allowed origins (preflight without a key, exposed
headers on a stream), nothing for others, cross-site spending and rebound hosts refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from tests.conftest import FakeNanoGPT, assert_openai_error, auth, live_server, make_settings

pytestmark = pytest.mark.anyio
PAGE = "https://chat.example.com"
CHAT = {"model": "openai/gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}
STAINLESS = ", ".join(
    f"x-stainless-{h}"
    for h in (
        "arch",
        "lang",
        "os",
        "package-version",
        "retry-count",
        "runtime",
        "runtime-version",
        "timeout",
    )
)


@pytest.fixture
async def gateway(tmp_path: Path, nanogpt: FakeNanoGPT) -> AsyncIterator[str]:
    async def stream(request: httpx.Request) -> httpx.Response:
        frames = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'
        return httpx.Response(200, content=frames, headers={"content-type": "text/event-stream"})

    nanogpt.handler = stream
    toml = f"[server]\ncors_origins = [{json.dumps(PAGE)}]\n[limits]\nrequests_per_minute = 100\n"
    async with nanogpt.serving() as api_root:
        settings = make_settings(tmp_path, toml, NANOGPT_BASE_URL=api_root)
        async with live_server(create_app(settings)) as url:
            yield url


async def test_a_preflight_from_an_allowed_page_is_answered_without_a_key(
    gateway: str, nanogpt: FakeNanoGPT
) -> None:
    headers = {
        "origin": PAGE,
        "access-control-request-method": "POST",
        "access-control-request-headers": f"authorization, content-type, {STAINLESS}",
    }
    async with httpx.AsyncClient() as client:
        response = await client.options(f"{gateway}/v1/chat/completions", headers=headers)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == PAGE
    assert (
        response.headers["access-control-allow-headers"]
        == headers["access-control-request-headers"]
    )
    assert "POST" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-max-age"] == "600"
    assert response.headers["vary"] == "Origin"
    assert nanogpt.requests == []


async def test_a_stream_to_an_allowed_page_exposes_the_gateways_headers(gateway: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{gateway}/v1/chat/completions",
            json={**CHAT, "stream": True},
            headers={**auth(), "origin": PAGE},
        )
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    assert response.headers["access-control-allow-origin"] == PAGE
    exposed = response.headers["access-control-expose-headers"]
    for name in ("x-gateway-request-id", "retry-after", "x-ratelimit-remaining-requests"):
        assert name in exposed
    assert response.headers["x-ratelimit-limit-requests"] == "100"


async def test_another_page_gets_no_cors_and_cannot_spend(
    gateway: str, nanogpt: FakeNanoGPT
) -> None:
    evil = {"origin": "https://evil.example"}
    async with httpx.AsyncClient() as client:
        preflight = await client.options(
            f"{gateway}/v1/chat/completions",
            headers={**evil, "access-control-request-method": "POST"},
        )
        simple = await client.post(  # a form post needs no preflight
            f"{gateway}/v1/chat/completions",
            content=json.dumps(CHAT),
            headers={**auth(), **evil, "content-type": "text/plain"},
        )
        listing = await client.get(f"{gateway}/v1/models", headers={**auth(), **evil})
    assert_openai_error(preflight, 403, "cross_origin_not_allowed")
    assert_openai_error(simple, 403, "cross_origin_not_allowed")
    for response in (preflight, simple, listing):
        assert "access-control-allow-origin" not in response.headers
    assert listing.status_code == 200  # reading is harmless: the page cannot see the answer
    assert nanogpt.requests == []


async def test_a_rebound_host_name_is_refused(gateway: str, nanogpt: FakeNanoGPT) -> None:
    async with httpx.AsyncClient() as client:
        rebound = await client.post(
            f"{gateway}/v1/chat/completions",
            json=CHAT,
            headers={
                **auth(),
                "host": "attacker.example:8080",
                "origin": "http://attacker.example:8080",
            },
        )
        local = await client.get(f"{gateway}/healthz", headers={"host": "localhost:8080"})
        ipv6 = await client.get(f"{gateway}/healthz", headers={"host": "[::1]:8080"})
    assert_openai_error(rebound, 400, "invalid_host")
    assert local.status_code == ipv6.status_code == 200
    assert nanogpt.requests == []
