"""The model policy: may this member use this model? Pure functions over value objects.

The global rules come from `[policy]`; a member's `allow`/`deny` can only narrow them, and a rule
that needs a field the catalog does not give for a model never lets that model through.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.types import Member, ModelInfo, PolicyRules


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


ALLOWED = Decision(True)


def check(rules: PolicyRules, member: Member, model: ModelInfo) -> Decision:
    """Decide one (member, model) pair; the reason names the first rule that refuses it."""
    by_name = check_name(rules, member, model.id)
    return by_name if not by_name.allowed else check_entry(rules, model)


def check_entry(rules: PolicyRules, model: ModelInfo) -> Decision:
    """The rules that need the model's catalog entry: subscription, distillation, prices,
    capabilities (`check_name` has passed it already)."""
    if rules.subscription_only and model.subscription is not True:
        return _deny("it is not included in the NanoGPT subscription (catalog.source)")
    if rules.distillation == "allowed" and model.distillation_status != "allowed":
        status = model.distillation_status or "not given by the catalog"
        return _deny(f"it is not distillation-allowed (distillationPolicy.status: {status})")
    for cap, price, name in (
        (rules.max_prompt_usd_per_mtok, model.prompt_usd_per_mtok, "prompt"),
        (rules.max_completion_usd_per_mtok, model.completion_usd_per_mtok, "completion"),
    ):
        if cap is None:
            continue
        if price is None:
            return _deny(f"the catalog gives no {name} price and policy caps it")
        if price > cap:
            return _deny(f"its {name} price {price:g} USD/Mtok is above the cap of {cap:g}")
    if rules.require_capabilities:
        have = model.capabilities
        if have is None:
            return _deny("the catalog gives no capabilities and policy requires some")
        if missing := [c for c in rules.require_capabilities if c not in have]:
            return _deny(f"it lacks the required capabilities: {', '.join(missing)}")
    return ALLOWED


def check_name(rules: PolicyRules, member: Member, model_id: str) -> Decision:
    """The rules that need only the model's id (allow and deny patterns): decided before the
    catalog is asked, so a denied name is refused whichever catalog would know it."""
    if not _matches(model_id, rules.allow):
        return _deny("it matches no pattern of policy.allow")
    if member.allow is not None and not _matches(model_id, member.allow):
        return _deny(f"it matches no pattern of member {member.name!r}'s allow list")
    if pattern := _first_match(model_id, (*rules.deny, *member.deny)):
        return _deny(f"it matches the deny pattern {pattern!r}")
    return ALLOWED


def is_unrestricted(rules: PolicyRules, member: Member) -> bool:
    """True when no rule could refuse any model: only then may a request that names no model
    (a Responses call with a NanoGPT `character_id`) pass, since its model cannot be checked."""
    return rules == PolicyRules() and member.allow in (None, ("*",)) and not member.deny


def visible(rules: PolicyRules, member: Member, models: Iterable[ModelInfo]) -> list[ModelInfo]:
    """The models this member may use, in catalog order."""
    return [m for m in models if check(rules, member, m).allowed]


def _deny(reason: str) -> Decision:
    return Decision(False, reason)


def _matches(model_id: str, patterns: tuple[str, ...]) -> bool:
    return _first_match(model_id, patterns) is not None


def _first_match(model_id: str, patterns: tuple[str, ...]) -> str | None:
    return next((p for p in patterns if fnmatch.fnmatchcase(model_id, p)), None)
