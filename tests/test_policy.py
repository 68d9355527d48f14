"""The model policy, table-driven over a catalog made from the seeds' examples."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import policy
from gateway.catalog import parse_models
from gateway.types import Member, ModelInfo, PolicyRules
from tests.conftest import catalog_payload

MODELS = {m.id: m for m in parse_models(catalog_payload())}
ALICE = Member(name="alice", key_sha256="00" * 32)


def allowed(rules: PolicyRules, model_id: str, member: Member = ALICE) -> bool:
    return policy.check(rules, member, MODELS[model_id]).allowed


def visible_ids(rules: PolicyRules, member: Member = ALICE) -> list[str]:
    return [m.id for m in policy.visible(rules, member, MODELS.values())]


def test_default_policy_allows_everything() -> None:
    assert visible_ids(PolicyRules()) == list(MODELS)


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (PolicyRules(allow=("openai/*",)), ["openai/gpt-5.2"]),
        (PolicyRules(allow=("*:thinking",)), ["moonshotai/kimi-k2.5:thinking"]),
        (
            PolicyRules(allow=("openai/*", "deepseek/*"), deny=("openai/*",)),
            ["deepseek/deepseek-chat-v3-0324"],
        ),
        (PolicyRules(allow=("chatgpt-?o-latest",)), ["chatgpt-4o-latest"]),
        (PolicyRules(allow=("OPENAI/*",)), []),  # ids are case-sensitive
    ],
)
def test_allow_and_deny_patterns(rules: PolicyRules, expected: list[str]) -> None:
    assert visible_ids(rules) == expected


def test_distillation_allowed_only() -> None:
    rules = PolicyRules(distillation="allowed")
    assert visible_ids(rules) == [
        "deepseek/deepseek-chat-v3-0324",
        "qwen/qwen3-coder-next",
        "moonshotai/kimi-k2.5:thinking",
    ]
    decision = policy.check(rules, ALICE, MODELS["anthropic/claude-opus-4.6"])
    assert "not given by the catalog" in decision.reason  # no distillationPolicy at all
    assert "disallowed" in policy.check(rules, ALICE, MODELS["openai/gpt-5.2"]).reason
    assert "unknown" in policy.check(rules, ALICE, MODELS["zai-org/glm-4.7"]).reason


def test_price_caps_and_unknown_prices() -> None:
    rules = PolicyRules(max_prompt_usd_per_mtok=3.0)
    # glm has no pricing: an unknown price never passes a cap.
    assert visible_ids(rules) == [
        "openai/gpt-5.2",
        "qwen/qwen3-coder-next",  # prices given as strings
        "moonshotai/kimi-k2.5:thinking",
        "chatgpt-4o-latest",
    ]
    capped = PolicyRules(max_completion_usd_per_mtok=10.0)
    assert allowed(capped, "openai/gpt-5.2")  # exactly at the cap passes
    assert not allowed(capped, "anthropic/claude-opus-4.6")
    reason = policy.check(capped, ALICE, MODELS["anthropic/claude-opus-4.6"]).reason
    assert "completion price 75 USD/Mtok is above the cap of 10" in reason


def test_required_capabilities() -> None:
    rules = PolicyRules(require_capabilities=("tool_calling",))
    assert visible_ids(rules) == [
        "openai/gpt-5.2",
        "anthropic/claude-opus-4.6",
        "qwen/qwen3-coder-next",
        "moonshotai/kimi-k2.5:thinking",
    ]
    assert "no capabilities" in policy.check(rules, ALICE, MODELS["chatgpt-4o-latest"]).reason
    vision = PolicyRules(require_capabilities=("tool_calling", "vision"))
    assert visible_ids(vision) == ["openai/gpt-5.2", "anthropic/claude-opus-4.6"]


def test_member_lists_only_narrow() -> None:
    rules = PolicyRules(allow=("openai/*", "deepseek/*"))
    wider = dataclasses.replace(ALICE, allow=("*",))
    assert visible_ids(rules, wider) == visible_ids(rules)
    narrower = dataclasses.replace(ALICE, allow=("deepseek/*", "anthropic/*"))
    assert visible_ids(rules, narrower) == ["deepseek/deepseek-chat-v3-0324"]
    denying = dataclasses.replace(ALICE, deny=("openai/*",))
    assert visible_ids(rules, denying) == ["deepseek/deepseek-chat-v3-0324"]
    assert "member 'alice'" in policy.check(rules, narrower, MODELS["openai/gpt-5.2"]).reason


def test_subscription_only() -> None:
    rules = PolicyRules(subscription_only=True)
    included = dataclasses.replace(MODELS["openai/gpt-5.2"], subscription=True)
    assert policy.check(rules, ALICE, included).allowed
    assert not policy.check(rules, ALICE, MODELS["openai/gpt-5.2"]).allowed


def test_unrestricted_only_without_any_rule() -> None:
    assert policy.is_unrestricted(PolicyRules(), ALICE)
    assert not policy.is_unrestricted(PolicyRules(distillation="allowed"), ALICE)
    assert not policy.is_unrestricted(PolicyRules(subscription_only=True), ALICE)
    assert not policy.is_unrestricted(PolicyRules(), dataclasses.replace(ALICE, deny=("x",)))


def test_embedding_model_without_metadata_fails_closed() -> None:
    embedding = ModelInfo(id="text-embedding-3-small", kind="embedding")
    assert policy.check(PolicyRules(), ALICE, embedding).allowed
    assert not policy.check(PolicyRules(distillation="allowed"), ALICE, embedding).allowed


def test_media_models_meet_the_same_rules_and_unknown_never_passes() -> None:
    image = ModelInfo(id="hidream", kind="image", capabilities=frozenset({"image_generation"}))
    assert policy.check(PolicyRules(), ALICE, image).allowed
    for rules in (
        PolicyRules(max_prompt_usd_per_mtok=100.0),  # priced per image: no token price to cap
        PolicyRules(distillation="allowed"),
        PolicyRules(require_capabilities=("tool_calling",)),
        PolicyRules(deny=("hidream",)),
        PolicyRules(subscription_only=True),
    ):
        assert not policy.check(rules, ALICE, image).allowed, rules


# --- properties: narrowing never widens ---------------------------------------------------------

IDS = st.text(alphabet="ab/", min_size=1, max_size=3) | st.text(alphabet="ab/-:", min_size=1)
PATTERNS = st.text(alphabet="ab*?", max_size=3) | st.text(alphabet="ab/-:*?[]!", max_size=5)
PATTERN_LISTS = st.lists(PATTERNS, max_size=3).map(tuple)
PRICES = st.none() | st.floats(0, 100)
CAPABILITIES = st.sampled_from(["tool_calling", "vision", "reasoning"])

RULES = st.builds(
    PolicyRules,
    # mostly the defaults, so that most models pass before the policy is narrowed
    allow=st.just(("*",)) | PATTERN_LISTS,
    deny=st.just(()) | PATTERN_LISTS,
    distillation=st.sampled_from(["any", "any", "allowed"]),
    max_prompt_usd_per_mtok=st.none() | PRICES,
    max_completion_usd_per_mtok=st.none() | PRICES,
    require_capabilities=st.just(()) | st.lists(CAPABILITIES, max_size=2).map(tuple),
    subscription_only=st.sampled_from([False, False, True]),
)
MEMBERS = st.builds(
    Member,
    name=st.just("alice"),
    key_sha256=st.just(""),
    allow=st.none() | PATTERN_LISTS,
    deny=PATTERN_LISTS,
)
MODELS_ = st.lists(
    st.builds(
        ModelInfo,
        id=IDS,
        prompt_usd_per_mtok=PRICES,
        completion_usd_per_mtok=PRICES,
        capabilities=st.none() | st.frozensets(CAPABILITIES),
        distillation_status=st.sampled_from([None, "allowed", "forbidden"]),
        subscription=st.sampled_from([None, True, False]),
    ),
    min_size=1,
    max_size=6,
)


def lower(cap: float | None, to: float) -> float:
    return to if cap is None else min(cap, to)


def without_one(data: st.DataObject, patterns: tuple[str, ...]) -> tuple[str, ...]:
    if not patterns:
        return patterns
    index = data.draw(st.integers(0, len(patterns) - 1))
    return patterns[:index] + patterns[index + 1 :]


def narrowed(data: st.DataObject, rules: PolicyRules, member: Member) -> tuple[PolicyRules, Member]:
    """The policy tightened one way: a deny pattern added or an allow pattern removed (or a
    member given an allow list at all), globally or for the member, or a stricter rule."""
    pattern, price = data.draw(PATTERNS), data.draw(PRICES) or 0.0
    replace = dataclasses.replace
    match data.draw(st.sampled_from(["deny", "allow", "member deny", "member allow", "rule"])):
        case "deny":
            return replace(rules, deny=(*rules.deny, pattern)), member
        case "allow":
            return replace(rules, allow=without_one(data, rules.allow)), member
        case "member deny":
            return rules, replace(member, deny=(*member.deny, pattern))
        case "member allow":
            allow = (pattern,) if member.allow is None else without_one(data, member.allow)
            return rules, replace(member, allow=allow)
    stricter: dict[str, Any] = data.draw(
        st.sampled_from(
            [
                {"distillation": "allowed"},
                {"subscription_only": True},
                {"max_prompt_usd_per_mtok": lower(rules.max_prompt_usd_per_mtok, price)},
                {"max_completion_usd_per_mtok": lower(rules.max_completion_usd_per_mtok, price)},
                {"require_capabilities": (*rules.require_capabilities, data.draw(CAPABILITIES))},
            ]
        )
    )
    return replace(rules, **stricter), member


@settings(max_examples=500)
@given(rules=RULES, member=MEMBERS, models=MODELS_, steps=st.integers(1, 3), data=st.data())
def test_narrowing_the_policy_never_allows_a_refused_model(
    rules: PolicyRules, member: Member, models: list[ModelInfo], steps: int, data: st.DataObject
) -> None:
    narrower, narrowed_member = rules, member
    for _ in range(steps):
        narrower, narrowed_member = narrowed(data, narrower, narrowed_member)
    for model in models:
        if not policy.check(rules, member, model).allowed:
            assert not policy.check(narrower, narrowed_member, model).allowed, model
        if not policy.check_name(rules, member, model.id).allowed:
            assert not policy.check_name(narrower, narrowed_member, model.id).allowed
    seen = policy.visible(narrower, narrowed_member, models)
    assert [m for m in seen if m in policy.visible(rules, member, models)] == seen


@settings(max_examples=300)
@given(rules=RULES | st.just(PolicyRules()), member=MEMBERS, models=MODELS_)
def test_unrestricted_means_every_model_passes(
    rules: PolicyRules, member: Member, models: list[ModelInfo]
) -> None:
    # only then does a request that names no model (a Responses character_id) pass unchecked
    if policy.is_unrestricted(rules, member):
        assert policy.visible(rules, member, models) == models
