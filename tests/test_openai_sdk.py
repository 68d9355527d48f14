"""End to end with the real `openai` SDK: the gateway and the demo upstream on real servers,
as `serve --demo` runs them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from gateway.app import create_app
from gateway.cli import DEMO_MEMBER_KEY
from gateway.config import Demo, load_settings
from gateway.demo_upstream import DEMO_TEAM_KEY, create_demo_upstream
from tests.conftest import live_server

pytestmark = pytest.mark.anyio
MESSAGES = [{"role": "user", "content": "Say hello to the team"}]


@pytest.fixture
async def sdk(tmp_path: Path) -> AsyncIterator[openai.AsyncOpenAI]:
    config = tmp_path / "gateway.toml"
    config.write_text("[policy]\ndeny = ['openai/*']\n")
    async with live_server(create_demo_upstream()) as upstream_url:
        demo = Demo(base_url=f"{upstream_url}/api", team_key=DEMO_TEAM_KEY)
        settings = load_settings(config, {}, demo=demo, fallback_member=("demo", DEMO_MEMBER_KEY))
        async with live_server(create_app(settings)) as gateway_url:
            client = openai.AsyncOpenAI(
                base_url=f"{gateway_url}/v1", api_key=DEMO_MEMBER_KEY, max_retries=0
            )
            async with client:
                yield client


async def test_models_list_shows_only_allowed_models(sdk: openai.AsyncOpenAI) -> None:
    ids = [model.id async for model in sdk.models.list()]
    assert "deepseek/deepseek-v3.2" in ids and "anthropic/claude-opus-4.6" in ids
    assert not [i for i in ids if i.startswith("openai/")]
    model = await sdk.models.retrieve("deepseek/deepseek-v3.2")
    assert model.owned_by == "deepseek"


async def test_chat_completion_plain_and_streamed(sdk: openai.AsyncOpenAI) -> None:
    plain = await sdk.chat.completions.create(model="deepseek/deepseek-v3.2", messages=MESSAGES)  # type: ignore[arg-type]
    text = plain.choices[0].message.content
    assert text and "Say hello to the team" in text
    assert (
        plain.usage is not None
        and plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens
    )

    stream = await sdk.chat.completions.create(
        model="deepseek/deepseek-v3.2", messages=MESSAGES, stream=True
    )  # type: ignore[arg-type]
    chunks = [chunk async for chunk in stream]
    assert len(chunks) > 3  # arrived as separate events
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text


async def test_streamed_usage_when_asked(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="moonshotai/kimi-k2.5",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


async def test_completions_and_embeddings(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.completions.create(
        model="qwen/qwen3-coder-next", prompt="def add(a, b):"
    )
    assert completion.choices[0].text
    embedding = await sdk.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(embedding.data) == 2 and embedding.data[0].embedding


async def test_denied_model_raises_permission_denied(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.PermissionDeniedError) as excinfo:
        await sdk.chat.completions.create(model="openai/gpt-5.2", messages=MESSAGES)  # type: ignore[arg-type]
    assert excinfo.value.code == "model_not_allowed"
    assert "openai/gpt-5.2" in excinfo.value.message


async def test_unknown_model_and_bad_key(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        await sdk.chat.completions.create(model="nobody/nothing", messages=MESSAGES)  # type: ignore[arg-type]
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        await sdk.with_options(api_key="sk-wrong").models.list()
