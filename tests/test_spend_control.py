"""Spend control through the gateway: what a member sees when a limit refuses them, what the
upstream sees (nothing), what the ledger and metrics record, and that nothing stays held."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.limits import MemoryLimiter
from tests.conftest import (
    ALICE_KEY,
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


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": GPT, "messages": [{"role": "user", "content": "hi"}], **extra}


def limits_toml(limits: str = "", **member: object) -> str:
    """`[limits]` as given, and alice's own values."""
    own = "".join(f"{k} = {json.dumps(v)}\n" for k, v in member.items())
    return f"[limits]\n{limits}\n" + (
        f"[[members]]\nname = 'alice'\nkey_env = 'ALICE'\n{own}" if member else ""
    )


@pytest.fixture
def held() -> Iterator[list[MemoryLimiter]]:
    """The limiters a test used: after it, nothing is in flight and nothing reserved."""
    limiters: list[MemoryLimiter] = []
    yield limiters
    for limiter in limiters:
        assert limiter.in_flight() == 0, "a slot is still held"
        assert limiter.reserved_usd() == 0, "a reservation is still held"


def client_for(
    tmp_path: Path,
    nanogpt: FakeNanoGPT,
    held: list[MemoryLimiter],
    toml: str,
    *,
    members: bool = False,
) -> tuple[AbstractAsyncContextManager[httpx.AsyncClient], MemoryLimiter]:
    settings = make_settings(tmp_path, toml, members=members, ALICE=ALICE_KEY)
    limiter = MemoryLimiter(settings.limits)
    held.append(limiter)
    return gateway_client(settings, nanogpt, limiter=limiter), limiter


async def test_all_or_nothing_a_refused_request_spends_no_rate(
    tmp_path: Path, nanogpt: FakeNanoGPT, held: list[MemoryLimiter]
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow_then_done(request: httpx.Request) -> httpx.Response:
        if b"slow" in request.content:
            arrived.set()
            await release.wait()
        return await nanogpt.complete(request)

    nanogpt.handler = slow_then_done
    opened, _ = client_for(
        tmp_path, nanogpt, held, limits_toml(requests_per_minute=2, max_concurrent_requests=1)
    )
    async with opened as client:
        slow = chat(messages=[{"role": "user", "content": "slow"}])
        first = asyncio.create_task(client.post("/v1/chat/completions", json=slow, headers=auth()))
        await arrived.wait()
        second = await client.post("/v1/chat/completions", json=chat(), headers=auth())
        error = assert_openai_error(second, 429, "concurrency_limit_exceeded")
        assert error["type"] == "requests"
        assert second.headers["retry-after"] == "1" and second.headers["x-should-retry"] == "true"
        release.set()
        assert (await first).status_code == 200
        third = await client.post("/v1/chat/completions", json=chat(), headers=auth())
        assert third.status_code == 200  # the refused second request spent none of the 2 RPM
        assert third.headers["x-ratelimit-limit-requests"] == "2"
        assert third.headers["x-ratelimit-remaining-requests"] == "0"
        fourth = await client.post("/v1/chat/completions", json=chat(), headers=auth())
        assert_openai_error(fourth, 429, "rate_limit_exceeded")
        assert "Please try again in" in fourth.json()["error"]["message"]
        assert int(fourth.headers["retry-after"]) >= 1 and fourth.headers["retry-after-ms"]
        metrics = (await client.get("/metrics")).text
    assert len(nanogpt.requests) == 2  # the refusals never reached NanoGPT
    rows = ledger_rows(tmp_path / "gateway-usage.db")
    assert [(r["status"], r["outcome"], r["limit_name"]) for r in rows] == [
        (429, "refused", "max_concurrent_requests"),
        (200, "ok", None),
        (200, "ok", None),
        (429, "refused", "requests_per_minute"),
    ]
    limited = "nanogpt_gateway_limited_requests_total"
    assert metric(metrics, limited, member="alice", limit="requests_per_minute") == 1
    assert metric(metrics, limited, member="alice", limit="max_concurrent_requests") == 1
    assert metric(metrics, limited, member="alice", limit="budget_usd_daily") == 0


async def test_a_budget_refusal_names_the_budget_and_says_do_not_retry(
    tmp_path: Path, nanogpt: FakeNanoGPT, held: list[MemoryLimiter]
) -> None:
    opened, limiter = client_for(tmp_path, nanogpt, held, limits_toml(budget_usd_daily=0.001))
    async with opened as client:
        ok = await client.post("/v1/chat/completions", json=chat(max_tokens=50), headers=auth())
        assert ok.status_code == 200
        left = Decimal(ok.headers["x-gateway-budget-remaining-usd"])
        assert Decimal(0) < left < Decimal("0.001")
        over = await client.post("/v1/chat/completions", json=chat(max_tokens=500), headers=auth())
        error = assert_openai_error(over, 429, "member_budget_exceeded")
        assert error["type"] == "insufficient_quota"
        assert "daily budget of $0.001 of member 'alice'" in error["message"]
        assert "resets at" in error["message"]
        assert over.headers["x-should-retry"] == "false"
        assert over.headers["x-gateway-budget-reset"].endswith("Z")
        assert int(over.headers["retry-after"]) > 0
        key = (await client.get("/v1/key", headers=auth())).json()["data"]
        metrics = (await client.get("/metrics")).text
    assert len(nanogpt.requests) == 1
    spent = Decimal(3 * 2.5 + 1 * 10) / 1_000_000  # the fake's usage at the catalog's prices
    assert limiter.spent("alice", "day", limiter_now()) == (spent, Decimal(0))
    assert key["name"] == "alice" and key["limit"] == 0.001 and key["limit_reset"] == "daily"
    assert Decimal(str(key["usage_daily"])) == spent
    assert Decimal(key["windows"][0]["budget_usd_remaining"]) == Decimal("0.001") - spent
    assert key["limits"]["budget_usd_daily"] == "0.001"
    remaining = metric(
        metrics, "nanogpt_gateway_budget_remaining_usd", member="alice", window="day"
    )
    assert remaining == pytest.approx(float(Decimal("0.001") - spent))
    assert metric(metrics, "nanogpt_gateway_reserved_usd") == 0


def limiter_now() -> float:
    return time.time()


async def test_streams_carry_the_limit_headers_before_the_first_byte(
    tmp_path: Path, nanogpt: FakeNanoGPT, held: list[MemoryLimiter]
) -> None:
    async def stream(request: httpx.Request) -> httpx.Response:
        frames = [b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n', b"data: [DONE]\n\n"]
        headers = {"content-type": "text/event-stream", "X-RateLimit-Limit-Tokens": "999"}
        return httpx.Response(200, content=b"".join(frames), headers=headers)

    nanogpt.handler = stream
    toml = limits_toml(tokens_per_minute=100000, budget_usd_monthly=5)
    opened, _ = client_for(tmp_path, nanogpt, held, toml)
    async with opened as client:
        response = await client.post("/v1/chat/completions", json=chat(stream=True), headers=auth())
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    assert response.headers.get_list("x-ratelimit-limit-tokens") == ["100000"]  # not NanoGPT's
    assert int(response.headers["x-ratelimit-remaining-tokens"]) < 100000 - 4096
    assert response.headers["x-ratelimit-reset-tokens"].endswith(("s", "ms"))
    assert "x-ratelimit-limit-requests" not in response.headers  # no RPM limit applies
    assert Decimal(response.headers["x-gateway-budget-remaining-usd"]) < 5


async def test_an_unpriced_model_is_refused_to_a_budgeted_member(
    tmp_path: Path, nanogpt: FakeNanoGPT, held: list[MemoryLimiter]
) -> None:
    unpriced = {"id": "mystery/model", "object": "model", "created": 0, "owned_by": "x"}
    nanogpt.catalog = {**nanogpt.catalog, "data": [*nanogpt.catalog["data"], unpriced]}
    opened, _ = client_for(tmp_path, nanogpt, held, limits_toml(budget_usd_daily=10))
    async with opened as client:
        response = await client.post(
            "/v1/chat/completions", json={**chat(), "model": "mystery/model"}, headers=auth()
        )
    error = assert_openai_error(response, 403, "model_not_priced")
    assert error["type"] == "permission_error" and "[pricing." in error["message"]
    assert nanogpt.requests == []


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"X-Billing-Mode": "paygo"}, {}),
        ({"x-billing-mode": "PAY-AS-YOU-GO"}, {}),
        ({}, {"billing_mode": "Paid"}),
        ({}, {"billingMode": "payg"}),
        ({"X-Billing-Mode": "subscription"}, {"billing_mode": "pay_as_you_go"}),
        ({"X-Provider": "novita"}, {}),
        ({}, {"provider": "cerebras"}),
        ({}, {"model": f"{GPT}:fast"}),
        ({}, {"model": f"{GPT}:cerebras"}),
        ({}, {"model": f"{GPT}:online/exa-deep"}),
        ({}, {"model": f"{GPT}:Memory-30"}),
    ],
)
async def test_no_billing_escape_without_permission(
    tmp_path: Path,
    nanogpt: FakeNanoGPT,
    held: list[MemoryLimiter],
    headers: dict[str, str],
    body: dict[str, Any],
) -> None:
    opened, _ = client_for(tmp_path, nanogpt, held, limits_toml(), members=True)
    async with opened as client:
        response = await client.post(
            "/v1/chat/completions", json={**chat(), **body}, headers={**auth(), **headers}
        )
    error = assert_openai_error(response, 403, "billing_override_not_allowed")
    assert error["type"] == "permission_error"
    assert nanogpt.requests == []


async def test_billing_overrides_pass_for_members_allowed_them(
    tmp_path: Path, nanogpt: FakeNanoGPT, held: list[MemoryLimiter]
) -> None:
    toml = limits_toml(allow_paygo_override=True, allow_provider_selection=True)
    opened, _ = client_for(tmp_path, nanogpt, held, toml)
    async with opened as client:
        plain_suffix = await client.post(
            "/v1/chat/completions", json=chat(model=f"{GPT}:reasoning-effort/high"), headers=auth()
        )
        suffixed = await client.post(
            "/v1/chat/completions",
            json={**chat(), "model": f"{GPT}:fast:online"},
            headers={**auth(), "X-Billing-Mode": "paygo"},
        )
    assert plain_suffix.status_code == suffixed.status_code == 200
    sent = [json.loads(r.content)["model"] for r in nanogpt.requests]
    assert sent == [f"{GPT}:reasoning-effort/high", f"{GPT}:fast:online"]  # forwarded as asked
    assert nanogpt.requests[1].headers["x-billing-mode"] == "paygo"
    rows = ledger_rows(tmp_path / "gateway-usage.db")
    assert all(r["cost_source"] == "catalog" for r in rows)  # priced as the base model


async def test_nanogpts_empty_balance_is_a_final_quota_error_and_polls_the_balance(
    tmp_path: Path, nanogpt: FakeNanoGPT, held: list[MemoryLimiter]
) -> None:
    async def broke(request: httpx.Request) -> httpx.Response:
        return httpx.Response(402, json={"error": "Insufficient balance", "status": 402})

    nanogpt.handler = broke
    toml = limits_toml() + "[metering]\nbalance_poll_seconds = 3600\n"
    opened, _ = client_for(tmp_path, nanogpt, held, toml, members=True)
    async with opened as client:
        while not nanogpt.balance_requests:  # the poll at start
            await asyncio.sleep(0)
        response = await client.post("/v1/chat/completions", json=chat(), headers=auth())
        error = assert_openai_error(response, 429, "credit_balance_exhausted")
        while len(nanogpt.balance_requests) < 2:  # at once, not in an hour
            await asyncio.sleep(0)
    assert error["type"] == "insufficient_quota" and response.headers["x-should-retry"] == "false"
    (row,) = ledger_rows(tmp_path / "gateway-usage.db")
    assert (row["status"], row["outcome"], row["limit_name"]) == (
        429,
        "upstream_error",
        "nanogpt_balance",
    )


async def test_nanogpts_daily_limit_pauses_paid_requests_until_its_reset(
    tmp_path: Path, nanogpt: FakeNanoGPT, held: list[MemoryLimiter]
) -> None:
    async def capped(request: httpx.Request) -> httpx.Response:
        error = {"message": "Daily USD limit exceeded", "code": "daily_usd_limit_exceeded"}
        return httpx.Response(429, json={"error": error}, headers={"retry-after": "3600"})

    nanogpt.handler = capped
    opened, _ = client_for(tmp_path, nanogpt, held, limits_toml(), members=True)
    async with opened as client:
        first = await client.post("/v1/chat/completions", json=chat(), headers=auth())
        second = await client.post("/v1/chat/completions", json=chat(), headers=auth())
    for response in (first, second):
        error = assert_openai_error(response, 429, "team_daily_limit_exceeded")
        assert error["type"] == "insufficient_quota"
        assert response.headers["x-should-retry"] == "false"
        assert 3500 < int(response.headers["retry-after"]) <= 3600
    assert len(nanogpt.requests) == 1  # the second was answered without asking NanoGPT


async def test_a_hundred_concurrent_streams_settle_within_the_budget(
    tmp_path: Path, nanogpt: FakeNanoGPT, held: list[MemoryLimiter]
) -> None:
    """$1.00 left, 100 streams at once, each allowed 2000 completion tokens: each answer
    uses all of them, and the total still settles at $1.00 or less."""

    async def full_length(request: httpx.Request) -> httpx.Response:
        asked = json.loads(request.content)
        usage = {"prompt_tokens": 20, "completion_tokens": asked["max_tokens"]}
        frames = [
            b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n',
            b'data: {"choices":[],"usage":' + json.dumps(usage).encode() + b"}\n\n",
            b"data: [DONE]\n\n",
        ]
        return httpx.Response(
            200, content=b"".join(frames), headers={"content-type": "text/event-stream"}
        )

    nanogpt.handler = full_length
    opened, limiter = client_for(tmp_path, nanogpt, held, limits_toml(budget_usd_daily=1.0))
    async with opened as client:
        sends = [
            client.post(
                "/v1/chat/completions", json=chat(stream=True, max_tokens=2000), headers=auth()
            )
            for _ in range(100)
        ]
        responses = await asyncio.gather(*sends)
    statuses = [r.status_code for r in responses]
    assert 0 < statuses.count(200) < 100 and set(statuses) == {200, 429}
    rows = ledger_rows(tmp_path / "gateway-usage.db")
    served = [r for r in rows if r["status"] == 200]
    assert {(r["outcome"], r["cost_source"]) for r in served} == {("ok", "catalog")}
    assert {r["completion_tokens"] for r in served} == {2000}  # every answer as long as allowed
    total = sum(Decimal(r["cost_usd"]) for r in rows if r["cost_usd"] is not None)
    assert total <= Decimal("1.00")
    assert limiter.spent("alice", "day", limiter_now())[0] == total


async def test_without_max_tokens_the_overshoot_stays_within_the_stated_bound(
    tmp_path: Path, nanogpt: FakeNanoGPT, held: list[MemoryLimiter]
) -> None:
    """Answers longer than the reserved default: the overshoot is at most the sum, over the
    admitted requests, of actual minus reserved cost."""

    async def long_answers(request: httpx.Request) -> httpx.Response:
        usage = {"prompt_tokens": 20, "completion_tokens": 6000}  # over the 4096 reserved
        return httpx.Response(200, json={"choices": [], "usage": usage})

    nanogpt.handler = long_answers
    opened, limiter = client_for(tmp_path, nanogpt, held, limits_toml(budget_usd_daily=1.0))
    async with opened as client:
        sends = [
            client.post("/v1/chat/completions", json=chat(), headers=auth()) for _ in range(100)
        ]
        responses = await asyncio.gather(*sends)
    admitted = [r for r in responses if r.status_code == 200]
    body_bytes = len(json.dumps(chat()).encode())
    reserved = (Decimal(-(-body_bytes // 2)) * Decimal("2.5") + 4096 * Decimal(10)) / 1_000_000
    actual = (20 * Decimal("2.5") + 6000 * Decimal(10)) / 1_000_000
    bound = len(admitted) * (actual - reserved)
    spent = limiter.spent("alice", "day", limiter_now())[0]
    assert Decimal(1) < spent <= Decimal(1) + bound


async def test_a_stream_the_client_leaves_settles_at_its_reservation(
    tmp_path: Path, nanogpt: FakeNanoGPT, held: list[MemoryLimiter]
) -> None:
    async def cut(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("cut before any usage")

    nanogpt.handler = cut
    opened, limiter = client_for(tmp_path, nanogpt, held, limits_toml(budget_usd_daily=1.0))
    async with opened as client:
        response = await client.post(
            "/v1/chat/completions", json=chat(max_tokens=100), headers=auth()
        )
    assert response.status_code == 502
    (row,) = ledger_rows(tmp_path / "gateway-usage.db")
    assert row["cost_source"] == "estimate" and Decimal(row["cost_usd"]) > 0
    assert limiter.spent("alice", "day", limiter_now())[0] == Decimal(row["cost_usd"])


async def test_an_unlisted_path_is_refused_to_a_member_under_a_budget(
    tmp_path: Path, nanogpt: FakeNanoGPT, held: list[MemoryLimiter]
) -> None:
    toml = "[upstream]\nforward_unlisted = true\n" + limits_toml(budget_usd_monthly=10)
    opened, _ = client_for(tmp_path, nanogpt, held, toml)
    async with opened as client:
        response = await client.post("/v1/memory", json={}, headers=auth())
    error = assert_openai_error(response, 403, "unlisted_endpoint")
    assert "budget" in error["message"] and nanogpt.requests == []
