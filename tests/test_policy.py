"""The model policy, table-driven over a catalog made from the seeds' examples."""

from __future__ import annotations

import dataclasses

import pytest

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
