"""The demo upstream as NanoGPT shapes it: auth, the catalogs, chat and text completions (JSON
and streamed, usage and `x_nanogpt_pricing` on the finish frame), embeddings, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from starlette.types import Message, Scope

from gateway.demo_upstream import DEMO_TEAM_KEY, create_demo_upstream
from gateway.demo_upstream.catalog import TEXT_MODELS


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


AUTH = {"Authorization": f"Bearer {DEMO_TEAM_KEY}"}
MODEL_LISTS = [
    "/api/v1/models",
    "/api/subscription/v1/models",
    "/api/paid/v1/models",
    "/api/personalized/v1/models",
]
BASIC_KEYS = {"id", "object", "created", "owned_by"}
MODEL_PRICES = {m["id"]: m["pricing"] for m in TEXT_MODELS if "pricing" in m}
# The `x_nanogpt_pricing` fields NanoGPT's streaming-protocol page lists, plus `costUsd`.
PRICING_KEYS = {
    "amount", "currency", "cost", "costUsd", "inputTokens", "outputTokens", "cacheCost",
    "paymentSource", "billedToTeam", "billedTeamId", "billedTeamName",
}  # fmt: skip
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there friend"}]


@pytest.fixture
async def client(anyio_backend: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_demo_upstream())
    async with httpx.AsyncClient(transport=transport, base_url="http://demo", headers=AUTH) as c:
        yield c


def sse_data(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    assert text.endswith("\n\n")
    blocks = text.split("\n\n")[:-1]
    assert all(block.startswith("data: ") for block in blocks)
    return [block.removeprefix("data: ") for block in blocks]


def chunks(text: str) -> list[dict[str, Any]]:
    data = sse_data(text)
    assert data[-1] == "[DONE]"
    assert "[DONE]" not in data[:-1]
    return [json.loads(d) for d in data[:-1]]


async def model_list(client: httpx.AsyncClient, path: str, **params: str) -> list[dict[str, Any]]:
    response = await client.get(path, params=params)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    data: list[dict[str, Any]] = body["data"]
    return data


# --- auth -------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"x-api-key": "nope"}, {"Authorization": DEMO_TEAM_KEY}],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/models"),
        ("POST", "/api/v1/chat/completions"),
        ("POST", "/api/check-balance"),
    ],
)
async def test_missing_or_wrong_key_is_401(headers: dict[str, str], method: str, path: str) -> None:
    transport = httpx.ASGITransport(app=create_demo_upstream())
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as anonymous:
        response = await anonymous.request(method, path, headers=headers, json={})
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "message": "Invalid or missing API key",
            "type": "authentication_error",
            "code": "invalid_api_key",
        }
    }


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer sekret"},
        {"x-api-key": "sekret"},
        {"authorization": "bearer sekret"},
    ],
)
async def test_both_header_forms_accepted_with_custom_key(headers: dict[str, str]) -> None:
    transport = httpx.ASGITransport(app=create_demo_upstream(team_key="sekret"))
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as c:
        assert (await c.get("/api/v1/models", headers=headers)).status_code == 200
        assert (await c.get("/api/v1/models", headers=AUTH)).status_code == 401


# --- models -------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("path", MODEL_LISTS)
async def test_basic_items_have_exactly_the_openai_keys(
    client: httpx.AsyncClient, path: str
) -> None:
    for params in ({}, {"detailed": "false"}, {"detailed": "yes"}):
        data = await model_list(client, path, **params)
        assert data
        for item in data:
            assert set(item) == BASIC_KEYS
            assert item["object"] == "model"
            assert isinstance(item["created"], int)


@pytest.mark.anyio
@pytest.mark.parametrize("flag", ["true", "1", "True"])
@pytest.mark.parametrize("path", MODEL_LISTS)
async def test_detailed_items_add_metadata(client: httpx.AsyncClient, path: str, flag: str) -> None:
    basic = await model_list(client, path)
    detailed = await model_list(client, path, detailed=flag)
    assert [m["id"] for m in detailed] == [m["id"] for m in basic]
    for item in detailed:
        assert BASIC_KEYS | {"name", "description", "context_length", "icon_url"} <= set(item)
        assert "subscription" not in item
        assert "visible" not in item
        if "pricing" in item:
            assert item["pricing"]["currency"] == "USD"
            assert item["pricing"]["unit"] == "per_million_tokens"


@pytest.mark.anyio
async def test_subscription_and_paid_partition_the_canonical_list(
    client: httpx.AsyncClient,
) -> None:
    canonical = [m["id"] for m in await model_list(client, "/api/v1/models")]
    subscription = {m["id"] for m in await model_list(client, "/api/subscription/v1/models")}
    paid = {m["id"] for m in await model_list(client, "/api/paid/v1/models")}
    assert len(canonical) == len(set(canonical)) >= 10
    assert subscription and paid
    assert subscription.isdisjoint(paid)
    assert subscription | paid == set(canonical)
    personalized = {m["id"] for m in await model_list(client, "/api/personalized/v1/models")}
    assert personalized < set(canonical)
    assert personalized & subscription and personalized & paid


@pytest.mark.anyio
async def test_catalog_varies_like_the_real_one(client: httpx.AsyncClient) -> None:
    models = await model_list(client, "/api/v1/models", detailed="true")
    ids = {m["id"] for m in models}
    assert {"openai/gpt-5.2", "anthropic/claude-opus-4.6:thinking", "deepseek/deepseek-v3.2"} <= ids
    assert any("pricing" not in m for m in models)
    assert any("capabilities" not in m for m in models)
    assert any("distillationPolicy" not in m for m in models)
    assert any(m["context_length"] is None for m in models)
    assert any(isinstance(m.get("cost_estimate"), str) for m in models)
    assert any(isinstance(m.get("cost_estimate"), dict) for m in models)
    policies = [m["distillationPolicy"] for m in models if "distillationPolicy" in m]
    assert {p["status"] for p in policies} == {"allowed", "disallowed", "unknown"}
    assert all(set(p) == {"status", "label", "basis", "sourceUrl", "note"} for p in policies)
    known = BASIC_KEYS | {
        "name", "description", "context_length", "max_output_tokens", "capabilities", "pricing",
        "icon_url", "cost_estimate", "category", "distillationPolicy",
    }  # fmt: skip
    assert any(set(m) - known for m in models), "expected one model with an unknown extra field"


@pytest.mark.anyio
async def test_embedding_models(client: httpx.AsyncClient) -> None:
    data = await model_list(client, "/api/v1/embedding-models")
    assert [m["id"] for m in data] == ["text-embedding-3-small", "text-embedding-3-large"]
    for m in data:
        assert m["object"] == "model"
        assert m["dimensions"] > 0 and m["max_input_tokens"] > 0
        assert m["pricing"]["completion"] == 0
        assert m["pricing"]["unit"] == "per_million_tokens"


# --- chat completions -------------------------------------------------------------------------


async def chat(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/api/v1/chat/completions", json={"model": "openai/gpt-5.2", **body})


@pytest.mark.anyio
async def test_chat_completion(client: httpx.AsyncClient) -> None:
    response = await chat(client, messages=HELLO)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "openai/gpt-5.2"
    [choice] = body["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert content.startswith("Hello from the NanoGPT demo upstream.")
    assert content.endswith("You said: Hi there friend")
    usage = body["usage"]
    assert usage["prompt_tokens"] == (2 + 3) + (3 + 3)
    assert usage["completion_tokens"] == len(content.split())
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert "completion_tokens_details" not in usage


@pytest.mark.anyio
async def test_chat_content_parts_and_long_input(client: httpx.AsyncClient) -> None:
    parts = [
        {"type": "text", "text": "look at"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "x" * 500},
    ]
    body = (await chat(client, messages=[{"role": "user", "content": parts}])).json()
    content = body["choices"][0]["message"]["content"]
    assert "You said: look at x" in content
    assert len(content.split()[-1]) < 200
    assert body["usage"]["prompt_tokens"] == 3 + 3


@pytest.mark.anyio
async def test_thinking_model_reports_reasoning_tokens(client: httpx.AsyncClient) -> None:
    model = "deepseek/deepseek-v3.2:thinking"
    body = (await chat(client, model=model, messages=HELLO)).json()
    message = body["choices"][0]["message"]
    assert message["reasoning_content"]
    usage = body["usage"]
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert 0 < reasoning < usage["completion_tokens"]
    assert usage["completion_tokens"] == len(message["content"].split()) + reasoning
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.anyio
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_truncates_the_reply(client: httpx.AsyncClient, field: str) -> None:
    body = (await chat(client, messages=HELLO, **{field: 3})).json()
    assert body["choices"][0]["message"]["content"] == "Hello from the"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


@pytest.mark.anyio
@pytest.mark.parametrize("model", ["openai/gpt-5.2", "moonshotai/kimi-k2.5:thinking"])
async def test_chat_stream_matches_non_streaming(client: httpx.AsyncClient, model: str) -> None:
    plain = (await chat(client, model=model, messages=HELLO)).json()
    response = await chat(client, model=model, messages=HELLO, stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    events = chunks(response.text)
    assert {e["object"] for e in events} == {"chat.completion.chunk"}
    assert len({(e["id"], e["created"], e["model"]) for e in events}) == 1
    assert events[0]["id"].startswith("chatcmpl-") and events[0]["model"] == model
    assert all("usage" not in e for e in events)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    middle = [e["choices"][0] for e in events[1:-1]]
    assert all(c["finish_reason"] is None and set(c["delta"]) == {"content"} for c in middle)
    content = "".join(c["delta"]["content"] for c in middle)
    assert content == plain["choices"][0]["message"]["content"]
    assert len(middle) == len(content.split())


def price(model: str, usage: dict[str, Any]) -> float:
    """USD for `usage` at the catalog's per-million-token prices."""
    pricing = MODEL_PRICES[model]
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    cost: float = (prompt * pricing["prompt"] + completion * pricing["completion"]) / 1e6
    return cost


@pytest.mark.anyio
@pytest.mark.parametrize("model", ["openai/gpt-5.2", "anthropic/claude-opus-4.6:thinking"])
async def test_chat_answer_carries_the_charge(client: httpx.AsyncClient, model: str) -> None:
    body = (await chat(client, model=model, messages=HELLO)).json()
    usage, pricing = body["usage"], body["x_nanogpt_pricing"]
    assert set(pricing) == PRICING_KEYS
    assert pricing["cost"] == pricing["amount"] == pricing["costUsd"] > 0
    assert pricing["cost"] == pytest.approx(price(model, usage), abs=1e-12)
    assert (pricing["inputTokens"], pricing["outputTokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert pricing["currency"] == pricing["paymentSource"] == "USD"
    assert pricing["billedToTeam"] is False and pricing["cacheCost"] == 0


@pytest.mark.anyio
async def test_unpriced_model_is_charged_nothing(client: httpx.AsyncClient) -> None:
    body = (await chat(client, model="zai-org/glm-4.7", messages=HELLO)).json()
    assert body["x_nanogpt_pricing"]["cost"] == 0


@pytest.mark.anyio
async def test_stream_usage_rides_the_finish_chunk(client: httpx.AsyncClient) -> None:
    plain = (await chat(client, messages=HELLO)).json()
    options = {"include_usage": True}
    events = chunks((await chat(client, messages=HELLO, stream=True, stream_options=options)).text)
    *content_events, finish = events
    assert all(len(e["choices"]) == 1 for e in events), "no empty-choices usage chunk"
    assert all(e["usage"] is None and "x_nanogpt_pricing" not in e for e in content_events)
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert finish["usage"] == plain["usage"]
    assert finish["x_nanogpt_pricing"] == plain["x_nanogpt_pricing"]
    assert finish["id"] == content_events[0]["id"]


@pytest.mark.anyio
async def test_stream_without_include_usage_still_carries_the_charge(
    client: httpx.AsyncClient,
) -> None:
    plain = (await chat(client, messages=HELLO)).json()
    events = chunks((await chat(client, messages=HELLO, stream=True)).text)
    assert all("usage" not in e for e in events)
    assert [e for e in events if "x_nanogpt_pricing" in e] == [events[-1]]
    assert events[-1]["x_nanogpt_pricing"] == plain["x_nanogpt_pricing"]


@pytest.mark.anyio
async def test_each_sse_event_is_sent_as_its_own_body_message(anyio_backend: str) -> None:
    # httpx's ASGITransport joins the body, so talk ASGI directly to see each `send`.
    payload = {"model": "openai/gpt-5.2", "messages": HELLO, "stream": True}
    requested, disconnected = False, anyio.Event()
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": json.dumps(payload).encode()}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/v1/chat/completions", "raw_path": b"", "root_path": "",
        "query_string": b"", "server": ("demo", 80), "client": ("test", 1),
        "headers": [(b"authorization", f"Bearer {DEMO_TEAM_KEY}".encode())],
    }  # fmt: skip
    await create_demo_upstream()(scope, receive, send)
    disconnected.set()
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    bodies = [m["body"] for m in sent[1:] if m["body"]]
    assert len(bodies) > 3
    assert all(b.startswith(b"data: ") and b.count(b"\n\n") == 1 for b in bodies)
    assert all(b.endswith(b"\n\n") for b in bodies)
    assert bodies[-1] == b"data: [DONE]\n\n"


@pytest.mark.anyio
async def test_chunk_delay_still_streams_everything() -> None:
    transport = httpx.ASGITransport(app=create_demo_upstream(chunk_delay_seconds=0.001))
    async with httpx.AsyncClient(transport=transport, base_url="http://demo", headers=AUTH) as c:
        events = chunks((await chat(c, messages=HELLO, stream=True)).text)
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


# --- completions --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_completions_both_modes(client: httpx.AsyncClient) -> None:
    request: dict[str, Any] = {
        "model": "qwen/qwen3-coder-next",
        "prompt": ["first one", "write a poem"],
    }
    plain = (await client.post("/api/v1/completions", json=request)).json()
    assert plain["object"] == "text_completion"
    assert plain["id"].startswith("cmpl-")
    [choice] = plain["choices"]
    assert choice["text"].endswith("You said: write a poem")
    assert choice["logprobs"] is None and choice["finish_reason"] == "stop"
    usage = plain["usage"]
    assert usage["prompt_tokens"] == 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert plain["x_nanogpt_pricing"]["cost"] == pytest.approx(price(request["model"], usage))

    options = {"include_usage": True}
    streamed = {**request, "stream": True, "stream_options": options}
    events = chunks((await client.post("/api/v1/completions", json=streamed)).text)
    *text_events, finish = events
    assert {e["object"] for e in events} == {"text_completion"}
    assert "".join(e["choices"][0]["text"] for e in events) == choice["text"]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert all(e["usage"] is None for e in text_events)
    assert finish["usage"] == usage
    assert finish["x_nanogpt_pricing"] == plain["x_nanogpt_pricing"]

    no_usage = chunks(
        (await client.post("/api/v1/completions", json={**request, "stream": True})).text
    )
    assert all("usage" not in e for e in no_usage)
    assert "x_nanogpt_pricing" in no_usage[-1]


# --- embeddings, balance ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_embeddings(client: httpx.AsyncClient) -> None:
    request = {"model": "text-embedding-3-small", "input": ["hello world", "other text here"]}
    body = (await client.post("/api/v1/embeddings", json=request)).json()
    assert body["object"] == "list" and body["model"] == "text-embedding-3-small"
    assert [d["index"] for d in body["data"]] == [0, 1]
    vectors = [d["embedding"] for d in body["data"]]
    assert all(len(v) == 8 and all(-1 <= x <= 1 for x in v) for v in vectors)
    assert vectors[0] != vectors[1]
    assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    single = {"model": "text-embedding-3-large", "input": "hello world"}
    again = (await client.post("/api/v1/embeddings", json=single)).json()
    assert again["data"][0]["embedding"] == vectors[0]


@pytest.mark.anyio
async def test_check_balance(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/check-balance")
    assert response.status_code == 200
    body = response.json()
    assert body["usd_balance"] == "129.46956147"
    assert body["nano_balance"] == "26.71801147"
    assert body["nanoDepositAddress"].startswith("nano_1demo")


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/api/v1/chat/completions", {"model": "openai/gpt-9", "messages": HELLO}),
        ("/api/v1/chat/completions", {"model": "text-embedding-3-small", "messages": HELLO}),
        ("/api/v1/completions", {"model": "nope", "prompt": "hi"}),
        ("/api/v1/embeddings", {"model": "openai/gpt-5.2", "input": "hi"}),
    ],
)
async def test_unknown_model_is_404(
    client: httpx.AsyncClient, path: str, payload: dict[str, Any]
) -> None:
    response = await client.post(path, json=payload)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["type"] == "invalid_request_error"
    assert payload["model"] in error["message"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[1, 2]",
        b'{"messages": []}',
        b'{"model": "openai/gpt-5.2"}',
        b'{"model": "openai/gpt-5.2", "messages": []}',
        b'{"model": "openai/gpt-5.2", "messages": "hi"}',
        b'{"model": "openai/gpt-5.2", "messages": [{"content": "x"}], "max_tokens": 0}',
    ],
)
async def test_malformed_chat_request_is_400(client: httpx.AsyncClient, content: bytes) -> None:
    response = await client.post("/api/v1/chat/completions", content=content)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"] and error["code"]


@pytest.mark.anyio
async def test_unknown_routes_and_methods(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert response.json()["error"]["type"] == "invalid_request_error"
    response = await client.get("/api/v1/chat/completions")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
