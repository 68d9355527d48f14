"""NanoGPT's balance, polled: `POST /check-balance` now, every `metering.balance_poll_seconds`,
and at once when asked (after NanoGPT answered 402). A failed poll keeps the last balance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.errors import GatewayError, UpstreamError

logger = logging.getLogger("gateway.balance")

BALANCE_PATH = "/check-balance"


def parse_balance(payload: Any) -> tuple[float, float]:
    """(USD, Nano) from `/check-balance`, which gives both as decimal strings."""
    if not isinstance(payload, dict):
        raise ValueError("expected a JSON object from /check-balance")
    try:
        return float(payload["usd_balance"]), float(payload["nano_balance"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("expected usd_balance and nano_balance from /check-balance") from None


async def poll_balance(
    fetch: Callable[[], Awaitable[Any]],
    on_balance: Callable[[float, float], None],
    interval_seconds: float,
    wake: asyncio.Event | None = None,
) -> None:
    """Poll the balance now and every `interval_seconds` (or as soon as `wake` is set), until
    cancelled; a failed poll is logged and the last known balance stays in place."""
    wake = wake or asyncio.Event()
    while True:
        try:
            on_balance(*parse_balance(await fetch()))
        except Exception as exc:
            detail = _detail(exc)
            logger.warning("balance check failed: %s", detail)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), interval_seconds)
        wake.clear()


def _detail(exc: Exception) -> str:
    if isinstance(exc, UpstreamError):
        return exc.detail
    return exc.message if isinstance(exc, GatewayError) else str(exc)
