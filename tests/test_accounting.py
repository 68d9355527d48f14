"""Accounting, pure: a finished request's cost, why it has none, and bounded labels."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest

from gateway.accounting import account, unmetered_reason
from gateway.endpoints import ENDPOINTS, UNLISTED, Endpoint
from gateway.types import Member, ModelInfo, Outcome, Price, Usage


def endpoint(name: str) -> Endpoint:
    return next(e for e in ENDPOINTS if e.name == name and "POST" in e.methods)


CHAT = endpoint("chat/completions")
GPT = ModelInfo(id="openai/gpt-5.2", prompt_usd_per_mtok=2.5, completion_usd_per_mtok=10.0)


@dataclass
class Learned:
    request_id: str = "r1"
    started_at: float = 1_700_000_000.0
    member: Member | None = None
    end_user: str | None = None
    endpoint: Endpoint = CHAT
    path: str | None = "chat/completions"
    model_id: str | None = None
    model: ModelInfo | None = None
    stream: bool = False
    forwarded: bool = True
    stream_usage_unsupported: bool = False
    upstream_failure: str | None = None
    reserved_usd: Decimal | None = None
    limit: str | None = None
    key_id: str | None = None


def test_unmetered_reasons() -> None:
    learned = Learned()
    usage = Usage(prompt_tokens=1)
    assert unmetered_reason(learned, "ok", usage, priced=True) is None
    assert unmetered_reason(learned, "ok", usage, priced=False) == "no_price"
    assert unmetered_reason(learned, "ok", None, priced=False) == "no_usage"
    assert (
        unmetered_reason(learned, "client_disconnected", None, priced=False)
        == "client_disconnected"
    )
    assert unmetered_reason(learned, "upstream_failed", None, priced=False) == "upstream_failed"
    assert unmetered_reason(learned, "shutdown", None, priced=False) == "shutdown"
    learned.stream_usage_unsupported = True
    assert unmetered_reason(learned, "ok", None, priced=False) == "stream_usage_unsupported"
    learned.endpoint = endpoint("messages/count_tokens")
    assert unmetered_reason(learned, "ok", None, priced=False) is None  # free
    learned.endpoint = endpoint("images/generations")
    assert unmetered_reason(learned, "ok", None, priced=False) == "not_reported"
    learned.endpoint = endpoint("audio/speech")
    assert unmetered_reason(learned, "ok", None, priced=False) == "not_reported"
    learned.endpoint = UNLISTED
    assert unmetered_reason(learned, "ok", None, priced=False) == "unlisted"
    assert unmetered_reason(learned, "ok", usage, priced=False) == "unlisted"
    learned.endpoint, learned.forwarded = CHAT, False
    assert unmetered_reason(learned, "refused", None, priced=False) is None


def test_account_prices_usage_and_bounds_text() -> None:
    learned = Learned(
        member=Member(name="alice", key_sha256=""),
        end_user="e" * 1000,
        model_id=GPT.id,
        model=GPT,
        stream=True,
    )
    usage = Usage(prompt_tokens=1000, completion_tokens=200)
    finished = account(
        learned, status=200, outcome="ok", usage=usage, duration=1.5, ttft=0.25, price_overrides={}
    )
    assert finished.cost_usd == Decimal("0.0045") and finished.unmetered is None
    assert finished.cost_source == "catalog" and finished.endpoint == "chat/completions"
    assert finished.member == "alice" and finished.end_user == "e" * 256
    assert (finished.time, finished.duration_seconds, finished.ttft_seconds) == (
        1_700_000_000.0,
        1.5,
        0.25,
    )
    overridden = account(
        learned,
        status=200,
        outcome="ok",
        usage=usage,
        duration=1.0,
        ttft=None,
        price_overrides={GPT.id: Price(Decimal(1), Decimal(0))},
    )
    assert overridden.cost_usd == Decimal("0.001")


def test_account_without_a_member_or_price() -> None:
    learned = Learned(model_id="x/unpriced", model=ModelInfo(id="x/unpriced"))
    finished = account(
        learned,
        status=200,
        outcome="ok",
        usage=Usage(prompt_tokens=5),
        duration=0.1,
        ttft=None,
        price_overrides={},
    )
    assert finished.member is None
    assert finished.cost_usd is None and finished.unmetered == "no_price"


def test_what_nanogpt_charged_wins_over_the_catalog_and_overrides() -> None:
    learned = Learned(model_id=GPT.id, model=GPT)
    charged = Usage(prompt_tokens=1000, completion_tokens=200, charged_usd=Decimal("0.0001"))
    finished = account(
        learned,
        status=200,
        outcome="ok",
        usage=charged,
        duration=1.0,
        ttft=None,
        price_overrides={GPT.id: Price(Decimal(1), Decimal(1))},
    )
    assert (finished.cost_usd, finished.cost_source) == (Decimal("0.0001"), "charged")
    image = Learned(endpoint=endpoint("images/generations"), model=None)
    only_cost = Usage(charged_usd=Decimal("0.04"))
    finished = account(
        image, status=200, outcome="ok", usage=only_cost, duration=1.0, ttft=None,
        price_overrides={},
    )  # fmt: skip
    assert (finished.cost_usd, finished.cost_source, finished.unmetered) == (
        Decimal("0.04"),
        "charged",
        None,
    )


@pytest.mark.parametrize(
    ("outcome", "failure", "forwarded", "estimated"),
    [
        ("client_disconnected", None, True, True),  # it may have been billed in full
        ("upstream_failed", "timeout", True, True),
        ("shutdown", None, True, True),
        ("ok", None, True, True),  # answered without usage
        ("upstream_error", None, True, False),  # an error answer is not billed
        ("upstream_failed", "connect", False, False),  # never reached NanoGPT
        ("refused", None, False, False),
    ],
)
def test_a_request_that_ends_without_a_cost_counts_at_its_reservation(
    outcome: Outcome, failure: str | None, forwarded: bool, estimated: bool
) -> None:
    learned = Learned(reserved_usd=Decimal("0.25"), upstream_failure=failure, forwarded=forwarded)
    finished = account(
        learned,
        status=200,
        outcome=outcome,
        usage=None,
        duration=1.0,
        ttft=None,
        price_overrides={},
    )
    if estimated:
        assert (finished.cost_usd, finished.cost_source) == (Decimal("0.25"), "estimate")
    else:
        assert (finished.cost_usd, finished.cost_source) == (None, None)
