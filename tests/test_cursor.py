"""Cursor's agent mode through the gateway: its Responses-shaped bodies on /chat/completions
reach NanoGPT as Chat Completions, checked by the policy and metered like any chat."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from gateway.app import create_app
from gateway.cli import DEMO_MEMBER_KEY
from gateway.config import Demo, load_settings
from gateway.demo_upstream import DEMO_TEAM_KEY, create_demo_upstream
from tests.conftest import (
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
CLIENTS = Path(__file__).parent / "fixtures" / "clients"
GPT = "openai/gpt-5.2"


def cursor_body(name: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((CLIENTS / f"{name}.json").read_text())
    body.pop("_source")
    return {**body, **changes}


@pytest.mark.parametrize("name", ["cursor_first_turn", "cursor_follow_up"])
async def test_cursor_bodies_reach_nanogpt_as_chat_completions(
    tmp_path: Path, nanogpt: FakeNanoGPT, name: str
) -> None:
    async def stream(request: httpx.Request) -> httpx.Response:
        frames = [
            b'data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\n',
            b'data: {"choices":[],"usage":{"prompt_tokens":120,"completion_tokens":3}}\n\n',
            b"data: [DONE]\n\n",
        ]
        return httpx.Response(
            200, content=b"".join(frames), headers={"content-type": "text/event-stream"}
        )

    nanogpt.handler = stream
    body = cursor_body(name, model=GPT)
    async with gateway_client(make_settings(tmp_path), nanogpt) as client:
        response = await client.post("/v1/chat/completions", json=body, headers=auth())
    assert response.status_code == 200
    assert '"content":"ok"' in response.text  # Chat Completions SSE, as Cursor expects
    (sent,) = nanogpt.requests
    forwarded = json.loads(sent.content)
    assert forwarded["messages"] and "input" not in forwarded and "include" not in forwarded
    assert forwarded["model"] == GPT and forwarded["stream"] is True
    assert int(sent.headers["content-length"]) == len(sent.content)
    (row,) = ledger_rows()
    assert (row["endpoint"], row["model"], row["prompt_tokens"]) == ("chat/completions", GPT, 120)
    assert row["cost_source"] == "catalog"


async def test_a_cursor_body_is_checked_against_the_policy(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    body = cursor_body("cursor_first_turn", model="anthropic/claude-opus-4.6")
    async with gateway_client(make_settings(tmp_path), nanogpt) as client:
        response = await client.post("/v1/chat/completions", json=body, headers=auth(BOB_KEY))
    assert_openai_error(response, 403, "model_not_allowed")  # bob may not use anthropic/*
    assert nanogpt.requests == []


async def test_an_untranslatable_input_is_a_400_naming_the_item(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    body = {"model": GPT, "input": [{"type": "computer_call", "id": "c"}], "stream": True}
    async with gateway_client(make_settings(tmp_path), nanogpt) as client:
        response = await client.post("/v1/chat/completions", json=body, headers=auth())
    error = assert_openai_error(response, 400)
    assert error["param"].startswith("input[0]")
    assert nanogpt.requests == []


async def test_cursor_bodies_through_the_openai_sdk_read_as_chat_chunks(tmp_path: Path) -> None:
    """The SDK's raw request API, as Cursor's backend posts: a Responses-shaped body to
    /chat/completions, read back with the SDK's own Chat Completions stream parser."""
    config = tmp_path / "gateway.toml"
    config.write_text("")
    async with live_server(create_demo_upstream()) as upstream_url:
        demo = Demo(base_url=f"{upstream_url}/api", team_key=DEMO_TEAM_KEY)
        settings = load_settings(config, {}, demo=demo, fallback_member=("demo", DEMO_MEMBER_KEY))
        async with live_server(create_app(settings)) as gateway_url:
            client = openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key=DEMO_MEMBER_KEY)
            async with client:
                for name in ("cursor_first_turn", "cursor_follow_up"):
                    body = cursor_body(name, model="deepseek/deepseek-v3.2")
                    stream = await client.post(
                        "/chat/completions",
                        body=body,
                        cast_to=ChatCompletionChunk,
                        stream=True,
                        stream_cls=openai.AsyncStream[ChatCompletionChunk],
                    )
                    chunks = [chunk async for chunk in stream]
                    assert chunks and all(c.object == "chat.completion.chunk" for c in chunks)
                    deltas = [c.choices[0].delta for c in chunks if c.choices]
                    said = "".join(d.content or "" for d in deltas)
                    called = [t for d in deltas for t in d.tool_calls or []]
                    assert said or called  # text, or a call of one of Cursor's tools
                    assert chunks[-1].usage is not None  # Cursor asked for usage
    rows = ledger_rows()
    assert [r["endpoint"] for r in rows] == ["chat/completions"] * 2
    assert all(r["prompt_tokens"] and r["cost_source"] for r in rows)
