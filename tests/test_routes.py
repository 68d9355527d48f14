"""The gateway in-process: auth, policy, the models list, and forwarding to NanoGPT."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from gateway.endpoints import classify
from gateway.pipeline import LARGE_BODY_BYTES, parse
from tests.conftest import (
    ADMIN_KEY,
    ALICE_KEY,
    BOB_KEY,
    TEAM_KEY,
    FakeNanoGPT,
    assert_openai_error,
    auth,
    catalog_payload,
    gateway_client,
    make_settings,
)

pytestmark = pytest.mark.anyio
CHAT = {"model": "openai/gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
async def test_chat_is_forwarded_with_the_team_key(
    client: httpx.AsyncClient, nanogpt: FakeNanoGPT, prefix: str
) -> None:
    response = await client.post(
        f"{prefix}/chat/completions?trace=1&x=a%20b",
        json=CHAT,
        headers={
            **auth(),
            "x-api-key": ALICE_KEY,
            "cookie": "session=member",
            "x-request-id": "req-42",
            "connection": "keep-alive, x-hop",
            "x-hop": "drop me",
            "accept-encoding": "br",
        },
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "hi"
    (sent,) = nanogpt.requests
    assert sent.url.raw_path == b"/api/v1/chat/completions?trace=1&x=a%20b"
    assert sent.headers["authorization"] == f"Bearer {TEAM_KEY}"
    assert "x-api-key" not in sent.headers and "cookie" not in sent.headers
    assert "x-hop" not in sent.headers and sent.headers["x-request-id"] == "req-42"
    assert sent.headers["accept-encoding"] != "br"
    assert json.loads(sent.content) == CHAT


async def test_other_endpoints_pass_through(
    client: httpx.AsyncClient, nanogpt: FakeNanoGPT
) -> None:
    async def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            207,
            content=b"\x00binary\xff",
            headers={"content-type": "audio/mpeg", "x-upstream": "yes", "set-cookie": "team=1"},
        )

    nanogpt.handler = echo
    response = await client.get("/v1/characters/mine?limit=5", headers=auth())
    assert response.status_code == 207 and response.content == b"\x00binary\xff"
    assert response.headers["x-upstream"] == "yes"
    assert "set-cookie" not in response.headers  # the team account's cookies stay here
    assert nanogpt.requests[0].url.raw_path == b"/api/v1/characters/mine?limit=5"


async def test_upstream_errors_are_passed_back(
    client: httpx.AsyncClient, nanogpt: FakeNanoGPT
) -> None:
    async def rate_limited(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"code": "rate_limited", "message": "Rate limit exceeded"})

    nanogpt.handler = rate_limited
    response = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert response.status_code == 429
    assert response.json() == {"code": "rate_limited", "message": "Rate limit exceeded"}


@pytest.mark.parametrize(
    "headers", [{}, {"authorization": "Bearer sk-nope"}, {"x-api-key": TEAM_KEY}]
)
async def test_unknown_keys_are_401(
    client: httpx.AsyncClient, nanogpt: FakeNanoGPT, headers: dict[str, str]
) -> None:
    for method, path in [
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/openai/gpt-5.2"),
    ]:
        response = await client.request(method, path, json=CHAT, headers=headers)
        assert_openai_error(response, 401, "invalid_api_key")
    assert nanogpt.requests == []


async def test_models_lists_what_the_member_may_use(tmp_path: Path, nanogpt: FakeNanoGPT) -> None:
    settings = make_settings(tmp_path, "[policy]\ndistillation = 'allowed'\n")
    async with gateway_client(settings, nanogpt) as client:
        response = await client.get("/v1/models", headers=auth())
        assert response.status_code == 200
        listing = response.json()
        assert listing["object"] == "list"
        assert [m["id"] for m in listing["data"]] == [
            "deepseek/deepseek-chat-v3-0324",
            "qwen/qwen3-coder-next",
            "moonshotai/kimi-k2.5:thinking",
        ]
        basic = {"id", "object", "created", "owned_by"}
        assert all(basic <= set(m) <= basic | {"name", "context_length"} for m in listing["data"])
        assert listing["data"][0]["name"] == "DeepSeek V3 (0324)"
        assert listing["data"][0]["context_length"] == 128000
        detailed = (await client.get("/api/v1/models?detailed=true", headers=auth())).json()["data"]
        assert detailed[0]["pricing"]["prompt"] == 2500
        assert detailed[0]["distillationPolicy"]["status"] == "allowed"
        assert detailed[1]["created"] == 1750000000 and detailed[1]["object"] == "model"
        one = await client.get("/v1/models/qwen/qwen3-coder-next", headers=auth())
        assert one.json() == {
            "id": "qwen/qwen3-coder-next",
            "object": "model",
            "created": 1750000000,
            "owned_by": "qwen",
            "name": "Qwen3 Coder Next",
        }
        denied = await client.get("/v1/models/openai/gpt-5.2", headers=auth())
        assert (
            "not distillation-allowed"
            in assert_openai_error(denied, 403, "model_not_allowed")["message"]
        )
    assert nanogpt.requests == []


async def test_member_deny_narrows_the_listing(client: httpx.AsyncClient) -> None:
    alice = {m["id"] for m in (await client.get("/v1/models", headers=auth())).json()["data"]}
    bob = {m["id"] for m in (await client.get("/v1/models", headers=auth(BOB_KEY))).json()["data"]}
    assert alice - bob == {"anthropic/claude-opus-4.6"}


async def test_denied_model_is_403_and_never_reaches_upstream(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    settings = make_settings(tmp_path, "[policy]\ndeny = ['openai/*']\n")
    async with gateway_client(settings, nanogpt) as client:
        for path, body in [
            ("/v1/chat/completions", CHAT),
            ("/v1/completions", {"model": "openai/gpt-5.2", "prompt": "hi"}),
            ("/v1/responses", {"model": "openai/gpt-5.2", "input": "hi"}),
            ("/v1/audio/speech", {"model": "openai/gpt-5.2", "input": "hi"}),
        ]:
            response = await client.post(path, json=body, headers=auth())
            error = assert_openai_error(response, 403, "model_not_allowed")
            assert (
                "'openai/gpt-5.2'" in error["message"]
                and "deny pattern 'openai/*'" in error["message"]
            )
            assert error["param"] == "model"
        no_model = await client.post(
            "/v1/responses", json={"character_id": "guide", "input": "hi"}, headers=auth()
        )
        assert (
            "names no model" in assert_openai_error(no_model, 403, "model_not_allowed")["message"]
        )
    assert nanogpt.requests == []


async def test_member_deny_refuses_requests(
    client: httpx.AsyncClient, nanogpt: FakeNanoGPT
) -> None:
    body = {**CHAT, "model": "anthropic/claude-opus-4.6"}
    assert (await client.post("/v1/chat/completions", json=body, headers=auth())).status_code == 200
    response = await client.post("/v1/chat/completions", json=body, headers=auth(BOB_KEY))
    message = assert_openai_error(response, 403, "model_not_allowed")["message"]
    assert "member 'bob'" in message and "deny pattern 'anthropic/*'" in message
    assert len(nanogpt.requests) == 1


async def test_unknown_model_is_404(client: httpx.AsyncClient, nanogpt: FakeNanoGPT) -> None:
    response = await client.post(
        "/v1/chat/completions", json={**CHAT, "model": "openai/gpt-9"}, headers=auth()
    )
    assert "'openai/gpt-9'" in assert_openai_error(response, 404, "model_not_found")["message"]
    assert nanogpt.requests == []


async def test_subscription_source_refuses_models_outside_it(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    settings = make_settings(tmp_path, "[catalog]\nsource = 'subscription'\n")
    async with gateway_client(settings, nanogpt) as client:
        ok = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
        assert ok.status_code == 200
        response = await client.post(
            "/v1/chat/completions", json={**CHAT, "model": "paid/only"}, headers=auth()
        )
        assert "subscription" in assert_openai_error(response, 403, "model_not_allowed")["message"]
    assert len(nanogpt.requests) == 1


async def test_only_admins_change_characters(
    client: httpx.AsyncClient, nanogpt: FakeNanoGPT
) -> None:
    character = {"name": "Guide", "base_model_id": "deepseek/deepseek-chat-v3-0324"}
    for method in ("POST", "PATCH", "DELETE", "PUT"):
        response = await client.request(
            method, "/v1/characters/guide", json=character, headers=auth()
        )
        assert_openai_error(response, 403, "admin_required")
    assert (await client.get("/v1/characters", headers=auth())).status_code == 200
    assert (await client.head("/v1/characters/guide", headers=auth())).status_code == 200
    assert (
        await client.post("/v1/characters", json=character, headers=auth(ADMIN_KEY))
    ).status_code == 200
    assert [r.method for r in nanogpt.requests] == ["GET", "HEAD", "POST"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[]", "application/json"),
        (b"hello", "text/plain"),
        (b"", ""),
    ],
)
async def test_bad_json_is_400(
    client: httpx.AsyncClient, nanogpt: FakeNanoGPT, body: bytes, content_type: str
) -> None:
    headers = {**auth(), "content-type": content_type} if content_type else auth()
    response = await client.post("/v1/chat/completions", content=body, headers=headers)
    assert_openai_error(response, 400)
    assert nanogpt.requests == []


async def test_dot_segments_are_400(client: httpx.AsyncClient, nanogpt: FakeNanoGPT) -> None:
    response = await client.post("/v1/x/%2e%2e/%2e%2e/check-balance", headers=auth())
    assert_openai_error(response, 400)
    assert nanogpt.requests == []


async def test_body_over_the_limit_is_413(tmp_path: Path, nanogpt: FakeNanoGPT) -> None:
    settings = make_settings(tmp_path, "[upstream]\nmax_body_bytes = 1000\n")
    async with gateway_client(settings, nanogpt) as client:
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 1000}]}
        response = await client.post("/v1/chat/completions", json=big, headers=auth())
        assert "1000 bytes" in assert_openai_error(response, 413, "request_too_large")["message"]

        async def chunked() -> AsyncIterator[bytes]:  # no content-length: counted as it arrives
            for _ in range(20):
                yield b"x" * 100

        response = await client.post("/v1/audio/transcriptions", content=chunked(), headers=auth())
        assert_openai_error(response, 413, "request_too_large")
        small = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
        assert small.status_code == 200
    assert len(nanogpt.requests) == 1


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (httpx.ReadTimeout("silent"), 504, "upstream_timeout"),
        (httpx.RemoteProtocolError(f"hangs up: Bearer {TEAM_KEY}"), 502, "upstream_unreachable"),
        ("refused", 502, "upstream_unreachable"),
    ],
)
async def test_upstream_failures_are_502_or_504(
    tmp_path: Path,
    nanogpt: FakeNanoGPT,
    failure: Exception | str,
    status: int,
    code: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fail(request: httpx.Request) -> httpx.Response:
        assert isinstance(failure, Exception)
        raise failure

    nanogpt.handler, nanogpt.keep_alive = fail, False
    settings = make_settings(tmp_path, "[upstream]\nread_timeout_seconds = 0.2\n")
    async with gateway_client(settings, nanogpt) as client:
        if failure == "refused":
            await nanogpt.stop()
        response = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    error = assert_openai_error(response, status, code)  # asserts the key is not in it
    # What failed, in the member's terms; the upstream's address and the client library's
    # words stay in the log under the request id.
    assert "NanoGPT" in error["message"] and "127.0.0.1" not in error["message"]
    assert "aiohttp" not in error["message"] and "Error" not in error["message"]
    if failure == "refused":
        assert error["message"].startswith("The gateway could not connect to NanoGPT")
        logged = [r.getMessage() for r in caplog.records if r.name == "gateway.metered"]
        assert any("Cannot connect to host 127.0.0.1" in line for line in logged)


async def test_cookies_are_never_replayed(tmp_path: Path, nanogpt: FakeNanoGPT) -> None:
    async def set_cookie(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={}, headers={"set-cookie": "session=alice-secret; Path=/"})

    nanogpt.handler = set_cookie
    # A hostname, as NanoGPT's is: a cookie jar ignores cookies from an IP address anyway, so
    # at 127.0.0.1 this would pass with a jar that keeps them.
    nanogpt.url_host = "localhost"
    async with gateway_client(make_settings(tmp_path), nanogpt) as client:
        first = await client.get("/v1/characters/mine", headers=auth())
        second = await client.get("/v1/characters/mine", headers=auth(BOB_KEY))
    assert first.status_code == second.status_code == 200
    assert [r.url.host for r in nanogpt.requests] == ["localhost", "localhost"]
    assert [r.headers.get("cookie") for r in nanogpt.requests] == [None, None]


async def test_no_catalog_is_503_not_ready_then_ready(tmp_path: Path, nanogpt: FakeNanoGPT) -> None:
    nanogpt.catalog = httpx.ConnectError("refused")
    async with gateway_client(make_settings(tmp_path), nanogpt, catalog_retry_seconds=0) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert_openai_error(await client.get("/readyz"), 503, "catalog_unavailable")
        response = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
        assert (
            "could not be loaded"
            in assert_openai_error(response, 503, "catalog_unavailable")["message"]
        )
        assert_openai_error(await client.get("/v1/models", headers=auth()), 503)
        nanogpt.catalog = catalog_payload()
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready", "models": 7}
        assert (
            await client.post("/v1/chat/completions", json=CHAT, headers=auth())
        ).status_code == 200


async def test_auth_none_is_anonymous(tmp_path: Path, nanogpt: FakeNanoGPT) -> None:
    settings = make_settings(tmp_path, "[auth]\nmode = 'none'\n", members=False)
    async with gateway_client(settings, nanogpt) as client:
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert_openai_error(await client.post("/v1/characters", json={}), 403, "admin_required")
    assert nanogpt.requests[0].headers["authorization"] == f"Bearer {TEAM_KEY}"


async def test_a_large_streamed_body_is_forwarded_with_usage_spliced_in(
    client: httpx.AsyncClient, nanogpt: FakeNanoGPT
) -> None:
    messages = [{"role": "user", "content": "é" * 500} for _ in range(1000)]
    sent = json.dumps({"model": "openai/gpt-5.2", "stream": True, "messages": messages}).encode()
    assert len(sent) > LARGE_BODY_BYTES
    response = await client.post(
        "/v1/chat/completions",
        content=sent,
        headers={**auth(), "content-type": "application/json"},
    )
    assert response.status_code == 200
    (received,) = nanogpt.requests
    assert received.content == sent.replace(b"{", b'{"stream_options":{"include_usage":true},', 1)
    assert received.headers["content-length"] == str(len(received.content))
    assert "transfer-encoding" not in received.headers
    broken = await client.post("/v1/chat/completions", content=sent[:-1], headers=auth())
    assert_openai_error(broken, 400, "invalid_json")
    assert len(nanogpt.requests) == 1


async def test_a_large_body_is_parsed_while_other_requests_get_turns() -> None:
    messages = [{"role": "user", "content": "x" * 1000} for _ in range(1000)]
    body = json.dumps({"model": "m", "stream": True, "messages": messages}).encode()
    scope = {"type": "http", "method": "POST", "headers": [], "query_string": b""}
    turns = 0

    async def other_request() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    other = asyncio.create_task(other_request())
    await asyncio.sleep(0)
    call = await parse(Request(scope), classify("chat/completions", "POST").endpoint, body)
    other.cancel()
    assert call.model == "m" and call.stream
    assert turns >= len(body) // (64 * 1024) - 1


@pytest.mark.parametrize(
    ("method", "path", "use"),
    [
        ("POST", "/api/chat/completions", "POST http://localhost/v1/chat/completions"),
        ("POST", "/chat/completions", "POST http://localhost/v1/chat/completions"),
        ("GET", "/api/models", "GET http://localhost/v1/models"),
        ("GET", "/models", "GET http://localhost/v1/models"),
    ],
)
async def test_a_known_endpoint_without_v1_says_which_url_to_use(
    client: httpx.AsyncClient, nanogpt: FakeNanoGPT, method: str, path: str, use: str
) -> None:
    response = await client.request(method, path, headers=auth(), json={"model": "x"})
    error = assert_openai_error(response, 404, "not_found")
    assert "set your client's base URL to http://localhost/v1" in error["message"]
    assert use in error["message"]
    assert nanogpt.requests == []


async def test_an_unknown_path_outside_v1_gets_no_hint(client: httpx.AsyncClient) -> None:
    error = assert_openai_error(await client.get("/api/nothing-here"), 404, "not_found")
    assert "base URL" not in error["message"]


async def test_a_compressed_request_body_is_refused_not_forwarded_unread(
    client: httpx.AsyncClient, nanogpt: FakeNanoGPT
) -> None:
    """The checks read the body as sent; NanoGPT must not get something else to read."""
    body = gzip.compress(json.dumps({"model": "openai/gpt-5.2", "messages": []}).encode())
    headers = {**auth(), "content-type": "application/json", "content-encoding": "gzip"}
    response = await client.post("/v1/chat/completions", content=body, headers=headers)
    assert_openai_error(response, 415, "unsupported_content_encoding")
    assert nanogpt.requests == []


async def test_nanogpts_server_header_is_not_relayed(
    client: httpx.AsyncClient, nanogpt: FakeNanoGPT
) -> None:
    async def answered(request: httpx.Request) -> httpx.Response:
        response = await nanogpt.complete(request)
        response.headers["server"] = "nanogpt-edge/1.2"
        return response

    nanogpt.handler = answered
    chat = {"model": "openai/gpt-5.2", "messages": []}
    response = await client.post("/v1/chat/completions", json=chat, headers=auth())
    assert response.status_code == 200 and "nanogpt-edge" not in str(response.headers)
