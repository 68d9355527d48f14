"""Cost arithmetic: exact decimals from the catalog's per-million-token prices."""

from __future__ import annotations

from decimal import Decimal

from gateway.pricing import cost, exact, implausible, price_of
from gateway.types import ModelInfo, Price, Usage

DEEPSEEK = ModelInfo(
    id="deepseek/deepseek-v3.2", prompt_usd_per_mtok=0.28, completion_usd_per_mtok=0.42
)


def test_cost_is_tokens_times_price_per_million() -> None:
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=500_000)
    assert cost(usage, Price(Decimal("0.28"), Decimal("0.42"))) == Decimal("0.49")


def test_cost_is_exact_where_floats_drift() -> None:
    price = price_of(DEEPSEEK, {})
    assert price == Price(Decimal("0.28"), Decimal("0.42"))
    one = cost(Usage(prompt_tokens=1, completion_tokens=1), price)
    assert one == Decimal("0.00000070")
    assert sum([one] * 1_000_000, Decimal(0)) == Decimal("0.7")
    assert sum([0.28e-6 + 0.42e-6] * 1_000_000) != 0.7  # what a float ledger would have said


def test_cached_and_reasoning_tokens_are_already_inside_prompt_and_completion() -> None:
    plain = Usage(prompt_tokens=100, completion_tokens=50)
    detailed = Usage(
        prompt_tokens=100, completion_tokens=50, cached_prompt_tokens=80, reasoning_tokens=40
    )
    price = Price(Decimal(3), Decimal(15))
    assert cost(detailed, price) == cost(plain, price) == Decimal("0.00105")


def test_tiny_prices_stay_exact() -> None:
    price = Price(exact(0.00015), exact(0.0006))
    assert cost(Usage(prompt_tokens=7, completion_tokens=3), price) == Decimal("0.00000000285")


def test_an_override_wins_over_the_catalog() -> None:
    override = Price(Decimal("1"), Decimal("2"))
    assert price_of(DEEPSEEK, {DEEPSEEK.id: override}) is override
    assert price_of(DEEPSEEK, {"other": override}) == Price(Decimal("0.28"), Decimal("0.42"))


def test_a_model_without_both_prices_has_no_price() -> None:
    assert price_of(ModelInfo(id="x", prompt_usd_per_mtok=1.0), {}) is None
    assert price_of(ModelInfo(id="x"), {}) is None


def test_implausible_prices_are_found() -> None:
    seed_example = ModelInfo(id="odd", prompt_usd_per_mtok=2500, completion_usd_per_mtok=1.0)
    assert implausible([DEEPSEEK, seed_example, ModelInfo(id="unpriced")]) == [seed_example]
