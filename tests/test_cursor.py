"""Cursor's agent mode through the gateway: its Responses-shaped bodies on /chat/completions
reach NanoGPT as Chat Completions, checked by the policy and metered like any chat."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    BOB_KEY,
    FakeNanoGPT,
    assert_openai_error,
    auth,
    gateway_client,
    ledger_rows,
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
