"""Embeddings on the demo upstream in both encodings: lists of floats, and the base64 of
little-endian float32s that the openai SDKs ask for unless told otherwise."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from gateway.demo_upstream import DEMO_TEAM_KEY, create_demo_upstream
from tests.conftest import sdk_over
from tests.test_demo_upstream import anyio_backend, client

__all__ = ["anyio_backend", "client"]  # fixtures, used by name

pytestmark = pytest.mark.anyio
MODEL = "text-embedding-3-small"
TEXTS = ["hello world", "other text here"]


def floats(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded, validate=True)
    assert len(raw) % 4 == 0
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


async def embed(client: httpx.AsyncClient, **extra: Any) -> httpx.Response:
    return await client.post("/api/v1/embeddings", json={"model": MODEL, "input": TEXTS, **extra})


async def test_base64_is_the_float32_little_endian_vector(client: httpx.AsyncClient) -> None:
    plain = (await embed(client)).json()
    encoded = (await embed(client, encoding_format="base64")).json()
    assert encoded["usage"] == plain["usage"] and encoded["model"] == MODEL
    for as_floats, as_base64 in zip(plain["data"], encoded["data"], strict=True):
        assert as_base64["index"] == as_floats["index"] and as_base64["object"] == "embedding"
        assert isinstance(as_base64["embedding"], str)
        assert floats(as_base64["embedding"]) == pytest.approx(as_floats["embedding"], abs=1e-7)
    explicit = (await embed(client, encoding_format="float")).json()
    assert explicit["data"] == plain["data"]


async def test_unknown_encoding_is_400(client: httpx.AsyncClient) -> None:
    response = await embed(client, encoding_format="binary")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "encoding_format"


@pytest.fixture
async def sdk(anyio_backend: str) -> AsyncIterator[tuple[openai.AsyncOpenAI, list[bytes]]]:
    """The SDK on the demo, and the bodies of the requests it sends."""
    sent: list[bytes] = []

    async def keep(request: httpx.Request) -> None:
        sent.append(request.content)

    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_demo_upstream()), event_hooks={"request": [keep]}
    )
    async with sdk_over(http, "http://demo/api/v1", DEMO_TEAM_KEY) as sdk:
        yield sdk, sent


async def test_the_sdk_default_asks_base64_and_decodes_it(
    sdk: tuple[openai.AsyncOpenAI, list[bytes]], client: httpx.AsyncClient
) -> None:
    plain = (await embed(client)).json()["data"]
    openai_sdk, sent = sdk
    decoded = await openai_sdk.embeddings.create(model=MODEL, input=TEXTS)
    assert json.loads(sent[-1])["encoding_format"] == "base64"
    for got, want in zip(decoded.data, plain, strict=True):
        assert got.embedding == pytest.approx(want["embedding"], abs=1e-7)
    raw = await openai_sdk.embeddings.create(model=MODEL, input=TEXTS, encoding_format="base64")
    assert isinstance(raw.data[0].embedding, str)
    assert floats(raw.data[0].embedding) == pytest.approx(plain[0]["embedding"], abs=1e-7)
