"""Each way a member once reached NanoGPT on the team's account without the policy, the admin
check or a priced ledger row seeing the request (issue "Every request accounted for")."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.keys import hash_key
from tests.conftest import (
    ADMIN_KEY,
    ALICE_KEY,
    BOB_KEY,
    FakeNanoGPT,
    assert_openai_error,
    auth,
    gateway_client,
    ledger_rows,
    live_server,
    make_settings,
)

pytestmark = pytest.mark.anyio
DENY_OPENAI = "[policy]\ndeny = ['openai/*']\n"
AUDIO_MODEL = {"id": "openai/whisper-1", "object": "model", "pricing": {"per_minute": 0.006}}
IMAGE_MODEL = {"id": "openai/gpt-image-1", "object": "model", "pricing": {"per_image": {}}}


def transcription(model: str) -> tuple[str, bytes]:
    boundary = "form-b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp3"\r\n'
        "Content-Type: audio/mpeg\r\n\r\n"
    ).encode() + b"ID3\x00\xff" * 100_000  # 500 KB: a large body, read the same way
    body += (
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}'
        f"\r\n--{boundary}--\r\n"
    ).encode()
    return f"multipart/form-data; boundary={boundary}", body


async def test_a_multipart_request_is_held_to_the_policy(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    nanogpt.media["audio"] = [AUDIO_MODEL, {**AUDIO_MODEL, "id": "groq/whisper-large-v3"}]

    async def transcribed(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"text": "hello", "language": "en", "duration": 1.5})

    nanogpt.handler = transcribed
    async with gateway_client(make_settings(tmp_path, DENY_OPENAI), nanogpt) as client:
        content_type, body = transcription("openai/gpt-5.2")
        headers = {**auth(), "content-type": content_type}
        denied = await client.post("/v1/audio/transcriptions", content=body, headers=headers)
        assert "deny pattern 'openai/*'" in assert_openai_error(denied, 403)["message"]
        content_type, body = transcription("groq/whisper-large-v3")
        headers = {**auth(), "content-type": content_type}
        allowed = await client.post("/v1/audio/transcriptions", content=body, headers=headers)
        assert allowed.status_code == 200
    (sent,) = nanogpt.requests
    assert sent.content == body  # forwarded byte for byte, file part and all
    denied_row, allowed_row = ledger_rows()
    assert (denied_row["outcome"], denied_row["model"]) == ("refused", "openai/gpt-5.2")
    assert (allowed_row["endpoint"], allowed_row["unmetered"]) == (
        "audio/transcriptions",
        "not_reported",
    )


async def test_json_sent_as_text_plain_is_held_to_the_policy(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    nanogpt.media["image"] = [IMAGE_MODEL]
    async with gateway_client(make_settings(tmp_path, DENY_OPENAI), nanogpt) as client:
        body = json.dumps({"model": "openai/gpt-image-1", "prompt": "a cat"})
        headers = {**auth(), "content-type": "text/plain"}
        response = await client.post("/v1/images/generations", content=body, headers=headers)
    assert_openai_error(response, 403, "model_not_allowed")
    assert nanogpt.requests == []


@pytest.mark.parametrize(
    "path",
    [
        "/v1/Characters/x",
        "/v1/CHARACTERS",
        "/v1/characters%2Fx",
        "/v1/characters%2fx",
        "/v1/characters//x",
        "/api/v1/Characters/x",
    ],
)
async def test_account_changes_need_an_admin_however_the_path_is_spelled(
    client: httpx.AsyncClient, nanogpt: FakeNanoGPT, path: str
) -> None:
    response = await client.post(path, json={"name": "Guide"}, headers=auth())
    assert_openai_error(response, 403, "admin_required")
    assert nanogpt.requests == []


async def test_an_admin_change_is_forwarded_as_the_table_spells_it(
    client: httpx.AsyncClient, nanogpt: FakeNanoGPT
) -> None:
    response = await client.patch("/v1/Characters//My-Guide", json={}, headers=auth(ADMIN_KEY))
    assert response.status_code == 200
    assert nanogpt.requests[0].url.raw_path == b"/api/v1/characters/My-Guide"


@pytest.mark.parametrize("path", ["/v1/memory", "/v1/batches", "/v1/some/new/thing"])
async def test_paths_not_in_the_table_are_404_and_never_forwarded(
    tmp_path: Path, nanogpt: FakeNanoGPT, path: str
) -> None:
    async with gateway_client(make_settings(tmp_path), nanogpt) as client:
        response = await client.post(path, json={"input": "x"}, headers=auth())
    error = assert_openai_error(response, 404, "unknown_endpoint")
    assert path.removeprefix("/api") in error["message"]
    assert nanogpt.requests == []
    (row,) = ledger_rows()
    assert (row["endpoint"], row["outcome"], row["status"]) == ("other", "refused", 404)


async def test_forwarded_unlisted_paths_are_only_for_unrestricted_members(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    settings = make_settings(tmp_path, "[upstream]\nforward_unlisted = true\n")
    async with gateway_client(settings, nanogpt) as client:
        forwarded = await client.post("/v1/Memory", json={"messages": []}, headers=auth())
        assert forwarded.status_code == 200
        bob = await client.post("/v1/memory", json={}, headers=auth(BOB_KEY))
        assert_openai_error(bob, 403, "unlisted_endpoint")  # bob has a deny list
    assert [r.url.raw_path for r in nanogpt.requests] == [b"/api/v1/Memory"]
    alice, bob_row = ledger_rows()
    assert (alice["endpoint"], alice["path"], alice["unmetered"]) == ("other", "Memory", "unlisted")
    assert alice["prompt_tokens"] == 3  # the fake answers with usage, which is read
    assert (bob_row["outcome"], bob_row["status"]) == ("refused", 403)


async def test_a_method_an_endpoint_does_not_take_is_405(
    client: httpx.AsyncClient, nanogpt: FakeNanoGPT
) -> None:
    response = await client.get("/v1/chat/completions", headers=auth())
    assert_openai_error(response, 405, "method_not_allowed")
    assert nanogpt.requests == []


async def test_a_model_in_the_query_is_refused_where_the_body_names_it(
    client: httpx.AsyncClient, nanogpt: FakeNanoGPT
) -> None:
    chat = {"model": "deepseek/deepseek-chat-v3-0324", "messages": []}
    for path in (
        "/v1/chat/completions?model=openai/gpt-5.2",
        "/v1/chat/completions?Model=x&model=",
        "/v1/chat/completions?m%6Fdel=openai/gpt-5.2",
    ):
        response = await client.post(path, json=chat, headers=auth())
        assert assert_openai_error(response, 400, "invalid_request")["param"] == "model"
    assert nanogpt.requests == []
    ok = await client.get("/v1/characters?model=x", headers=auth())  # names no model: no rule
    assert ok.status_code == 200


async def test_a_call_may_omit_its_model_only_for_an_unrestricted_member(
    client: httpx.AsyncClient, nanogpt: FakeNanoGPT
) -> None:
    moderation = {"input": "is this fine?"}  # NanoGPT picks its default moderation model
    allowed = await client.post("/v1/moderations", json=moderation, headers=auth())
    assert allowed.status_code == 200
    refused = await client.post("/v1/moderations", json=moderation, headers=auth(BOB_KEY))
    assert "names no model" in assert_openai_error(refused, 403, "model_not_allowed")["message"]
    assert len(nanogpt.requests) == 1


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/v1/chat/completions/..%2f..%2fcheck-balance",
        b"/v1/chat/..;/completions",
        b"/v1/..;/check-balance",
        b"/v1/chat%5ccompletions",
        b"/v1/chat/completions%5c..%5c..%5ccheck-balance",
        b"/v1/chat/%2e%2e/%2E%2E/check-balance",
        b"/v1/models/..%252f..%252fcheck-balance",
        b"/V1/../api/check-balance",
        b"/v1/chat/completions/.%2E/..;x/check-balance",
    ],
)
async def test_encoded_path_tricks_are_refused_and_never_forwarded(
    tmp_path: Path, nanogpt: FakeNanoGPT, raw_path: bytes
) -> None:
    """Sent raw, as an attacker's client would (httpx would normalise some of them), and with
    forward_unlisted on, so nothing but the path rules stands in the way."""
    async with nanogpt.serving() as api_root:
        settings = make_settings(
            tmp_path, "[upstream]\nforward_unlisted = true\n", NANOGPT_BASE_URL=api_root
        )
        async with live_server(create_app(settings)) as url:
            host, port = url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            body = b'{"model": "openai/gpt-5.2", "messages": []}'
            writer.write(
                b"POST "
                + raw_path
                + b" HTTP/1.1\r\nHost: localhost\r\n"
                + f"Authorization: Bearer {ALICE_KEY}\r\n".encode()
                + b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            answer = await reader.read()
            writer.close()
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 404), answer[:200]
    assert b'"error"' in answer
    assert nanogpt.requests == []


async def test_no_member_credential_or_identity_reaches_nanogpt(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    toml = f"""
[[members]]
name = "webui"
key_sha256 = "{hash_key("sk-webui")}"
end_user_header = "x-openwebui-user-email"
"""
    headers = {
        "authorization": "Bearer sk-webui",
        "x-openwebui-user-email": "eve@example.com",
        "x-openwebui-user-name": "Eve",
        "x-codex-turn-metadata": '{"cwd": "/home/eve/project"}',
        "api-key": "sk-webui",
        "x-goog-api-key": "sk-webui",
    }
    settings = make_settings(tmp_path, toml, members=False)
    async with gateway_client(settings, nanogpt) as client:
        response = await client.post(
            "/v1/chat/completions?key=sk-webui&beta=true",
            json={"model": "openai/gpt-5.2", "messages": []},
            headers=headers,
        )
    assert response.status_code == 200
    (sent,) = nanogpt.requests
    assert sent.url.query == b"beta=true"
    assert b"sk-webui" not in sent.url.raw_path
    for name in headers:
        if name != "authorization":
            assert name not in sent.headers, name
    assert "sk-webui" not in str(sent.headers.raw)
    (row,) = ledger_rows()
    assert row["end_user"] == "eve@example.com"  # read for the ledger, then kept here


@pytest.mark.parametrize(
    "field", [("billing_mode", "paygo"), ("billingMode", "PAID"), ("provider", "groq")]
)
async def test_a_form_cannot_carry_a_billing_override_past_the_check(
    tmp_path: Path, nanogpt: FakeNanoGPT, field: tuple[str, str]
) -> None:
    """NanoGPT reads billing_mode and provider from the body of every endpoint, forms too."""
    nanogpt.media["audio"] = [{**AUDIO_MODEL, "id": "groq/whisper-large-v3"}]
    content_type, body = transcription("groq/whisper-large-v3")
    name, value = field
    boundary = content_type.split("boundary=")[1]
    body = body.replace(
        f"--{boundary}--".encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        f"--{boundary}--".encode(),
    )
    async with gateway_client(make_settings(tmp_path), nanogpt) as client:
        response = await client.post(
            "/v1/audio/transcriptions",
            content=body,
            headers={**auth(), "content-type": content_type},
        )
    assert_openai_error(response, 403, "billing_override_not_allowed")
    assert nanogpt.requests == []
