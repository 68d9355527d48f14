"""Metering end to end, in-process: what each request puts in `/metrics` and in the ledger,
refusals and upstream failures included, with stream usage asked for and hidden."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from gateway.metrics import Metrics
from tests.conftest import (
    ALICE_KEY,
    BOB_KEY,
    TEAM_KEY,
    FakeNanoGPT,
    assert_openai_error,
    auth,
    gateway_client,
    ledger_rows,
    make_settings,
    metric,
)

pytestmark = pytest.mark.anyio
GPT = "openai/gpt-5.2"  # 2.5 / 10 USD per million tokens in the fixture catalog
USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 200,
    "total_tokens": 1200,
    "prompt_tokens_details": {"cached_tokens": 600},
    "completion_tokens_details": {"reasoning_tokens": 150},
}
COST = Decimal("0.0045")  # 1000 * 2.5 / 1e6 + 200 * 10 / 1e6


def chat(model: str = GPT, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def sse_events(*payloads: Any) -> bytes:
    return b"".join(
        b"data: " + (p if isinstance(p, bytes) else json.dumps(p).encode()) + b"\n\n"
        for p in payloads
    )


def streaming_upstream(nanogpt: FakeNanoGPT) -> list[dict[str, Any]]:
    """NanoGPT streaming like OpenAI: usage only when asked, on a last event with no choices."""
    bodies: list[dict[str, Any]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        asked = (body.get("stream_options") or {}).get("include_usage") is True
        extra = {"usage": None} if asked else {}
        events: list[Any] = [
            {"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}}], **extra},
            {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], **extra},
        ]
        if asked:
            events.append({"id": "c", "choices": [], "usage": USAGE})
        content = sse_events(*events, b"[DONE]")
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=content)

    nanogpt.handler = handler
    return bodies


def answer(usage: dict[str, Any] = USAGE) -> Any:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "x", "object": "chat.completion", "usage": usage})

    return handler


@pytest.fixture
async def metered(tmp_path: Path, nanogpt: FakeNanoGPT) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(make_settings(tmp_path), nanogpt) as client:
        yield client


async def scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert TEAM_KEY not in response.text
    return response.text


async def test_a_json_answer_is_counted_in_tokens_and_exact_cost(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    nanogpt.handler = answer()
    async with gateway_client(make_settings(tmp_path), nanogpt) as client:
        response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
        assert response.status_code == 200
        text = await scrape(client)
    labels = {"member": "alice", "model": GPT}
    expected = {"prompt": 1000, "completion": 200, "cached_prompt": 600, "reasoning": 150}
    for kind, count in expected.items():
        assert metric(text, "nanogpt_gateway_tokens_total", type=kind, **labels) == count
    assert metric(text, "nanogpt_gateway_cost_usd_total", **labels) == pytest.approx(0.0045)
    requests = {**labels, "endpoint": "chat/completions", "status": "200"}
    assert metric(text, "nanogpt_gateway_requests_total", **requests) == 1
    duration = {"endpoint": "chat/completions", "model": GPT}
    assert metric(text, "nanogpt_gateway_request_duration_seconds_count", **duration) == 1
    assert metric(text, "nanogpt_gateway_inflight_requests") == 0

    (row,) = ledger_rows()
    assert row["member"] == "alice" and row["model"] == GPT and row["status"] == 200
    assert row["outcome"] == "ok" and row["stream"] == 0
    assert Decimal(row["cost_usd"]) == COST
    assert (row["prompt_tokens"], row["completion_tokens"]) == (1000, 200)
    assert (row["cached_prompt_tokens"], row["reasoning_tokens"]) == (600, 150)
    assert row["endpoint"] == "chat/completions" and len(row["request_id"]) == 32
    assert row["duration_seconds"] >= 0 and row["ttft_seconds"] is None


async def test_a_stream_gets_usage_asked_for_and_the_client_never_sees_it(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    sent = streaming_upstream(nanogpt)
    async with gateway_client(make_settings(tmp_path), nanogpt) as client:
        response = await client.post("/v1/chat/completions", json=chat(stream=True), headers=auth())
        text = await scrape(client)
    assert sent[0]["stream_options"] == {"include_usage": True}
    # Exactly what the upstream sends a client that did not ask: no usage event, no usage key.
    assert response.content == sse_events(
        {"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}}]},
        {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        b"[DONE]",
    )
    assert metric(text, "nanogpt_gateway_tokens_total", member="alice", type="prompt") == 1000
    assert metric(text, "nanogpt_gateway_time_to_first_token_seconds_count", model=GPT) == 1
    (row,) = ledger_rows()
    assert row["stream"] == 1 and Decimal(row["cost_usd"]) == COST
    assert row["ttft_seconds"] is not None and row["ttft_seconds"] <= row["duration_seconds"]


async def test_a_client_that_asked_for_stream_usage_gets_it(
    metered: httpx.AsyncClient, nanogpt: FakeNanoGPT
) -> None:
    sent = streaming_upstream(nanogpt)
    options = {"include_usage": True}
    body = chat(stream=True, stream_options=options)
    response = await metered.post("/v1/chat/completions", json=body, headers=auth())
    assert sent[0]["stream_options"] == options
    assert b'"choices": [], "usage": {"prompt_tokens": 1000' in response.content
    assert response.content.count(b'"usage": null') == 2


async def test_stream_usage_injection_can_be_switched_off(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    sent = streaming_upstream(nanogpt)
    settings = make_settings(tmp_path, "[metering]\ninject_stream_usage = false\n")
    async with gateway_client(settings, nanogpt) as client:
        await client.post("/v1/chat/completions", json=chat(stream=True), headers=auth())
        text = await scrape(client)
    assert "stream_options" not in sent[0]
    assert metric(text, "nanogpt_gateway_unmetered_requests_total", reason="no_usage") == 1
    (row,) = ledger_rows()
    assert row["outcome"] == "ok" and row["prompt_tokens"] is None
    assert row["unmetered"] == "no_usage"
    assert row["cost_source"] == "estimate" and Decimal(row["cost_usd"]) > 0  # its reservation


async def test_an_upstream_that_refuses_stream_options_is_asked_once_then_left_alone(
    metered: httpx.AsyncClient, nanogpt: FakeNanoGPT
) -> None:
    bodies = streaming_upstream(nanogpt)
    streaming = nanogpt.handler

    async def picky(request: httpx.Request) -> httpx.Response:
        if b"stream_options" in request.content:
            bodies.append(json.loads(request.content))
            error = {"error": {"message": "Unknown parameter: stream_options", "type": "x"}}
            return httpx.Response(400, json=error)
        return await streaming(request)

    nanogpt.handler = picky
    for _ in range(2):
        response = await metered.post(
            "/v1/chat/completions", json=chat(stream=True), headers=auth()
        )
        assert response.status_code == 200
        assert b"Hi" in response.content and b"stream_options" not in response.content
    assert ["stream_options" in b for b in bodies] == [True, False, False]
    text = await scrape(metered)
    reason = "stream_usage_unsupported"
    assert metric(text, "nanogpt_gateway_unmetered_requests_total", reason=reason) == 2
    assert metric(text, "nanogpt_gateway_upstream_errors_total", reason="status_4xx") == 0


async def test_usage_of_embeddings_and_responses_is_read(
    metered: httpx.AsyncClient, nanogpt: FakeNanoGPT
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/embeddings"):
            return httpx.Response(200, json={"data": [], "usage": {"prompt_tokens": 40}})
        usage = {
            "input_tokens": 30,
            "output_tokens": 5,
            "input_tokens_details": {"cached_tokens": 10},
        }
        return httpx.Response(200, json={"object": "response", "usage": usage})

    nanogpt.handler = handler
    embedding = "text-embedding-3-small"
    await metered.post("/v1/embeddings", json={"model": embedding, "input": "x"}, headers=auth())
    await metered.post("/v1/responses", json={"model": GPT, "input": "x"}, headers=auth())
    text = await scrape(metered)
    assert metric(text, "nanogpt_gateway_tokens_total", model=embedding, type="prompt") == 40
    assert (
        metric(text, "nanogpt_gateway_cost_usd_total", model=embedding) == 8e-07
    )  # 40 * 0.02 / 1e6
    assert metric(text, "nanogpt_gateway_tokens_total", model=GPT, type="prompt") == 30
    assert metric(text, "nanogpt_gateway_tokens_total", model=GPT, type="cached_prompt") == 10
    assert metric(text, "nanogpt_gateway_tokens_total", model=GPT, type="completion") == 5


async def test_refusals_are_counted_and_audited_but_never_unmetered(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    settings = make_settings(tmp_path, "[upstream]\nmax_body_bytes = 2000\n", BOB_KEY=BOB_KEY)
    async with gateway_client(settings, nanogpt) as client:
        bob = auth(BOB_KEY)
        denied = await client.post(
            "/v1/chat/completions", json=chat("anthropic/claude-opus-4.6"), headers=bob
        )
        assert_openai_error(denied, 403, "model_not_allowed")
        unknown = await client.post(
            "/v1/chat/completions", json=chat("no/such-model"), headers=auth()
        )
        assert_openai_error(unknown, 404, "model_not_found")
        huge = chat(messages=[{"role": "user", "content": "x" * 5000}])
        assert_openai_error(
            await client.post("/v1/chat/completions", json=huge, headers=auth()), 413
        )
        assert_openai_error(
            await client.post("/v1/chat/completions", json=chat(), headers=auth("nope")), 401
        )
        text = await scrape(client)
    assert nanogpt.requests == []
    counted = {
        ("bob", "anthropic/claude-opus-4.6", "403"),
        ("alice", "other", "404"),  # an id outside the catalog never becomes a label
        ("alice", "none", "413"),  # refused before its body (and model) was read
        ("unauthenticated", "none", "401"),
    }
    for member, model, status in counted:
        labels = {"member": member, "model": model, "status": status}
        assert metric(text, "nanogpt_gateway_requests_total", **labels) == 1, labels
    assert metric(text, "nanogpt_gateway_unmetered_requests_total", reason="no_usage") == 0
    rows = ledger_rows()
    assert [(r["member"], r["status"], r["outcome"]) for r in rows] == [
        ("bob", 403, "refused"),
        ("alice", 404, "refused"),
        ("alice", 413, "refused"),
    ]  # the 401 is no member's: counted, not in the ledger
    assert rows[1]["model"] == "no/such-model"  # the ledger keeps what was asked for


async def test_upstream_errors_are_recorded_with_their_reason(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    async def overloaded(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": {"message": "overloaded"}})

    nanogpt.handler, nanogpt.keep_alive = overloaded, False
    async with gateway_client(make_settings(tmp_path), nanogpt) as client:
        answer = await client.post("/v1/chat/completions", json=chat(), headers=auth())
        assert answer.status_code == 503
        await nanogpt.stop()
        failed = await client.post("/v1/chat/completions", json=chat(), headers=auth())
        assert_openai_error(failed, 502)
        text = await scrape(client)
    assert metric(text, "nanogpt_gateway_upstream_errors_total", reason="status_5xx") == 1
    assert metric(text, "nanogpt_gateway_upstream_errors_total", reason="connect") == 1
    assert metric(text, "nanogpt_gateway_unmetered_requests_total", reason="upstream_error") == 1
    # Nothing reached NanoGPT when the connection failed: no cost can have been incurred.
    assert metric(text, "nanogpt_gateway_unmetered_requests_total", reason="upstream_failed") == 0


async def test_ledger_rows_for_upstream_error_and_failure(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    async def failing(request: httpx.Request) -> httpx.Response:
        if b"slow" in request.content:
            raise httpx.ReadTimeout("no answer")
        return httpx.Response(500, json={"error": {"message": f"bad key {TEAM_KEY}"}})

    nanogpt.handler = failing
    settings = make_settings(tmp_path, "[upstream]\nread_timeout_seconds = 0.2\n")
    async with gateway_client(settings, nanogpt) as client:
        await client.post("/v1/chat/completions", json=chat(), headers=auth())
        slow = chat(messages=[{"role": "user", "content": "slow"}])
        await client.post("/v1/chat/completions", json=slow, headers=auth())
    rows = ledger_rows()
    assert [(r["status"], r["outcome"]) for r in rows] == [
        (500, "upstream_error"),
        (504, "upstream_failed"),
    ]
    assert all(r["model"] == GPT for r in rows)
    error, timeout = rows
    assert error["cost_usd"] is None  # an error answer is not billed
    assert timeout["cost_source"] == "estimate"  # it may have been: it counts as reserved


async def test_end_user_header_is_recorded_in_the_ledger_only(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    nanogpt.handler = answer()
    toml = '[[members]]\nname = "webui"\nkey_env = "WEBUI_KEY"\nend_user_header = "X-OpenWebUI-User-Email"\n'
    settings = make_settings(tmp_path, toml, WEBUI_KEY="sk-webui")
    async with gateway_client(settings, nanogpt) as client:
        headers = {**auth("sk-webui"), "x-openwebui-user-email": "dana@example.com"}
        await client.post("/v1/chat/completions", json=chat(), headers=headers)
        text = await scrape(client)
    assert "dana@example.com" not in text
    (row,) = ledger_rows()
    assert (row["member"], row["end_user"]) == ("webui", "dana@example.com")


async def test_model_listing_is_counted_without_cost(
    metered: httpx.AsyncClient,
) -> None:
    assert (await metered.get("/v1/models", headers=auth())).status_code == 200
    text = await scrape(metered)
    labels = {"member": "alice", "model": "none", "endpoint": "models", "status": "200"}
    assert metric(text, "nanogpt_gateway_requests_total", **labels) == 1
    assert metric(text, "nanogpt_gateway_unmetered_requests_total", reason="no_usage") == 0


async def test_a_model_without_a_price_counts_tokens_and_is_unmetered_for_cost(
    metered: httpx.AsyncClient, nanogpt: FakeNanoGPT
) -> None:
    nanogpt.handler = answer()
    await metered.post("/v1/chat/completions", json=chat("zai-org/glm-4.7"), headers=auth())
    text = await scrape(metered)
    assert (
        metric(text, "nanogpt_gateway_tokens_total", model="zai-org/glm-4.7", type="prompt") == 1000
    )
    assert metric(text, "nanogpt_gateway_cost_usd_total", model="zai-org/glm-4.7") is None
    assert metric(text, "nanogpt_gateway_unmetered_requests_total", reason="no_price") == 1


async def test_price_overrides_win_over_the_catalog(tmp_path: Path, nanogpt: FakeNanoGPT) -> None:
    nanogpt.handler = answer()
    toml = '[pricing."openai/gpt-5.2"]\nprompt = 1\ncompletion = 2\n'
    async with gateway_client(make_settings(tmp_path, toml), nanogpt) as client:
        await client.post("/v1/chat/completions", json=chat(), headers=auth())
    (row,) = ledger_rows()
    assert Decimal(row["cost_usd"]) == Decimal("0.0014")


async def test_catalog_balance_and_implausible_prices(
    tmp_path: Path, nanogpt: FakeNanoGPT, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.metering")
    async with gateway_client(make_settings(tmp_path), nanogpt) as client:
        with anyio.fail_after(5):  # the first poll runs in the background at start-up
            while not metric(text := await scrape(client), "nanogpt_balance_usd"):
                await asyncio.sleep(0.01)
    assert metric(text, "nanogpt_balance_usd") == pytest.approx(129.46956147)
    assert metric(text, "nanogpt_balance_nano") == pytest.approx(26.71801147)
    assert "nano_" not in text  # the deposit address is not exported
    (request,) = nanogpt.balance_requests[:1]
    assert request.method == "POST" and request.headers["x-api-key"] == TEAM_KEY
    assert metric(text, "nanogpt_gateway_catalog_models", source="canonical") == 7
    refreshes = metric(text, "nanogpt_gateway_catalog_refreshes_total", result="success")
    assert refreshes is not None and refreshes >= 1
    warnings = [r.getMessage() for r in caplog.records if "implausible" in r.getMessage()]
    assert len(warnings) == 1 and "deepseek/deepseek-chat-v3-0324" in warnings[0]


async def test_balance_polling_can_be_switched_off(tmp_path: Path, nanogpt: FakeNanoGPT) -> None:
    settings = make_settings(tmp_path, "[metering]\nbalance_poll_seconds = 0\n")
    async with gateway_client(settings, nanogpt) as client:
        text = await scrape(client)
    assert nanogpt.balance_requests == []
    assert metric(text, "nanogpt_balance_usd") == 0


async def test_metrics_token_guards_the_metrics(tmp_path: Path, nanogpt: FakeNanoGPT) -> None:
    token = "metrics-token-0123456789"
    settings = make_settings(tmp_path, f'[metering]\nmetrics_token = "{token}"\n')
    async with gateway_client(settings, nanogpt) as client:
        assert_openai_error(await client.get("/metrics"), 401, "invalid_api_key")
        assert_openai_error(await client.get("/metrics", headers=auth(ALICE_KEY)), 401)
        allowed = await client.get("/metrics", headers=auth(token))
    assert allowed.status_code == 200 and "nanogpt_gateway_requests_total" in allowed.text


async def test_metrics_port_takes_metrics_off_the_api_port(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    settings = make_settings(tmp_path, "[metering]\nmetrics_port = 9464\n")
    async with gateway_client(settings, nanogpt) as client:
        assert_openai_error(await client.get("/metrics"), 404)


def test_every_app_has_metrics_of_its_own() -> None:
    first, second = Metrics(), Metrics()
    first.inflight.inc()
    first.requests.labels("alice", "m", "models", "200").inc()
    assert b"_created" not in first.exposition()[0]  # half the series, read by nobody
    assert b"nanogpt_gateway_inflight_requests 1.0" in first.exposition()[0]
    assert b"nanogpt_gateway_inflight_requests 0.0" in second.exposition()[0]


async def test_auth_none_meters_everyone_as_anonymous(tmp_path: Path, nanogpt: FakeNanoGPT) -> None:
    nanogpt.handler = answer()
    settings = make_settings(tmp_path, "[auth]\nmode = 'none'\n", members=False)
    async with gateway_client(settings, nanogpt) as client:
        await client.post("/v1/chat/completions", json=chat())
        text = await scrape(client)
    assert metric(
        text, "nanogpt_gateway_cost_usd_total", member="anonymous", model=GPT
    ) == pytest.approx(0.0045)
    (row,) = ledger_rows()
    assert row["member"] == "anonymous" and Decimal(row["cost_usd"]) == COST


async def test_every_answer_names_its_ledger_row(tmp_path: Path, nanogpt: FakeNanoGPT) -> None:
    nanogpt.handler = answer()
    async with gateway_client(make_settings(tmp_path), nanogpt) as client:
        answers = [
            await client.post("/v1/chat/completions", json=chat(), headers=auth()),
            await client.post("/v1/chat/completions", json=chat("no/such"), headers=auth()),
            await client.get("/v1/models", headers=auth()),
        ]
    assert [a.status_code for a in answers] == [200, 404, 200]
    ids = [a.headers["x-gateway-request-id"] for a in answers]
    assert ids == [row["request_id"] for row in ledger_rows()]


OPUS = "anthropic/claude-opus-4.6"  # 15 / 75 USD per million tokens in the fixture catalog
ANTHROPIC_USAGE = {
    "input_tokens": 10,
    "output_tokens": 12,
    "cache_read_input_tokens": 1000,
    "cache_creation_input_tokens": 200,
}


async def test_anthropic_messages_are_metered_json_and_streamed(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    async def messages(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if not body.get("stream"):
            message = {"type": "message", "content": [], "usage": ANTHROPIC_USAGE}
            return httpx.Response(200, json=message)
        start = {
            "type": "message_start",
            "message": {"usage": {**ANTHROPIC_USAGE, "output_tokens": 1}},
        }
        delta = {"type": "message_delta", "usage": {"output_tokens": 12}}
        events = [("message_start", start), ("message_delta", delta), ("message_stop", {})]
        content = b"".join(
            f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events
        )
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=content)

    nanogpt.handler = messages
    claude_code = {"x-api-key": ALICE_KEY, "anthropic-version": "2023-06-01"}
    body = {"model": OPUS, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    async with gateway_client(make_settings(tmp_path), nanogpt) as client:
        for stream in (False, True):
            response = await client.post(
                "/v1/messages?beta=true", json={**body, "stream": stream}, headers=claude_code
            )
            assert response.status_code == 200
            assert "stream_options" not in json.loads(nanogpt.requests[-1].content)
    assert nanogpt.requests[0].url.raw_path == b"/api/v1/messages?beta=true"
    cost = str((1210 * Decimal(15) + 12 * Decimal(75)) / 1_000_000)
    for row in ledger_rows():
        assert (row["endpoint"], row["prompt_tokens"], row["cached_prompt_tokens"]) == (
            "messages",
            1210,
            1000,
        )
        assert (row["completion_tokens"], row["cost_usd"], row["cost_source"]) == (
            12,
            cost,
            "catalog",
        )
        assert row["unmetered"] is None


async def test_an_image_is_sent_to_the_host_root_and_metered_at_what_nanogpt_charged(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    nanogpt.media["image"] = [{"id": "hidream", "object": "model", "pricing": {"per_image": {}}}]

    async def image(request: httpx.Request) -> httpx.Response:
        answer = {"created": 1, "data": [{"b64_json": "iVBORw0KGgo="}], "cost": 0.0413}
        return httpx.Response(200, json={**answer, "paymentSource": "USD"})

    nanogpt.handler = image
    async with gateway_client(make_settings(tmp_path), nanogpt) as client:
        response = await client.post(
            "/v1/images/generations", json={"model": "hidream", "prompt": "a cat"}, headers=auth()
        )
        assert response.status_code == 200 and response.json()["cost"] == 0.0413
        text = await scrape(client)
    (sent,) = nanogpt.requests
    assert sent.url.raw_path == b"/v1/images/generations"  # NanoGPT documents it at the root
    (row,) = ledger_rows()
    assert (row["endpoint"], row["model"], row["cost_usd"], row["cost_source"]) == (
        "images/generations",
        "hidream",
        "0.0413",
        "charged",
    )
    assert row["unmetered"] is None
    assert metric(text, "nanogpt_gateway_cost_usd_total", model="hidream") == 0.0413


async def test_what_nanogpt_charged_is_preferred_to_catalog_prices(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    async def charged(request: httpx.Request) -> httpx.Response:
        pricing = {
            "cost": 0.000169,
            "inputTokens": 1000,
            "outputTokens": 200,
            "paymentSource": "USD",
        }
        body = {
            "id": "x",
            "object": "chat.completion",
            "usage": USAGE,
            "x_nanogpt_pricing": pricing,
        }
        return httpx.Response(200, json=body)

    nanogpt.handler = charged
    async with gateway_client(make_settings(tmp_path), nanogpt) as client:
        assert (
            await client.post("/v1/chat/completions", json=chat(), headers=auth())
        ).status_code == 200
    (row,) = ledger_rows()
    assert (row["prompt_tokens"], row["cost_usd"], row["cost_source"]) == (
        1000,
        "0.000169",
        "charged",
    )
