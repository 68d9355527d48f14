"""End to end with the real `openai` SDK: the gateway and the demo upstream on real servers,
as `serve --demo` runs them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from gateway.app import create_app
from gateway.cli import DEMO_MEMBER_KEY
from gateway.config import Demo, load_settings
from gateway.demo_upstream import DEMO_TEAM_KEY, create_demo_upstream
from tests.conftest import ledger_rows, live_server

pytestmark = pytest.mark.anyio
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello to the team"}]


@contextlib.asynccontextmanager
async def clients(tmp_path: Path) -> AsyncIterator[tuple[openai.AsyncOpenAI, openai.AsyncOpenAI]]:
    """An SDK client through the gateway, and one straight to the demo upstream behind it."""
    config = tmp_path / "gateway.toml"
    config.write_text("[policy]\ndeny = ['openai/*']\n")
    async with live_server(create_demo_upstream()) as upstream_url:
        demo = Demo(base_url=f"{upstream_url}/api", team_key=DEMO_TEAM_KEY)
        settings = load_settings(config, {}, demo=demo, fallback_member=("demo", DEMO_MEMBER_KEY))
        async with live_server(create_app(settings)) as gateway_url:
            via_gateway = openai.AsyncOpenAI(
                base_url=f"{gateway_url}/v1", api_key=DEMO_MEMBER_KEY, max_retries=0
            )
            direct = openai.AsyncOpenAI(
                base_url=f"{upstream_url}/api/v1", api_key=DEMO_TEAM_KEY, max_retries=0
            )
            async with via_gateway, direct:
                yield via_gateway, direct


@pytest.fixture
async def sdk(tmp_path: Path) -> AsyncIterator[openai.AsyncOpenAI]:
    async with clients(tmp_path) as (via_gateway, _):
        yield via_gateway


def shape(chunks: list[ChatCompletionChunk]) -> list[dict[str, Any]]:
    """A stream as a client reads it, without the ids and times that differ between calls."""
    return [c.model_dump(exclude={"id", "created"}, exclude_unset=True) for c in chunks]


@pytest.mark.parametrize("asks_usage", [False, True])
async def test_a_stream_reads_as_it_would_without_the_gateway(
    tmp_path: Path, asks_usage: bool
) -> None:
    options: dict[str, Any] = {"stream_options": {"include_usage": True}} if asks_usage else {}
    request: dict[str, Any] = {"model": "deepseek/deepseek-v3.2", "messages": MESSAGES, **options}
    async with clients(tmp_path) as (via_gateway, direct):
        through = [
            c async for c in await via_gateway.chat.completions.create(**request, stream=True)
        ]
        alone = [c async for c in await direct.chat.completions.create(**request, stream=True)]
    assert shape(through) == shape(alone)
    assert (through[-1].usage is not None) is asks_usage
    if not asks_usage:
        assert all(c.choices and "usage" not in c.model_fields_set for c in through)
    # Either way, the gateway got the usage, and the ledger has it.
    (row,) = ledger_rows(tmp_path / "gateway-usage.db")
    assert row["member"] == "demo" and row["stream"] == 1 and row["outcome"] == "ok"
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    assert Decimal(row["cost_usd"]) > 0


async def test_models_list_shows_only_allowed_models(sdk: openai.AsyncOpenAI) -> None:
    ids = [model.id async for model in sdk.models.list()]
    assert "deepseek/deepseek-v3.2" in ids and "anthropic/claude-opus-4.6" in ids
    assert not [i for i in ids if i.startswith("openai/")]
    model = await sdk.models.retrieve("deepseek/deepseek-v3.2")
    assert model.owned_by == "deepseek"


async def test_chat_completion_plain_and_streamed(sdk: openai.AsyncOpenAI) -> None:
    plain = await sdk.chat.completions.create(model="deepseek/deepseek-v3.2", messages=MESSAGES)
    text = plain.choices[0].message.content
    assert text and "Say hello to the team" in text
    assert (
        plain.usage is not None
        and plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens
    )

    stream = await sdk.chat.completions.create(
        model="deepseek/deepseek-v3.2", messages=MESSAGES, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert len(chunks) > 3  # arrived as separate events
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text


async def test_streamed_usage_when_asked(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="moonshotai/kimi-k2.5",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    # NanoGPT puts usage on the finish frame itself, choices and all
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


async def test_completions_and_embeddings(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.completions.create(
        model="qwen/qwen3-coder-next", prompt="def add(a, b):"
    )
    assert completion.choices[0].text
    embedding = await sdk.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(embedding.data) == 2 and embedding.data[0].embedding


async def test_denied_model_raises_permission_denied(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.PermissionDeniedError) as excinfo:
        await sdk.chat.completions.create(model="openai/gpt-5.2", messages=MESSAGES)
    assert excinfo.value.code == "model_not_allowed"
    assert "openai/gpt-5.2" in excinfo.value.message


async def test_unknown_model_and_bad_key(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        await sdk.chat.completions.create(model="nobody/nothing", messages=MESSAGES)
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        await sdk.with_options(api_key="sk-wrong").models.list()
