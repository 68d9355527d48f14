from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import openai
import pytest

from gateway.demo_catalog import TEXT_MODELS
from gateway.demo_upstream import DEMO_TEAM_KEY, create_demo_upstream


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
    return body["data"]


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
    return (prompt * pricing["prompt"] + completion * pricing["completion"]) / 1e6


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
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": json.dumps(payload).encode()}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
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
    request = {"model": "qwen/qwen3-coder-next", "prompt": ["first one", "write a poem"]}
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


# --- named-event streams (Responses, Messages) --------------------------------------------------


def named_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of an SSE body whose events each have an `event:` line; a trailing
    `data: [DONE]` is dropped."""
    blocks = text.split("\n\n")
    assert blocks.pop() == ""
    if blocks[-1] == "data: [DONE]":
        blocks.pop()
    events = []
    for block in blocks:
        name, data = block.split("\n")
        events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    assert all(name == data["type"] for name, data in events)
    return events


# --- responses ----------------------------------------------------------------------------------


async def respond(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/api/v1/responses", json={"model": "openai/gpt-5.2", **body})


@pytest.mark.anyio
async def test_response_to_a_string_input(client: httpx.AsyncClient) -> None:
    body = (await respond(client, input="Hi there friend")).json()
    assert body["object"] == "response" and body["id"].startswith("resp_")
    assert body["status"] == "completed" and body["model"] == "openai/gpt-5.2"
    [message] = body["output"]
    assert message["type"] == "message" and message["role"] == "assistant"
    [part] = message["content"]
    assert part["type"] == "output_text" and part["text"] == body["output_text"]
    assert body["output_text"].endswith("You said: Hi there friend")
    usage = body["usage"]
    assert usage == {
        "input_tokens": 3 + 3,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": len(part["text"].split()),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage["input_tokens"] + usage["output_tokens"],
    }
    assert "x_nanogpt_pricing" not in body


@pytest.mark.anyio
async def test_response_to_input_items_with_instructions(client: httpx.AsyncClient) -> None:
    items = [
        {"type": "message", "role": "user", "content": "first question"},
        {"type": "message", "role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "input_text", "text": "latest words"}]},
    ]
    model = "deepseek/deepseek-v3.2:thinking"
    body = (await respond(client, model=model, input=items, instructions="Be brief.")).json()
    assert body["instructions"] == "Be brief."
    assert body["output_text"].endswith("You said: latest words")
    assert body["usage"]["input_tokens"] == (2 + 3) + (2 + 3) + (2 + 3) + 2
    reasoning = body["usage"]["output_tokens_details"]["reasoning_tokens"]
    assert 0 < reasoning < body["usage"]["output_tokens"]


@pytest.mark.anyio
async def test_response_cut_by_max_output_tokens(client: httpx.AsyncClient) -> None:
    long = " ".join(["word"] * 30)
    body = (await respond(client, input=long, max_output_tokens=16)).json()
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["usage"]["output_tokens"] == 16
    response = await respond(client, input="hi", max_output_tokens=15)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_output_tokens"


@pytest.mark.anyio
async def test_response_stream_is_the_standard_event_sequence(client: httpx.AsyncClient) -> None:
    plain = (await respond(client, input="Hi there friend")).json()
    response = await respond(client, input="Hi there friend", stream=True)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n")
    events = named_events(response.text)
    names = [name for name, _ in events]
    deltas = names.count("response.output_text.delta")
    assert names == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", *["response.output_text.delta"] * deltas,
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    created, completed = events[0][1]["response"], events[-1][1]["response"]
    assert created["status"] == "in_progress" and created["usage"] is None
    assert created["id"] == completed["id"]
    text = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert text == completed["output_text"] == plain["output_text"]
    assert completed["usage"] == plain["usage"]


# --- messages (Anthropic) -----------------------------------------------------------------------

ANTHROPIC_HEADERS = {"x-api-key": DEMO_TEAM_KEY, "anthropic-version": "2023-06-01"}


async def message(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    request = {"model": "anthropic/claude-opus-4.6", "max_tokens": 256, "messages": HELLO[1:]}
    return await client.post("/api/v1/messages", json={**request, **body})


@pytest.mark.anyio
@pytest.mark.parametrize("headers", [ANTHROPIC_HEADERS, AUTH])
async def test_message(headers: dict[str, str]) -> None:
    transport = httpx.ASGITransport(app=create_demo_upstream())
    async with httpx.AsyncClient(transport=transport, base_url="http://demo", headers=headers) as c:
        body = (await message(c, system="Be brief.")).json()
    assert body["type"] == "message" and body["role"] == "assistant"
    assert body["id"].startswith("msg_") and body["model"] == "anthropic/claude-opus-4.6"
    [block] = body["content"]
    assert block["type"] == "text" and block["text"].endswith("You said: Hi there friend")
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    assert body["usage"] == {
        "input_tokens": 2 + (3 + 3),
        "output_tokens": len(block["text"].split()),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "service_tier": "standard",
    }


@pytest.mark.anyio
async def test_message_reads_the_cached_prefix_from_cache(client: httpx.AsyncClient) -> None:
    system = [
        {"type": "text", "text": "a long static handbook", "cache_control": {"type": "ephemeral"}}
    ]
    usage = (await message(client, system=system)).json()["usage"]
    assert usage["cache_read_input_tokens"] == 4
    assert usage["input_tokens"] == 3 + 3
    counted = await client.post(
        "/api/v1/messages/count_tokens",
        json={"model": "anthropic/claude-opus-4.6", "system": system, "messages": HELLO[1:]},
    )
    assert counted.json() == {"input_tokens": 4 + 3 + 3}


@pytest.mark.anyio
async def test_message_max_tokens_and_thinking(client: httpx.AsyncClient) -> None:
    cut = (await message(client, max_tokens=3)).json()
    assert cut["stop_reason"] == "max_tokens" and cut["usage"]["output_tokens"] == 3
    thought = (await message(client, model="anthropic/claude-opus-4.6:thinking")).json()
    assert [b["type"] for b in thought["content"]] == ["thinking", "text"]
    words = len(thought["content"][0]["thinking"].split())
    assert thought["usage"]["output_tokens"] == words + len(thought["content"][1]["text"].split())


@pytest.mark.anyio
@pytest.mark.parametrize("model", ["anthropic/claude-opus-4.6", "deepseek/deepseek-v3.2:thinking"])
async def test_message_stream_is_anthropic_event_sequence(
    client: httpx.AsyncClient, model: str
) -> None:
    plain = (await message(client, model=model)).json()
    response = await message(client, model=model, stream=True)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = named_events(response.text)
    assert "[DONE]" not in response.text
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == plain["usage"]["input_tokens"]
    assert start["usage"]["output_tokens"] == 0
    _, delta = events[-2]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"] == {"output_tokens": plain["usage"]["output_tokens"]}
    for index, block in enumerate(plain["content"]):
        kind = block["type"]
        own = [(n, d) for n, d in events[1:-2] if d["index"] == index]
        assert [n for n, _ in own[:1] + own[-1:]] == ["content_block_start", "content_block_stop"]
        assert own[0][1]["content_block"]["type"] == kind
        assert "".join(d["delta"][kind] for _, d in own[1:-1]) == block[kind]
        assert {d["delta"]["type"] for _, d in own[1:-1]} == {f"{kind}_delta"}


@pytest.mark.anyio
async def test_messages_errors_are_anthropic_shaped(client: httpx.AsyncClient) -> None:
    request = {"model": "anthropic/claude-opus-4.6", "messages": HELLO[1:]}
    response = await client.post("/api/v1/messages", json=request)
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "max_tokens is required",
            "param": "max_tokens",
        },
    }
    response = await message(client, model="nobody/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    bad_key = {"Authorization": "", "x-api-key": "nope"}
    response = await client.post("/api/v1/messages", json=request, headers=bad_key)
    assert response.status_code == 401
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "authentication_error"


# --- images, audio, moderations -----------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/api/v1/images/generations", "/v1/images/generations"])
async def test_image_generation_answers_with_the_cost(client: httpx.AsyncClient, path: str) -> None:
    request = {"model": "flux-schnell", "prompt": "a lighthouse", "n": 2, "size": "512x512"}
    body = (await client.post(path, json=request)).json()
    assert isinstance(body["created"], int)
    assert [set(item) for item in body["data"]] == [{"b64_json"}, {"b64_json"}]
    assert base64.b64decode(body["data"][0]["b64_json"]).startswith(b"\x89PNG\r\n\x1a\n")
    assert body["cost"] == pytest.approx(2 * 0.003)
    assert body["paymentSource"] == "USD"
    assert body["remainingBalance"] == pytest.approx(129.46956147 - body["cost"])


@pytest.mark.anyio
async def test_image_url_and_defaults(client: httpx.AsyncClient) -> None:
    request = {"prompt": "a lighthouse", "response_format": "url"}
    body = (await client.post("/api/v1/images/generations", json=request)).json()
    [item] = body["data"]
    assert body["cost"] == 0.04  # the default model, `hidream`, at 1024x1024
    image = await client.get(item["url"])
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")
    bad = {"prompt": "x", "size": "999x999"}
    response = await client.post("/api/v1/images/generations", json=bad)
    assert response.status_code == 400 and response.json()["error"]["param"] == "size"


@pytest.mark.anyio
async def test_image_models_catalog(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/image-models")).json()
    assert body["object"] == "list" and body["meta"]["count"] == len(body["data"]) == 3
    for model in body["data"]:
        assert model["object"] == "model" and model["category"] == "image"
        assert model["pricing"]["currency"] == "USD"
        assert set(model["pricing"]["per_image"]) == set(
            model["supported_parameters"]["resolutions"]
        )
        assert model["architecture"]["output_modalities"] == ["image"]
        assert {"image_generation", "image_to_image"} <= set(model["capabilities"])
    basic = (await client.get("/api/v1/image-models", params={"detailed": "false"})).json()
    assert all(set(m) == BASIC_KEYS for m in basic["data"])


def upload(model: str = "Whisper-Large-V3", audio: bytes = b"\xff\xfb" * 16_000) -> dict[str, Any]:
    return {"files": {"file": ("meeting.mp3", audio, "audio/mpeg")}, "data": {"model": model}}


@pytest.mark.anyio
async def test_transcription_of_a_multipart_upload(client: httpx.AsyncClient) -> None:
    body = (await client.post("/api/v1/audio/transcriptions", **upload())).json()
    assert body == {
        "text": "Demo transcription of meeting.mp3 (32000 bytes).",
        "language": "en",
        "duration": 2.0,
    }
    response = await client.post("/api/v1/audio/transcriptions", **upload("tts-1"))
    assert response.status_code == 404
    response = await client.post("/api/v1/audio/transcriptions", data={"model": "Wizper"})
    assert response.status_code == 400
    response = await client.post("/api/v1/audio/transcriptions", json={"model": "Wizper"})
    assert response.json()["error"]["code"] == "invalid_multipart_body"


@pytest.mark.anyio
async def test_speech_returns_audio_bytes(client: httpx.AsyncClient) -> None:
    request = {"model": "tts-1", "input": "Hello team", "voice": "alloy"}
    mp3 = await client.post("/api/v1/audio/speech", json=request)
    assert mp3.headers["content-type"] == "audio/mpeg" and mp3.content.startswith(b"ID3")
    wav = await client.post("/api/v1/audio/speech", json={**request, "response_format": "wav"})
    assert wav.headers["content-type"] == "audio/wav" and wav.content.startswith(b"RIFF")
    flac = await client.post("/api/v1/audio/speech", json={**request, "response_format": "flac"})
    assert flac.status_code == 400 and flac.json()["error"]["code"] == "unsupported_format"


@pytest.mark.anyio
async def test_audio_models_catalog(client: httpx.AsyncClient) -> None:
    everything = (await client.get("/api/v1/audio-models")).json()["data"]
    stt = (await client.get("/api/v1/audio-models", params={"type": "stt"})).json()
    tts = (await client.get("/api/v1/audio-models", params={"type": "tts"})).json()
    assert stt["meta"]["filter"] == {"type": "stt"}
    assert len(stt["data"]) + len(tts["data"]) == len(everything) == 4
    assert all(set(m["pricing"]) == {"per_minute", "currency"} for m in stt["data"])
    assert all(set(m["pricing"]) == {"per_thousand_chars", "currency"} for m in tts["data"])
    response = await client.get("/api/v1/audio-models", params={"type": "music"})
    assert response.status_code == 400


@pytest.mark.anyio
async def test_moderations(client: httpx.AsyncClient) -> None:
    request = {"input": ["a kind word", "I will kill the process"]}
    body = (await client.post("/api/v1/moderations", json=request)).json()
    assert body["id"].startswith("modr-") and body["model"] == "omni-moderation-latest"
    calm, harsh = body["results"]
    assert not calm["flagged"] and harsh["flagged"]
    assert harsh["categories"]["violence"] and not harsh["categories"]["hate"]
    assert set(calm["categories"]) == set(calm["category_scores"]) >= {"violence", "sexual"}
    usage = body["usage"]
    assert usage["prompt_tokens"] == (3 + 3) + (5 + 3) and usage["completion_tokens"] == 2
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    parts = [{"type": "text", "text": "hello"}, {"type": "image_url", "image_url": {"url": "x"}}]
    one = (await client.post("/api/v1/moderations", json={"input": parts})).json()
    assert len(one["results"]) == 1
    empty = await client.post("/api/v1/moderations", json={"input": "  "})
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_input"
    models = (await client.get("/api/v1/moderation-models")).json()["data"]
    assert {m["pricing"]["unit"] for m in models} == {"per_million_tokens"}


@pytest.mark.anyio
async def test_the_openai_sdk_reads_every_new_shape(anyio_backend: str) -> None:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_demo_upstream()))
    async with openai.AsyncOpenAI(
        base_url="http://demo/api/v1", api_key=DEMO_TEAM_KEY, http_client=http, max_retries=0
    ) as sdk:
        answer = await sdk.responses.create(model="openai/gpt-5.2", input="Hi there")
        assert answer.output_text.endswith("You said: Hi there") and answer.usage
        stream = await sdk.responses.create(model="openai/gpt-5.2", input="Hi", stream=True)
        kinds = [event.type async for event in stream]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        images = await sdk.images.generate(model="hidream", prompt="a lighthouse")
        assert images.data and images.data[0].b64_json
        audio = ("a.mp3", b"\xff\xfb" * 100, "audio/mpeg")
        text = await sdk.audio.transcriptions.create(model="Wizper", file=audio)
        assert text.text.startswith("Demo transcription of a.mp3")
        spoken = await sdk.audio.speech.create(model="Kokoro-82m", voice="af_bella", input="Hi")
        assert spoken.content.startswith(b"ID3")
        verdict = await sdk.moderations.create(input="a kind word")
        assert verdict.results[0].flagged is False
