"""Real clients' requests, replayed: every fixture `clients/run` recorded (the openai SDKs,
langchain-openai, LiteLLM, llm, the AI SDK, Codex, Claude Code, opencode, Cline, Continue) goes
through the gateway in front of the demo upstream with a member key. Each request must get what
that client read when it was recorded (the answer's shape, how its stream ends, the tools it is
asked to call), and leave one metered ledger row.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.cli import DEMO_MEMBER_KEY
from gateway.config import Demo, load_settings
from gateway.demo_upstream import DEMO_TEAM_KEY, create_demo_upstream
from tests.conftest import ledger_rows, live_server, with_lifespan_state

pytestmark = pytest.mark.anyio
CLIENTS = Path(__file__).parent / "fixtures" / "clients"
RECORDED = sorted(p for p in CLIENTS.glob("*.json") if not p.name.startswith("cursor_"))
SECRET_HEADERS = {"authorization", "x-api-key", "api-key", "cookie", "proxy-authorization"}
STREAM_END = {
    "chat/completions": "[DONE]",
    "responses": "response.completed",
    "messages": "message_stop",
}


def recorded(path: Path) -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = json.loads(path.read_text())["requests"]
    return requests


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in-process, as `serve --demo` configures it, in front of the demo upstream
    on a loopback port; the ledger is flushed when the block ends."""
    config = tmp_path / "gateway.toml"
    config.write_text("")
    async with live_server(create_demo_upstream()) as upstream_url:
        demo = Demo(base_url=f"{upstream_url}/api", team_key=DEMO_TEAM_KEY)
        settings = load_settings(config, {}, demo=demo, fallback_member=("demo", DEMO_MEMBER_KEY))
        app = create_app(settings)
        async with app.router.lifespan_context(app) as started:
            state = dict(started or {})
            transport = httpx.ASGITransport(app=with_lifespan_state(app, state))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://localhost"
            ) as client:
                await state["current"].gateway.catalog.refresh()
                yield client


def replay(client: httpx.AsyncClient, request: dict[str, Any]) -> Any:
    headers = {k: v for k, v in request["headers"].items() if k != "accept-encoding"}
    if request["auth"] == "x-api-key":
        headers["x-api-key"] = DEMO_MEMBER_KEY
    else:
        headers["authorization"] = f"Bearer {DEMO_MEMBER_KEY}"
    url = request["path"] + (f"?{request['query']}" if request["query"] else "")
    content = json.dumps(request["body"]).encode() if request["body"] is not None else None
    return client.request(request["method"], url, headers=headers, content=content)


def events(text: str) -> list[tuple[str, Any]]:
    """An SSE body as (event name or "", data) pairs; `[DONE]` kept as a name."""
    found: list[tuple[str, Any]] = []
    for block in text.split("\n\n"):
        name, data = "", ""
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
        if data == "[DONE]":
            found.append(("[DONE]", None))
        elif data:
            parsed = json.loads(data)
            found.append((name or parsed.get("type", ""), parsed))
    return found


def tools_called(endpoint: str, response: httpx.Response) -> list[str]:
    """The tools an answer asks the client to call, in order, as the client assembles them."""
    names: list[str] = []
    if not response.headers["content-type"].startswith("text/event-stream"):
        body = response.json()
        for choice in body.get("choices") or []:
            names += [c["function"]["name"] for c in choice["message"].get("tool_calls") or []]
        names += [i["name"] for i in body.get("output") or [] if i["type"] == "function_call"]
        if body.get("type") == "message":
            names += [b["name"] for b in body["content"] if b["type"] == "tool_use"]
        return names
    for name, data in events(response.text):
        if endpoint == "chat/completions" and data is not None:
            for choice in data.get("choices") or []:
                calls = (choice.get("delta") or {}).get("tool_calls") or []
                names += [c["function"]["name"] for c in calls if c.get("function", {}).get("name")]
        elif name == "response.output_item.done" and data["item"]["type"] == "function_call":
            names.append(data["item"]["name"])
        elif name == "content_block_start" and data["content_block"]["type"] == "tool_use":
            names.append(data["content_block"]["name"])
    return names


def assert_shape(endpoint: str, request: dict[str, Any], response: httpx.Response) -> None:
    """What the client's parser needs: the object it reads, or a stream that ends as it expects."""
    assert response.status_code == 200, response.text
    streamed = bool((request["body"] or {}).get("stream"))
    if streamed:
        assert response.headers["content-type"].startswith("text/event-stream")
        names = [name for name, _ in events(response.text)]
        if endpoint == "chat/completions":
            assert names[-1] == "[DONE]"
        else:  # NanoGPT's Responses streams add a [DONE] after the last event; SDKs skip it
            assert [n for n in names if n != "[DONE]"][-1] == STREAM_END[endpoint]
        assert request["seen"]["ends_with"] == STREAM_END[endpoint]
        return
    body = response.json()
    expected = {
        "chat/completions": ("object", "chat.completion"),
        "responses": ("object", "response"),
        "messages": ("type", "message"),
        "embeddings": ("object", "list"),
    }[endpoint]
    assert body[expected[0]] == expected[1], body
    if endpoint == "embeddings":
        assert body["data"] and body["data"][0]["embedding"]


def asks_for_json(body: dict[str, Any]) -> bool:
    text = body.get("text")
    format_ = body.get("response_format") or (
        text.get("format") if isinstance(text, dict) else None
    )
    return isinstance(format_, dict) and format_.get("type") in ("json_schema", "json_object")


def answer_text(endpoint: str, response: httpx.Response) -> str:
    """The text a client assembles from a chat or Responses answer, streamed or not."""
    if response.headers["content-type"].startswith("text/event-stream"):
        found = events(response.text)
        if endpoint == "responses":
            return "".join(d["delta"] for n, d in found if n == "response.output_text.delta")
        return "".join(
            (choice.get("delta") or {}).get("content") or ""
            for _, d in found
            if d is not None
            for choice in d.get("choices") or []
        )
    body = response.json()
    if endpoint == "responses":
        parts = [i["content"] for i in body["output"] if i["type"] == "message"]
        return "".join(
            p["text"] for content in parts for p in content if p["type"] == "output_text"
        )
    return str(body["choices"][0]["message"]["content"])


def test_every_client_was_recorded_without_its_secrets() -> None:
    clients = {path.name.split("_")[0] for path in RECORDED}
    assert {"openai", "langchain", "litellm", "llm", "ai", "codex", "claude", "opencode"} <= clients
    for path in RECORDED:
        text = path.read_text()
        assert "sk-client-" not in text and DEMO_MEMBER_KEY not in text, path.name
        for request in recorded(path):
            assert not SECRET_HEADERS & set(request["headers"]), path.name
            assert request["seen"]["status"] == 200, path.name


@pytest.mark.parametrize("fixture", RECORDED, ids=[p.stem for p in RECORDED])
async def test_a_recorded_client_gets_what_it_got_and_is_metered(
    tmp_path: Path, fixture: Path
) -> None:
    requests = recorded(fixture)
    async with gateway(tmp_path) as client:
        for request in requests:
            endpoint = request["path"].removeprefix("/v1/")
            response = await replay(client, request)
            assert_shape(endpoint, request, response)
            assert tools_called(endpoint, response) == request["seen"]["tool_calls"]
            if asks_for_json(request["body"] or {}):  # structured output parses as asked
                assert isinstance(json.loads(answer_text(endpoint, response)), dict)
    rows = ledger_rows(tmp_path / "gateway-usage.db")
    assert [row["endpoint"] for row in rows] == [r["path"].removeprefix("/v1/") for r in requests]
    for row in rows:
        assert (row["member"], row["status"], row["outcome"], row["unmetered"]) == (
            "demo",
            200,
            "ok",
            None,
        )
        assert row["prompt_tokens"] > 0 and row["cost_usd"] is not None
        if row["endpoint"] != "embeddings":
            assert row["completion_tokens"] > 0


async def test_an_agent_that_offered_tools_is_asked_to_call_one() -> None:
    # Every recorded round trip: the first answer to a request offering tools calls one, and the
    # client came back with its result (the demo answers in text after a tool's result).
    for path in RECORDED:
        requests = recorded(path)
        offered = [r for r in requests if (r["body"] or {}).get("tools")]
        if len(offered) >= 2:
            assert offered[0]["seen"]["tool_calls"], path.name
            assert not offered[-1]["seen"]["tool_calls"], path.name
