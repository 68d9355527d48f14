"""Usage and cost read from responses: every dialect's shape, what NanoGPT says it charged,
and JSON bodies read at their end."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sse import EventStream
from gateway.types import Usage
from gateway.usage import MAX_TOKENS, MAX_USD, JsonBody, UsageReader, usage_of


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


HUGE = 10**4000


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": HUGE, "completion_tokens": MAX_TOKENS + 1},
        {"prompt_tokens": -5, "completion_tokens": -1},
        {"prompt_tokens": 1e400, "completion_tokens": float("nan")},
        {"prompt_tokens": "12", "completion_tokens": [3]},
        {"input_tokens": {"deep": [[[[1]]]]}},
    ],
)
def test_nonsense_token_counts_are_no_usage(usage: dict[str, Any]) -> None:
    assert usage_of({"usage": usage}) is None
    assert usage_of({"usage": usage}, "anthropic") is None


def test_a_nonsense_count_is_read_as_absent_like_any_other_non_count() -> None:
    usage = {"prompt_tokens": HUGE, "completion_tokens": 1}
    assert usage_of({"usage": usage}) == Usage(completion_tokens=1)


@pytest.mark.parametrize(
    "cost",
    [HUGE, -1, 1e400, float("nan"), float("inf"), "1e999999999", "1E-999999999", "sNaN",
     "Infinity", "1" * 5000, 5e-324, str(MAX_USD + 1), {"usd": 1}],
    ids=lambda cost: repr(cost)[:24],
)  # fmt: skip
def test_nonsense_charges_are_no_charge(cost: Any) -> None:
    assert usage_of({"x_nanogpt_pricing": {"cost": cost}}) is None
    reader = UsageReader(top_level_cost=True)
    reader.read({"cost": cost})
    assert reader.usage is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"usage": {"prompt_tokens": ' + b"1" * 5000 + b"}}",
        b'{"cost": ' + b"9" * 5000 + b', "usage": {"prompt_tokens": 2}}',
        b'{"usage": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"x_nanogpt_pricing": {"cost": 1e400}, "usage": {"prompt_tokens": NaN}}',
    ],
)
def test_pathological_json_bodies_are_read_without_raising(body: bytes) -> None:
    for size in (len(body), JsonBody.WHOLE + 1):
        padded = body if size == len(body) else body[:-1] + b', "pad": "' + b"x" * size + b'"}'
        watcher = JsonBody(UsageReader(top_level_cost=True))
        watcher.feed(padded)
        watcher.finish()
        assert watcher.usage is None or watcher.usage == Usage(prompt_tokens=2)
    stream = EventStream(UsageReader())
    assert stream.feed(b"data: " + body + b"\n\n") == b"data: " + body + b"\n\n"
    assert stream.usage is None


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**4000), max_value=10**4000)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["1e999999999", "NaN", "-0", "0.000169", "12", "USD"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(
            ["usage", "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens",
             "cached_tokens", "prompt_tokens_details", "x_nanogpt_pricing", "cost", "costUsd",
             "amount", "currency", "message", "response", "cache_read_input_tokens"]
        ),
        children,
        max_size=5,
    ),
    max_leaves=25,
)  # fmt: skip


def plausible(usage: Usage | None) -> bool:
    if usage is None:
        return True
    counts = (usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens)
    charged = usage.charged_usd
    return all(0 <= n <= 3 * MAX_TOKENS for n in counts) and (
        charged is None or 0 <= charged <= MAX_USD
    )


@settings(max_examples=500, deadline=None, database=None)
@given(payloads=st.lists(JSON_VALUES, max_size=4), dialect=st.sampled_from(["openai", "anthropic"]))
def test_the_usage_reader_never_raises_and_reads_only_plausible_figures(
    payloads: list[Any], dialect: Literal["openai", "anthropic"]
) -> None:
    reader = UsageReader(dialect, top_level_cost=True)
    for payload in payloads:
        reader.read(payload)
    assert plausible(reader.usage)


@settings(max_examples=200, deadline=None, database=None)
@given(payload=JSON_VALUES)
def test_bodies_of_arbitrary_json_are_read_without_raising(payload: Any) -> None:
    try:
        body = json.dumps({"usage": payload, "cost": payload}).encode()
    except ValueError:  # an integer too long for str(): the upstream could not send it either
        return
    watcher = JsonBody(UsageReader(top_level_cost=True))
    watcher.feed(body)
    watcher.finish()
    assert plausible(watcher.usage)
    stream = EventStream(UsageReader(), hide_usage=True)
    stream.feed(b"data: " + body + b"\n\n")
    stream.finish()
    assert plausible(stream.usage)
