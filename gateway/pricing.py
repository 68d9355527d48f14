"""Cost arithmetic: USD from token counts and per-million-token prices. Pure.

Money is `Decimal` from end to end, so a ledger that sums a million requests sums them exactly;
only the Prometheus counter turns it into a float, at the edge. Prices come from the catalog as
it was when the request was made, unless `[pricing."model-id"]` overrides them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from gateway.types import ModelInfo, Price, Usage

PER_MILLION = Decimal(1_000_000)
IMPLAUSIBLE_USD_PER_MTOK = 1000.0
"""No text model costs this much per million tokens; a catalog that says so is likely giving
another unit (one seed example shows 2500), and the costs it yields are worth a warning."""


def price_of(model: ModelInfo, overrides: Mapping[str, Price]) -> Price | None:
    """The model's price: the configured override, else the catalog's; `None` when unknown."""
    if (override := overrides.get(model.id)) is not None:
        return override
    if model.prompt_usd_per_mtok is None or model.completion_usd_per_mtok is None:
        return None
    return Price(exact(model.prompt_usd_per_mtok), exact(model.completion_usd_per_mtok))


def cost(usage: Usage, price: Price) -> Decimal:
    """USD for one response: prompt and completion tokens at their price per million.

    Cached and reasoning tokens are already counted in prompt and completion tokens, and
    NanoGPT's catalog gives them no price of their own, so they add nothing here.
    """
    return (usage.prompt_tokens * price.prompt + usage.completion_tokens * price.completion) / (
        PER_MILLION
    )


def exact(price: float) -> Decimal:
    """The decimal a JSON number was written as: `repr` of a float is the shortest string that
    reads back as the same float, so `0.28` becomes `Decimal("0.28")`."""
    return Decimal(repr(price))


def implausible(models: Iterable[ModelInfo]) -> list[ModelInfo]:
    """Models whose catalog price is above `IMPLAUSIBLE_USD_PER_MTOK`."""
    return [
        m
        for m in models
        if any(
            p is not None and p > IMPLAUSIBLE_USD_PER_MTOK
            for p in (m.prompt_usd_per_mtok, m.completion_usd_per_mtok)
        )
    ]
