"""Usage and cost read from responses: every dialect's shape, what NanoGPT says it charged,
and JSON bodies read at their end."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from typing import Any

import pytest

from gateway.types import Usage
from gateway.usage import JsonBody, UsageReader, usage_of


def sse(payload: Any, end: bytes = b"\n\n") -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}".encode() + end


CHAT_USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 30,
    "total_tokens": 42,
    "prompt_tokens_details": {"cached_tokens": 8},
    "completion_tokens_details": {"reasoning_tokens": 20},
}
EXPECTED = Usage(
    prompt_tokens=12, completion_tokens=30, cached_prompt_tokens=8, reasoning_tokens=20
)
CONTENT = {"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
FINISH = {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
USAGE_ONLY = {"id": "c1", "choices": [], "usage": CHAT_USAGE}
STREAM = sse(CONTENT) + sse(FINISH) + sse(USAGE_ONLY) + sse("[DONE]")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"usage": CHAT_USAGE}, EXPECTED),
        (
            {
                "object": "response",
                "usage": {
                    "input_tokens": 12,
                    "output_tokens": 30,
                    "input_tokens_details": {"cached_tokens": 8},
                    "output_tokens_details": {"reasoning_tokens": 20},
                },
            },
            EXPECTED,
        ),
        (
            {
                "type": "response.completed",
                "response": {"usage": {"input_tokens": 5, "output_tokens": 7}},
            },
            Usage(prompt_tokens=5, completion_tokens=7),
        ),
        (
            {"object": "list", "usage": {"prompt_tokens": 9, "total_tokens": 9}},
            Usage(prompt_tokens=9),
        ),
        ({"usage": None}, None),
        ({"usage": {"total_tokens": 3}}, None),
        ({"usage": {"prompt_tokens": "12", "completion_tokens": -1}}, None),
        ({"usage": {"prompt_tokens": True, "completion_tokens": 2}}, Usage(completion_tokens=2)),
        ([1, 2], None),
        (None, None),
    ],
)
def test_usage_shapes(payload: Any, expected: Usage | None) -> None:
    assert usage_of(payload) == expected


def test_json_body_is_forwarded_as_it_comes_and_read_at_the_end() -> None:
    body = json.dumps({"id": "x", "choices": [], "usage": CHAT_USAGE}).encode()
    watcher = JsonBody(UsageReader())
    forwarded = b"".join(watcher.feed(body[i : i + 7]) for i in range(0, len(body), 7))
    assert forwarded == body and watcher.usage is None
    assert watcher.finish() == b""
    assert watcher.usage == EXPECTED


IMAGE = "iVBORw0KGgo" * 100_000  # 1.1 MB of base64, as an image answer carries


@pytest.mark.parametrize("chunk", [7_001, 65_536, 5_000_000])
def test_a_large_json_answer_is_read_at_its_edges_without_keeping_it(chunk: int) -> None:
    answer = {"created": 1, "data": [{"b64_json": IMAGE}] * 3, "cost": 0.04}
    body = json.dumps({**answer, "x_nanogpt_pricing": {"cost": "0.0413"}}).encode()
    watcher = JsonBody(UsageReader(top_level_cost=True))
    forwarded = b"".join(watcher.feed(body[i : i + chunk]) for i in range(0, len(body), chunk))
    assert forwarded == body
    assert sum(map(len, watcher._parts)) < 2 * max(chunk, JsonBody.EDGE)  # not the 3.3 MB
    watcher.finish()
    assert watcher.usage == Usage(charged_usd=Decimal("0.0413"))  # the last word wins
    usage_first = json.dumps({"usage": CHAT_USAGE, "data": [IMAGE]}).encode()
    watcher = JsonBody(UsageReader())
    watcher.feed(usage_first)
    watcher.finish()
    assert watcher.usage == EXPECTED


def test_a_large_json_answer_whose_usage_is_in_the_middle_is_unmetered() -> None:
    body = json.dumps({"data": [IMAGE], "usage": CHAT_USAGE, "more": [IMAGE]}).encode()
    watcher = JsonBody(UsageReader())
    watcher.feed(body)
    watcher.finish()
    assert watcher.usage is None


def test_a_quoted_key_inside_a_string_is_not_a_key() -> None:
    text = 'the model said "usage": 5 and "cost": 9'
    body = json.dumps({"data": [IMAGE], "note": text}).encode()
    watcher = JsonBody(UsageReader(top_level_cost=True))
    watcher.feed(body)
    watcher.finish()
    assert watcher.usage is None


def test_json_body_that_is_not_json_has_no_usage() -> None:
    watcher = JsonBody(UsageReader())
    watcher.feed(b"<html>502 Bad Gateway</html>")
    watcher.finish()
    assert watcher.usage is None


@pytest.mark.parametrize(
    ("pricing", "charged"),
    [
        ({"cost": 0.000169, "inputTokens": 9}, "0.000169"),
        ({"costUsd": 4.87e-06, "cost": 1, "amount": 1}, "0.00000487"),
        ({"amount": "0.00123456", "currency": "USD"}, "0.00123456"),
        ({"cost": 0, "paymentSource": "USD"}, "0"),  # a subscription-covered request
        ({"amount": 1.5, "currency": "XNO"}, None),  # not USD: the catalog prices it
        ({"cost": -1}, None),
        ({"cost": "lots"}, None),
        ({"cost": True}, None),
        ({"error": {"message": "billing failed"}}, None),
    ],
)
def test_what_nanogpt_charged(pricing: dict[str, Any], charged: str | None) -> None:
    usage = usage_of({"usage": CHAT_USAGE, "x_nanogpt_pricing": pricing})
    assert usage == dataclasses.replace(
        EXPECTED, charged_usd=Decimal(charged) if charged is not None else None
    )


def test_a_top_level_cost_counts_only_where_the_endpoint_reports_it_so() -> None:
    image = {"created": 1, "data": [{"b64_json": "..."}], "cost": 0.04, "paymentSource": "USD"}
    reader = UsageReader(top_level_cost=True)
    reader.read(image)
    assert reader.usage == Usage(charged_usd=Decimal("0.04"))
    assert usage_of(image) is None


def test_anthropic_usage_counts_everything_the_model_read() -> None:
    body = {
        "type": "message",
        "usage": {
            "input_tokens": 10,
            "output_tokens": 12,
            "cache_creation_input_tokens": 20,
            "cache_read_input_tokens": 100,
            "cache_creation": {"ephemeral_5m_input_tokens": 20},
        },
    }
    assert usage_of(body, "anthropic") == Usage(
        prompt_tokens=130, completion_tokens=12, cached_prompt_tokens=100
    )
    assert usage_of({"type": "message", "usage": {"output_tokens": 3}}, "anthropic") == Usage(
        completion_tokens=3
    )
