"""An agent's loop as `serve --demo` runs it: the real `openai` SDK (and Claude Code's request
shape) through the gateway in front of the demo upstream, both on real servers. A tool call,
streamed; the tool's result sent back; a text answer; each turn metered in the ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ledger_rows
from tests.test_demo_apis import named_events
from tests.test_demo_messages import BASH, assemble, tool_result
from tests.test_openai_sdk import clients

pytestmark = pytest.mark.anyio
MODEL = "deepseek/deepseek-v3.2"
ASK: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
WEATHER = {
    "name": "lookup_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def metered(tmp_path: Path) -> list[tuple[str, int, int]]:
    rows = ledger_rows(tmp_path / "gateway-usage.db")
    return [(r["endpoint"], r["prompt_tokens"], r["completion_tokens"]) for r in rows]


async def test_a_chat_tool_loop_streams_through_the_gateway(tmp_path: Path) -> None:
    tools: list[Any] = [{"type": "function", "function": WEATHER}]
    async with clients(tmp_path) as (sdk, _):
        async with sdk.chat.completions.stream(
            model=MODEL, messages=ASK, tools=tools, stream_options={"include_usage": True}
        ) as stream:
            first = await stream.get_final_completion()
        [called] = first.choices[0].message.tool_calls or []
        assert first.choices[0].finish_reason == "tool_calls"
        assert called.type == "function" and json.loads(called.function.arguments) == {
            "city": "demo"
        }
        result = {"role": "tool", "tool_call_id": called.id, "content": "Sunny"}
        messages = [*ASK, first.choices[0].message.model_dump(exclude_none=True), result]
        second = await sdk.chat.completions.create(model=MODEL, messages=messages, tools=tools)
    assert (second.choices[0].message.content or "").endswith("The tool returned: Sunny")
    assert [(e, p > 0, c > 0) for e, p, c in metered(tmp_path)] == [
        ("chat/completions", True, True),
        ("chat/completions", True, True),
    ]


async def test_a_responses_function_call_streams_through_the_gateway(tmp_path: Path) -> None:
    tools: list[Any] = [{"type": "function", **WEATHER}]
    async with clients(tmp_path) as (sdk, _):
        async with sdk.responses.stream(model=MODEL, input="Weather?", tools=tools) as stream:
            final = await stream.get_final_response()
        [called] = final.output
        assert called.type == "function_call" and json.loads(called.arguments) == {"city": "demo"}
        # an agent sends the call back as the SDK dumps it: a plain dict, not one of its TypedDicts
        follow_up: list[Any] = [
            {"role": "user", "content": "Weather?"},
            called.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": called.call_id, "output": "Sunny"},
        ]
        second = await sdk.responses.create(model=MODEL, input=follow_up, tools=tools)
    assert second.output_text.endswith("The tool returned: Sunny")
    assert [(e, p > 0, c > 0) for e, p, c in metered(tmp_path)] == [
        ("responses", True, True),
        ("responses", True, True),
    ]


async def test_sdk_default_embeddings_come_back_as_floats(tmp_path: Path) -> None:
    async with clients(tmp_path) as (via_gateway, direct):
        through = await via_gateway.embeddings.create(model="text-embedding-3-small", input="hi")
        alone = await direct.embeddings.create(
            model="text-embedding-3-small", input="hi", encoding_format="float"
        )
    assert through.data[0].embedding == pytest.approx(alone.data[0].embedding, abs=1e-7)
    assert len(through.data[0].embedding) == 8


async def test_claude_codes_tool_use_streams_through_the_gateway(tmp_path: Path) -> None:
    async with clients(tmp_path) as (sdk, _):
        base = str(sdk.base_url).removesuffix("/v1/")
        headers = {"x-api-key": sdk.api_key, "anthropic-version": "2023-06-01"}
        request = {
            "model": "anthropic/claude-opus-4.6",
            "max_tokens": 1024,
            "tools": [BASH],
            "stream": True,
        }
        async with httpx.AsyncClient(base_url=base, headers=headers) as http:
            ask = [{"role": "user", "content": "List the files here"}]
            first = await http.post("/v1/messages?beta=true", json={**request, "messages": ask})
            message = assemble(named_events(first.text))
            [use] = message["content"]
            assert message["stop_reason"] == "tool_use" and use["input"] == {"command": "demo"}
            then = {**request, "messages": tool_result(use, "a.txt")}
            second = assemble(
                named_events((await http.post("/v1/messages?beta=true", json=then)).text)
            )
    assert second["content"][0]["text"].endswith("The tool returned: a.txt")
    assert [(e, p > 0, c > 0) for e, p, c in metered(tmp_path)] == [
        ("messages", True, True),
        ("messages", True, True),
    ]
