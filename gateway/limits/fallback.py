"""What a decision does while the shared backend does not answer, per class of limit
(`[state] on_redis_error`): `closed` refuses what that class bounds with `503
limits_unavailable`; `local` counts it in this replica alone (the in-process limiter). Every
decision taken this way, refusals included, is reported to `on_decision(class)` for
`nanogpt_gateway_limit_backend_errors_total`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from gateway.errors import LimitsUnavailable
from gateway.limits.base import Admission, Ask, Plan
from gateway.limits.memory import MemoryLimiter

CLASSES = ("budgets", "rates")


@dataclass(slots=True)
class Fallback:
    local: MemoryLimiter
    budgets: str = "closed"
    rates: str = "local"
    on_decision: Callable[[str], None] = lambda _: None

    def describe(self, kind: str) -> str:
        mode = getattr(self, kind)
        return "refused (503 limits_unavailable)" if mode == "closed" else "counted per replica"

    def admit(self, ask: Ask, plan: tuple[Plan, ...]) -> Admission:
        """Admit `ask` without the shared backend, by class, or raise the refusal."""
        limits = ask.limits
        bounded_by_money = ask.costs_money and (
            any(p.kind != "end_user" or ask.end_user is not None for p in plan)
            or self.local.rules.min_balance_usd is not None
        )
        bounded_by_rates = (
            limits.requests_per_minute is not None
            or limits.tokens_per_minute is not None
            or limits.max_concurrent_requests is not None
        )
        for kind, applies in (("budgets", bounded_by_money), ("rates", bounded_by_rates)):
            if not applies:
                continue
            self.on_decision(kind)
            if getattr(self, kind) == "closed":
                raise LimitsUnavailable(kind)
        return self.local.admit_now(ask)

    def settle(self, admission: Admission, cost_usd: Decimal, tokens: int | None) -> None:
        self.local.settle(admission, cost_usd, tokens)
