"""Budget arithmetic: calendar windows in the configured zone, and the reservation estimate."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from gateway.budgets import BYTES_PER_PROMPT_TOKEN, completion_allowance, estimate, period
from gateway.types import Price

BERLIN, TOKYO = ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Tokyo")


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_a_day_across_the_spring_dst_change_has_23_hours() -> None:
    day = period("day", at("2026-03-29T12:00:00+02:00"), BERLIN)
    assert day.key == "day:2026-03-29"
    assert day.start == at("2026-03-29T00:00:00+01:00")
    assert day.end == at("2026-03-30T00:00:00+02:00")
    assert day.end - day.start == 23 * 3600


def test_a_day_across_the_autumn_dst_change_has_25_hours() -> None:
    day = period("day", at("2026-10-25T23:59:59+01:00"), BERLIN)
    assert day.key == "day:2026-10-25" and day.end - day.start == 25 * 3600


def test_the_last_second_of_a_31_day_month_and_the_first_of_the_next() -> None:
    last = at("2026-12-31T23:59:59+01:00")
    december, january = period("month", last, BERLIN), period("month", last + 1, BERLIN)
    assert december.key == "month:2026-12" and january.key == "month:2027-01"
    assert december.end == january.start == at("2027-01-01T00:00:00+01:00")
    assert december.end - december.start == 31 * 86400
    february = period("month", at("2028-02-15T00:00:00+01:00"), BERLIN)  # a leap year
    assert february.end - february.start == 29 * 86400


def test_utc_plus_9_resets_at_local_midnight_not_utc_midnight() -> None:
    before = datetime(2026, 12, 6, 14, 59, 59, tzinfo=UTC).timestamp()  # 23:59:59 in Tokyo
    after = before + 1
    assert period("day", before, TOKYO).key == "day:2026-12-06"
    assert period("day", after, TOKYO).key == "day:2026-12-07"
    assert period("day", before, TOKYO).end == after
    assert period("day", after, ZoneInfo("UTC")).key == "day:2026-12-06"  # UTC's day goes on


@pytest.mark.parametrize(
    ("payload", "model_max", "expected"),
    [
        ({}, None, 4096),
        ({"max_tokens": 100}, None, 100),
        ({"max_completion_tokens": 50, "max_tokens": 80}, None, 50),
        ({"max_output_tokens": 70}, None, 70),
        ({}, 1000, 1000),  # the model's output limit caps the default
        ({"max_tokens": 9000}, 1000, 1000),
        ({"max_tokens": 100, "n": 3}, None, 300),  # three choices, three completions
        ({"max_tokens": "100"}, None, 4096),  # not a count: the default
        ({"max_tokens": -5, "n": 0}, None, 4096),
    ],
)
def test_completion_allowance(
    payload: dict[str, object], model_max: int | None, expected: int
) -> None:
    got = completion_allowance(
        "chat/completions", payload, default_max_tokens=4096, model_max_tokens=model_max
    )
    assert got == expected


def test_embeddings_produce_no_completion() -> None:
    assert (
        completion_allowance("embeddings", {}, default_max_tokens=4096, model_max_tokens=None) == 0
    )


def test_the_estimate_prices_the_body_and_the_allowance_exactly() -> None:
    price = Price(Decimal("0.28"), Decimal("0.42"))
    body = 1000
    got = estimate("chat/completions", {"max_tokens": 200}, body, price, default_max_tokens=4096)
    prompt = body // BYTES_PER_PROMPT_TOKEN
    assert (got.prompt_tokens, got.completion_tokens, got.tokens) == (prompt, 200, prompt + 200)
    assert got.cost_usd == (prompt * Decimal("0.28") + 200 * Decimal("0.42")) / 1_000_000


def test_an_unpriced_estimate_costs_nothing_but_still_counts_tokens() -> None:
    got = estimate("chat/completions", {}, 10, None, default_max_tokens=64)
    assert got.cost_usd == 0 and got.tokens == 5 + 64
