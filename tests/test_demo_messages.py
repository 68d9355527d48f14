"""Anthropic's Messages API on the demo upstream as Claude Code drives it (raw httpx, its headers
and `?beta=true`): `tool_use` blocks, JSON and streamed (`input_json_delta`), text after a
`tool_result`, `tool_choice`, and a stream that assembles, the way the Anthropic SDK does, into
the very message the JSON answer holds."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from gateway.demo_upstream import DEMO_TEAM_KEY
from tests.test_demo_apis import named_events
from tests.test_demo_upstream import anyio_backend, client

__all__ = ["anyio_backend", "client"]  # fixtures, used by name

pytestmark = pytest.mark.anyio
CLAUDE_CODE = {
    "x-api-key": DEMO_TEAM_KEY,
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
}
PATH = "/api/v1/messages?beta=true"
ASK = [{"role": "user", "content": [{"type": "text", "text": "List the files here"}]}]
BASH = {
    "name": "Bash",
    "description": "Run a shell command",
    "input_schema": {
        "type": "object",
        "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}},
        "required": ["command"],
        "additionalProperties": False,
    },
}
CLOCK = {"name": "read_clock", "input_schema": {"type": "object"}}
SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}


async def send(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    request = {"model": "anthropic/claude-opus-4.6", "max_tokens": 1024, "messages": ASK}
    return await client.post(PATH, json={**request, **body}, headers=CLAUDE_CODE)


def tool_result(use: dict[str, Any], text: str) -> list[dict[str, Any]]:
    """The conversation after the assistant's `use` and the tool's answer to it."""
    result = {"type": "tool_result", "tool_use_id": use["id"], "content": text}
    return [*ASK, {"role": "assistant", "content": [use]}, {"role": "user", "content": [result]}]


def assemble(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """A message put together from its stream, as the Anthropic SDK accumulates one."""
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for name, data in events:
        if name == "message_start":
            message = {**data["message"], "content": []}
        elif name == "content_block_start":
            message["content"].append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block, delta = message["content"][data["index"]], data["delta"]
            if delta["type"] == "input_json_delta":
                partial[data["index"]] = partial.get(data["index"], "") + delta["partial_json"]
            else:
                field = delta["type"].removesuffix("_delta")
                block[field] += delta[field]
        elif name == "content_block_stop" and data["index"] in partial:
            message["content"][data["index"]]["input"] = json.loads(partial[data["index"]])
        elif name == "message_delta":
            message |= data["delta"]
            message["usage"] = {**message["usage"], **data["usage"]}
    return message


async def test_a_tool_use_then_text_from_its_result(client: httpx.AsyncClient) -> None:
    response = await send(client, tools=[BASH, CLOCK])
    assert response.status_code == 200
    first = response.json()
    assert first["stop_reason"] == "tool_use"
    [use] = first["content"]
    assert use["type"] == "tool_use" and use["id"].startswith("toolu_")
    assert use["name"] == "Bash" and use["input"] == {"command": "demo"}
    assert first["usage"]["output_tokens"] > 0 and first["usage"]["input_tokens"] > 0

    second = (await send(client, tools=[BASH, CLOCK], messages=tool_result(use, "a.txt"))).json()
    assert second["stop_reason"] == "end_turn"
    [text] = second["content"]
    assert text["type"] == "text" and text["text"].endswith("The tool returned: a.txt")
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"]


@pytest.mark.parametrize(
    "model", ["anthropic/claude-opus-4.6", "anthropic/claude-opus-4.6:thinking"]
)
@pytest.mark.parametrize("tools", [[BASH], []])
async def test_the_stream_assembles_into_the_json_answer(
    client: httpx.AsyncClient, model: str, tools: list[Any]
) -> None:
    plain = (await send(client, model=model, tools=tools)).json()
    response = await send(client, model=model, tools=tools, stream=True)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = named_events(response.text)
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    streamed = assemble(events)
    assert {**streamed, "id": plain["id"]} == plain
    kinds = [b["type"] for b in plain["content"]]
    assert kinds == ["thinking"] * model.endswith(":thinking") + ["tool_use" if tools else "text"]
    if tools:
        opened = [d["content_block"] for n, d in events if n == "content_block_start"][-1]
        assert opened == {"type": "tool_use", "id": plain["content"][-1]["id"], "name": "Bash",
                          "input": {}}  # fmt: skip
        fragments = [d["delta"] for n, d in events if d.get("delta", {}).get("partial_json")]
        assert len(fragments) > 1 and {f["type"] for f in fragments} == {"input_json_delta"}


@pytest.mark.parametrize(
    ("tools", "tool_choice", "after_result", "called"),
    [
        ([BASH, CLOCK], {"type": "auto"}, False, "Bash"),
        ([BASH, CLOCK], {"type": "none"}, False, None),
        ([BASH, CLOCK], {"type": "tool", "name": "read_clock"}, False, "read_clock"),
        ([BASH, CLOCK], {"type": "auto"}, True, None),
        ([BASH, CLOCK], {"type": "any"}, True, "Bash"),
        ([BASH, CLOCK], "required", True, "Bash"),  # NanoGPT's string form
        ([SEARCH], {"type": "auto"}, False, None),  # a server tool: not the demo's to run
        ([SEARCH, CLOCK], {"type": "auto"}, False, "read_clock"),
    ],
)
async def test_tool_choice(
    client: httpx.AsyncClient,
    tools: list[Any],
    tool_choice: Any,
    after_result: bool,
    called: str | None,
) -> None:
    use = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}
    messages = tool_result(use, "a.txt") if after_result else ASK
    body = (await send(client, tools=tools, tool_choice=tool_choice, messages=messages)).json()
    [block] = body["content"]
    assert block["type"] == ("tool_use" if called else "text")
    assert block.get("name") == called
    assert body["stop_reason"] == ("tool_use" if called else "end_turn")
    if called == "read_clock":
        assert block["input"] == {}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"input_schema": {}}]}, "tools"),
        ({"tools": "Bash"}, "tools"),
        ({"tools": [BASH], "tool_choice": {"type": "tool", "name": "Edit"}}, "tool_choice"),
        ({"tools": [BASH], "tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ],
)
async def test_malformed_tools_are_anthropic_400s(
    client: httpx.AsyncClient, extra: dict[str, Any], param: str
) -> None:
    response = await send(client, **extra)
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == param


async def test_tool_traffic_counts_as_input(client: httpx.AsyncClient) -> None:
    use = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls -la"}}
    counted = await client.post(
        "/api/v1/messages/count_tokens?beta=true",
        json={"model": "anthropic/claude-opus-4.6", "messages": tool_result(use, "one two three")},
        headers=CLAUDE_CODE,
    )
    # "List the files here" 4, {"command": "ls -la"} 3, "one two three" 3, and 3 per message
    assert counted.json() == {"input_tokens": 4 + 3 + 3 + 3 * 3}
