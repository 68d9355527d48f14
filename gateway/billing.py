"""NanoGPT's ways for one request to leave the subscription for pay-as-you-go billing on the
team's balance, recognised so the gateway can refuse them to members without permission. Pure.

From NanoGPT's docs (`api-reference/miscellaneous/billing-override.mdx`,
`provider-selection.mdx`, `model-suffixes.mdx`): the `X-Billing-Mode` header or the body's
`billing_mode` / `billingMode` with a pay-as-you-go value; provider selection by the
`X-Provider` header, the body's `provider`, or a provider or routing suffix on the model id
(billed as pay-as-you-go with a markup); and paid features by suffix (web search, memory, PII
redaction). Read conservatively: a pay-as-you-go value anywhere counts, whichever NanoGPT
would let win.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.errors import ModelNotAllowed
from gateway.types import Member

Override = Literal["paygo", "provider"]

PAYGO_VALUES = frozenset({"paygo", "paid", "payg", "pay-as-you-go", "pay_as_you_go"})
ROUTING_SUFFIXES = frozenset(
    {"speed", "fast", "throughput", "latency", "price", "cheap", "floor", "tools"}
    | {"caching", "cache", "cached", "official", "original"}
)
"""Pick the provider (billed like an explicit provider choice)."""
PAID_FEATURES = re.compile(r"(online(/[a-z0-9-]+)?|memory(-\d+)?|(pii)?redact(ion|ed))")
"""Web search, context memory and PII redaction: paid on top of the model."""
FREE_SUFFIXES = re.compile(r"(thinking|reasoning-exclude|reasoning-effort/[a-z]+|\d+)")
"""Reasoning controls and thinking budgets: the same model at the same prices."""


@dataclass(frozen=True, slots=True)
class Suffixed:
    """A model id read as a catalog id plus NanoGPT suffixes, and what they need."""

    base: str
    suffixes: tuple[str, ...]
    needs: frozenset[Override]


def requested(headers: Mapping[str, str], payload: Mapping[str, Any]) -> frozenset[Override]:
    """The billing overrides a request asks for in its headers and body."""
    found: set[Override] = set()
    modes = [headers.get("x-billing-mode"), payload.get("billing_mode"), payload.get("billingMode")]
    if any(isinstance(m, str) and m.strip().lower() in PAYGO_VALUES for m in modes):
        found.add("paygo")
    if headers.get("x-provider", "").strip() or payload.get("provider") not in (None, ""):
        found.add("provider")
    return frozenset(found)


def split_suffixes(model_id: str) -> Suffixed | None:
    """`zai-org/glm-5:fast:online` as the catalog id `zai-org/glm-5` and its suffixes, with
    the overrides they amount to; `None` for an id without suffixes. An unknown suffix is
    taken for a provider id (NanoGPT accepts `model:<provider>`)."""
    base, sep, rest = model_id.partition(":")
    if not sep or not base:
        return None
    suffixes = tuple(rest.split(":"))
    needs: set[Override] = set()
    for suffix in suffixes:
        word = suffix.lower()
        if FREE_SUFFIXES.fullmatch(word):
            continue
        needs.add("paygo" if PAID_FEATURES.fullmatch(word) else "provider")
    return Suffixed(base, suffixes, frozenset(needs))


def refused(needs: frozenset[Override], *, paygo: bool, provider: bool) -> list[Override]:
    """The overrides among `needs` a member may not use."""
    allowed = {"paygo": paygo, "provider": provider}
    return sorted(n for n in needs if not allowed[n])


DESCRIPTIONS: dict[Override, str] = {
    "paygo": "pay-as-you-go billing (X-Billing-Mode / billing_mode, or a paid suffix such as "
    ":online or :memory)",
    "provider": "provider selection (X-Provider, provider, or a provider or routing suffix "
    "such as :fast or :cheap)",
}


def require(needs: frozenset[Override], member: Member, what: str) -> None:
    """403 `billing_override_not_allowed` unless `member` may use every one of `needs`."""
    denied = refused(
        needs, paygo=member.allow_paygo_override, provider=member.allow_provider_selection
    )
    if denied:
        asks = " and ".join(DESCRIPTIONS[r] for r in denied)
        raise ModelNotAllowed(
            f"Member {member.name!r} may not use {asks}, which {what} asks for: it bills the "
            "team's NanoGPT balance instead of the subscription. Ask a gateway admin "
            "(members[].allow_paygo_override / allow_provider_selection).",
            code="billing_override_not_allowed",
        )
