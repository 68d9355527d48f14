"""Limits against real servers and clients: the openai SDK's retry rules, streams cut by their
clients, and a restart of the real command that forgets no spend."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import anyio
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.app import create_app
from gateway.budgets import Estimate
from gateway.cli import DEMO_MEMBER_KEY
from gateway.limits import Ask, MemoryLimiter
from tests.conftest import (
    ALICE_KEY,
    FakeNanoGPT,
    auth,
    gateway_client,
    ledger_rows,
    live_server,
    make_settings,
    running,
    sdk_over,
)

pytestmark = pytest.mark.anyio
GPT = "openai/gpt-5.2"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def sdk_through(client: httpx.AsyncClient, sent: list[httpx.Request]) -> openai.AsyncOpenAI:
    """The openai SDK at its default retry settings, over the gateway's in-process client,
    counting every HTTP request it makes."""

    async def count(request: httpx.Request) -> None:
        sent.append(request)

    http = httpx.AsyncClient(
        transport=client._transport, base_url=client.base_url, event_hooks={"request": [count]}
    )
    return sdk_over(http, "http://localhost/v1", ALICE_KEY, max_retries=openai.DEFAULT_MAX_RETRIES)


async def test_the_sdk_does_not_retry_a_budget_refusal(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    settings = make_settings(tmp_path, "[limits]\nbudget_usd_daily = 0\n")
    sent: list[httpx.Request] = []
    async with gateway_client(settings, nanogpt) as client:
        sdk = sdk_through(client, sent)
        with pytest.raises(openai.RateLimitError) as excinfo:
            await sdk.chat.completions.create(model=GPT, messages=MESSAGES)
    assert len(sent) == 1  # x-should-retry: false, although the SDK retries 429s twice
    assert "daily budget" in excinfo.value.message
    assert excinfo.value.code == "member_budget_exceeded"
    assert nanogpt.requests == []


async def test_the_sdk_retries_a_rate_limit_and_gets_through(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    settings = make_settings(tmp_path, "[limits]\nrequests_per_minute = 120\n")
    limiter = MemoryLimiter(settings.limits)
    sent: list[httpx.Request] = []
    async with gateway_client(settings, nanogpt, limiter=limiter) as client:
        member = settings.members[0]
        for _ in range(120):  # this minute's requests, spent elsewhere (0.5 s to the next one)
            ask = Ask(
                request_id="x",
                member=member.name,
                limits=member.limits,
                end_user=None,
                estimate=Estimate(0, 0, Decimal(0)),
                now=time.time(),
            )
            limiter.release(limiter.admit_now(ask))
        sdk = sdk_through(client, sent)
        answer = await sdk.chat.completions.create(model=GPT, messages=MESSAGES)
    assert answer.choices[0].message.content == "hi"
    assert len(sent) == 2  # refused once, retried after retry-after-ms, admitted
    assert len(nanogpt.requests) == 1


async def test_fifty_streams_cut_by_their_clients_hold_nothing(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    never = asyncio.Event()

    async def endless(request: httpx.Request) -> httpx.Response:
        async def frames() -> AsyncIterator[bytes]:
            yield b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n'
            await never.wait()

        return httpx.Response(200, content=frames(), headers={"content-type": "text/event-stream"})

    nanogpt.handler = endless
    toml = "[limits]\nbudget_usd_daily = 100\nmax_concurrent_requests = 50\n"
    async with nanogpt.serving() as api_root:
        settings = make_settings(tmp_path, toml, NANOGPT_BASE_URL=api_root)
        limiter = MemoryLimiter(settings.limits)
        async with live_server(create_app(settings, limiter=limiter)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:

                async def cut_after_first_chunk() -> None:
                    body = {"model": GPT, "messages": MESSAGES, "stream": True, "max_tokens": 10}
                    async with client.stream(
                        "POST", "/v1/chat/completions", json=body, headers=auth()
                    ) as response:
                        assert response.status_code == 200
                        async for _ in response.aiter_bytes():
                            return  # the client gives up mid-stream

                await asyncio.gather(*(cut_after_first_chunk() for _ in range(50)))
            with anyio.fail_after(10):
                while limiter.in_flight():  # the gateway notices each disconnect
                    await asyncio.sleep(0.01)
            assert limiter.reserved_usd() == 0
    rows = ledger_rows(tmp_path / "gateway-usage.db")
    assert len(rows) == 50
    assert {r["outcome"] for r in rows} == {"client_disconnected"}
    assert {r["cost_source"] for r in rows} == {"estimate"}  # it may have been billed
    spent = sum(Decimal(r["cost_usd"]) for r in rows)
    assert limiter.spent(settings.members[0].name, "day", time.time())[0] == spent


def test_a_restart_of_the_real_command_forgets_no_spend(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    ledger = tmp_path / "usage.db"
    config.write_text(
        f"[limits]\nbudget_usd_daily = 1.0\n[metering]\nledger_path = {json.dumps(str(ledger))}\n"
    )
    headers = {"authorization": f"Bearer {DEMO_MEMBER_KEY}"}
    body = {"model": "deepseek/deepseek-v3.2", "messages": MESSAGES, "max_tokens": 20}
    args = ["serve", "--demo", "--config", str(config)]
    with running(args, "/readyz") as (base, _, _):
        assert httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers).is_success
        before = httpx.get(f"{base}/v1/key", headers=headers).json()["data"]
    assert before["usage_daily"] > 0 and before["limit_remaining"] < 1.0
    with running(args, "/readyz") as (base, _, _):
        after = httpx.get(f"{base}/v1/key", headers=headers).json()["data"]
    assert after["usage_daily"] == before["usage_daily"]
    assert after["limit_remaining"] == before["limit_remaining"]
