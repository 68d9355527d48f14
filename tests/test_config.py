"""Configuration: every mistake stops start-up with one line that names the key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gateway.config import (
    ConfigError,
    Demo,
    MeteringSettings,
    Settings,
    load_metering,
    load_settings,
)
from gateway.keys import hash_key
from gateway.types import Price
from tests.conftest import ALICE_KEY, BOB_KEY, MEMBERS_TOML, TEAM_KEY, make_settings


def load(tmp_path: Path, toml: str, members: bool = True, **env: str) -> Settings:
    return make_settings(tmp_path, toml, members=members, **env)


def error_for(tmp_path: Path, toml: str, members: bool = True, **env: str) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load(tmp_path, toml, members, **env)
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(tmp_path / "gateway.toml") in message
    return message


def test_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path, "")
    assert settings.server.host == "127.0.0.1" and settings.server.port == 8080
    assert settings.upstream.base_url == "https://nano-gpt.com/api"
    assert settings.upstream.max_body_bytes == 10 * 1024 * 1024
    assert settings.catalog.source == "canonical" and settings.catalog.ttl_seconds == 300
    assert settings.auth.mode == "keys"
    assert settings.policy.allow == ("*",) and settings.policy.distillation == "any"
    assert settings.team_key.reveal() == TEAM_KEY


def test_members_keep_only_hashes(tmp_path: Path) -> None:
    settings = load(tmp_path, "")
    alice, bob, root = settings.members
    assert alice.key_sha256 == hash_key(ALICE_KEY)
    assert bob.key_sha256 == hash_key(BOB_KEY) and bob.deny == ("anthropic/*",)
    assert root.admin and not alice.admin
    assert ALICE_KEY not in repr(settings) and BOB_KEY not in repr(settings)
    assert TEAM_KEY not in repr(settings) and TEAM_KEY not in str(settings.team_key)


def test_full_example_is_valid() -> None:
    example = Path(__file__).parents[1] / "config" / "gateway.example.toml"
    environ = {
        "NANOGPT_API_KEY": TEAM_KEY,
        "GATEWAY_KEY_ALICE": "sk-a",
        "GATEWAY_KEY_CAROL": "sk-c",
    }
    settings = load_settings(example, environ)
    assert [m.name for m in settings.members] == ["alice", "bob", "carol"]
    # No key is written in the example, not even in a comment: an admin copied from it as is
    # would hold a key anyone can read.
    text = example.read_text()
    assert "sk-" not in text.replace('"sk-" + secrets', "")


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[server]\nhots = '0.0.0.0'\n", "server.hots: unknown key"),
        ("[sever]\nhost = '0.0.0.0'\n", "sever: unknown key"),
        ("[server]\nport = 'eighty'\n", "server.port: expected an integer, got string 'eighty'"),
        ("[server]\nport = 70000\n", "server.port: must be between 1 and 65535"),
        (
            "[upstream]\nread_timeout_seconds = 'ten'\n",
            "upstream.read_timeout_seconds: expected a number",
        ),
        (
            "[upstream]\nconnect_timeout_seconds = 0\n",
            "upstream.connect_timeout_seconds: must be greater than 0",
        ),
        (
            "[upstream]\nbase_url = 'nano-gpt.com/api'\n",
            "upstream.base_url: expected an http(s) URL",
        ),
        (
            "[upstream]\nmax_body_bytes = true\n",
            "upstream.max_body_bytes: expected an integer, got boolean",
        ),
        ("[auth]\nmode = 'open'\n", 'auth.mode: expected "keys" or "none"'),
        ("[catalog]\nsource = 'free'\n", "catalog.source: expected"),
        ("[catalog]\nttl_seconds = -1\n", "catalog.ttl_seconds: must be greater than 0"),
        ("[policy]\nallow = 'openai/*'\n", "policy.allow: expected a list of strings"),
        ("[policy]\ndeny = ['openai/[gpt']\n", "policy.deny[0]: bad pattern 'openai/[gpt'"),
        ("[policy]\nallow = ['*', 'has space']\n", "policy.allow[1]: bad pattern"),
        ("[policy]\ndistillation = 'yes'\n", "policy.distillation: expected"),
        (
            "[policy]\nmax_prompt_usd_per_mtok = -2\n",
            "policy.max_prompt_usd_per_mtok: must not be negative",
        ),
        (
            "[policy]\nrequire_capabilities = [1]\n",
            "policy.require_capabilities: expected a list of strings",
        ),
        ("server = 1\n", "server: expected a table"),
        ("[metering]\nledger_path = ''\n", "metering.ledger_path: must not be empty"),
        ("[metering]\ninject_stream_usage = 1\n", "metering.inject_stream_usage: expected true"),
        ("[metering]\nbalance_poll_seconds = -5\n", "metering.balance_poll_seconds: must be 0"),
        ("[metering]\nmetrics_token = 'short'\n", "metering.metrics_token: use at least 16"),
        ("[metering]\nmetrics_port = 70000\n", "metering.metrics_port: must be between"),
        ("[metering]\nmetrics_port = 8080\n", "metering.metrics_port: must differ from server"),
        ("[metering]\nledger = 'x.db'\n", "metering.ledger: unknown key"),
        ("[pricing]\n'a/b' = 1\n", 'pricing."a/b": expected a table'),
        ("[pricing.'a/b']\nprompt = 1\n", 'pricing."a/b".completion: required'),
        ("[pricing.'a/b']\nprompt = 1\ncompletion = -1\n", 'pricing."a/b".completion: must not'),
        (
            "[pricing.'a/b']\nprompt = '1'\ncompletion = 1\n",
            'pricing."a/b".prompt: expected a number',
        ),
        (
            "[server]\ncors_origins = ['https://chat.example.com/app']\n",
            "server.cors_origins[0]: expected an origin like",
        ),
        ("[server]\nallowed_hosts = ['a b']\n", "server.allowed_hosts[0]: not a host name"),
        ("[limits]\ntimezone = 'Mars/Olympus'\n", "limits.timezone: not an IANA time zone"),
        ("[limits]\ntimezone = '../etc/passwd'\n", "limits.timezone: not an IANA time zone"),
        ("[limits]\nbudget_usd_daily = -1\n", "limits.budget_usd_daily: must not be negative"),
        (
            "[limits]\nrequests_per_minute = 2.5\n",
            "limits.requests_per_minute: expected an integer, got number 2.5",
        ),
        (
            "[limits]\nbudget_usd_daily = 'unlimited'\n",
            "limits.budget_usd_daily: expected a number, got string 'unlimited'",
        ),
        ("[limits]\ndefault_max_tokens = 0\n", "limits.default_max_tokens: must be at least 1"),
        ("[limits]\nmin_balance_usd = -3\n", "limits.min_balance_usd: must not be negative"),
        ("[policy]\nallow_paygo_override = 'yes'\n", "policy.allow_paygo_override: expected"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, expected: str) -> None:
    assert expected in error_for(tmp_path, toml)


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ("[[members]]\nkey_sha256 = '{h}'\n", "members[0].name: required"),
        ("[[members]]\nname = 'a'\n", "members[0]: set exactly one of key_sha256 or key_env"),
        ("[[members]]\nname = 'a'\nkey_sha256 = '{h}'\nkey_env = 'X'\n", "exactly one"),
        (
            "[[members]]\nname = 'a'\nkey_sha256 = 'abc'\n",
            "members[0].key_sha256: expected 64 hex digits",
        ),
        (
            "[[members]]\nname = 'a'\nkey_env = 'NOT_SET'\n",
            "members[0].key_env: environment variable NOT_SET is not set",
        ),
        ("[[members]]\nname = 'a b'\nkey_sha256 = '{h}'\n", "members[0].name:"),
        (
            "[[members]]\nname = 'a'\nkey_sha256 = '{h}'\n[[members]]\nname = 'a'\nkey_env = 'BOB_KEY'\n",
            "members[1].name: 'a' is already taken",
        ),
        (
            "[[members]]\nname = 'anonymous'\nkey_sha256 = '{h}'\n",
            "members[0].name: 'anonymous' is already taken",
        ),
        (
            "[[members]]\nname = 'a'\nkey_sha256 = '{h}'\n[[members]]\nname = 'b'\nkey_sha256 = '{h}'\n",
            "members[1]: same key as member 'a'",
        ),
        (
            "[[members]]\nname = 'a'\nkey_sha256 = '{h}'\nallow = ['[']\n",
            "members[0].allow[0]: bad pattern",
        ),
        (
            "[[members]]\nname = 'a'\nkey_sha256 = '{h}'\nrole = 'admin'\n",
            "members[0].role: unknown key",
        ),
        (
            "[[members]]\nname = 'a'\nkey_sha256 = '{h}'\nadmin = 'yes'\n",
            "members[0].admin: expected true or false",
        ),
        ("", 'members: at least one [[members]] entry is needed when auth.mode = "keys"'),
        (
            "[[members]]\nname = 'a'\nkey_sha256 = '{h}'\nend_user_header = 'x user'\n",
            "members[0].end_user_header: not an HTTP header name",
        ),
        (
            "[[members]]\nname = 'a'\nkey_sha256 = '{h}'\nbudget_usd_daily = 'lots'\n",
            "members[0].budget_usd_daily: expected a number or \"unlimited\", got string 'lots'",
        ),
        (
            "[[members]]\nname = 'a'\nkey_sha256 = '{h}'\nmax_concurrent_requests = -1\n",
            "members[0].max_concurrent_requests: must not be negative",
        ),
    ],
)
def test_bad_members_name_the_key(tmp_path: Path, members: str, expected: str) -> None:
    toml = members.replace("{h}", hash_key("k"))
    assert expected in error_for(tmp_path, toml, members=False)


def test_missing_team_key_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("[upstream]\napi_key_env = 'TEAM_NANO_KEY'\n" + MEMBERS_TOML)
    with pytest.raises(
        ConfigError, match=r"upstream\.api_key_env: the environment variable TEAM_NANO_KEY"
    ):
        load_settings(path, {"BOB_KEY": BOB_KEY, "NANOGPT_API_KEY": "not this one"})
    settings = load_settings(path, {"BOB_KEY": BOB_KEY, "TEAM_NANO_KEY": "sk-other"})
    assert settings.team_key.reveal() == "sk-other"


def test_demo_needs_no_team_key_and_gets_a_member() -> None:
    demo = Demo(base_url="http://127.0.0.1:9/api", team_key="demo-team-key")
    settings = load_settings(None, {}, demo=demo, fallback_member=("demo", "sk-demo"))
    assert settings.demo and settings.upstream.base_url == "http://127.0.0.1:9/api"
    assert settings.team_key.reveal() == "demo-team-key"
    assert [m.name for m in settings.members] == ["demo"]


def test_env_overrides_base_url(tmp_path: Path) -> None:
    settings = load(tmp_path, "", NANOGPT_BASE_URL="http://127.0.0.1:8181/api")
    assert settings.upstream.base_url == "http://127.0.0.1:8181/api"


def test_auth_none_only_on_loopback(tmp_path: Path) -> None:
    assert load(tmp_path, "[auth]\nmode = 'none'\n", members=False).auth.mode == "none"
    toml = "[auth]\nmode = 'none'\n[server]\nhost = '0.0.0.0'\n"
    assert 'auth.mode: "none" is only allowed on a loopback address' in error_for(
        tmp_path, toml, members=False
    )
    path = tmp_path / "gateway.toml"
    path.write_text("[auth]\nmode = 'none'\n")
    with pytest.raises(ConfigError, match="loopback"):  # --host cannot get around it
        load_settings(path, {"NANOGPT_API_KEY": TEAM_KEY}, host="192.168.1.5")
    for host in ("localhost", "127.0.0.2", "::1"):
        assert load_settings(path, {"NANOGPT_API_KEY": TEAM_KEY}, host=host).server.host == host


def test_subscription_source_becomes_a_policy(tmp_path: Path) -> None:
    assert load(tmp_path, "[catalog]\nsource = 'subscription'\n").policy.subscription_only
    assert not load(tmp_path, "[catalog]\nsource = 'paid'\n").policy.subscription_only


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    assert "not valid TOML" in error_for(tmp_path, "[server\n")
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.toml", {})


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize(
    "key",
    ["limits.budget_usd_daily", "upstream.read_timeout_seconds", "members[0].budget_usd_daily"],
)
def test_nan_and_infinity_are_refused_naming_the_key(tmp_path: Path, key: str, value: str) -> None:
    # A nan budget raised decimal.InvalidOperation on every request, and an infinite one made
    # /v1/key answer 500: neither is a number any setting can mean.
    section, name = key.rsplit(".", 1)
    if section.startswith("members"):
        toml = f'[[members]]\nname = "carol"\nkey_env = "BOB_KEY"\n{name} = {value}\n'
    else:
        toml = f"[{section}]\n{name} = {value}\n"
    message = error_for(tmp_path, toml, members=False)
    assert f"{key}: expected a" in message and message.endswith(f" {value}"), message


def test_a_file_in_another_encoding_is_a_config_error(tmp_path: Path) -> None:
    # Windows PowerShell 5 writes UTF-16 with `>` and Out-File; TOML files are UTF-8.
    path = tmp_path / "gateway.toml"
    path.write_text("[server]\nport = 8080\n", encoding="utf-16")
    with pytest.raises(ConfigError, match="not valid TOML: not UTF-8") as excinfo:
        load_settings(path, {"NANOGPT_API_KEY": TEAM_KEY})
    assert str(path) in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_metering_and_pricing_are_read(tmp_path: Path) -> None:
    toml = (
        "[metering]\nledger_path = '/var/lib/gw/usage.db'\nbalance_poll_seconds = 0\n"
        "[pricing.'deepseek/deepseek-v3.2']\nprompt = 0.28\ncompletion = 1\n"
        "[[members]]\nname = 'webui'\nkey_env = 'BOB_KEY'\nend_user_header = 'X-OpenWebUI-User-Email'\n"
    )
    settings = make_settings(tmp_path, toml, members=False)
    assert settings.metering.ledger_path == "/var/lib/gw/usage.db"
    assert settings.metering.balance_poll_seconds == 0
    assert settings.pricing == {"deepseek/deepseek-v3.2": Price(Decimal("0.28"), Decimal("1.0"))}
    assert settings.members[0].end_user_header == "x-openwebui-user-email"


def test_the_usage_command_reads_metering_without_a_team_key(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        "[metering]\nledger_path = 'u.db'\n[[members]]\nname = 'a'\nkey_env = 'UNSET'\n"
    )
    assert load_metering(config).ledger_path == "u.db"
    assert load_metering(None) == MeteringSettings()
    config.write_text("[metering]\nledger_path = 3\n")
    with pytest.raises(ConfigError, match=r"metering\.ledger_path: expected a string"):
        load_metering(config)


def test_member_limits_override_the_defaults(tmp_path: Path) -> None:
    toml = f"""
[limits]
timezone = "Asia/Tokyo"
budget_usd_daily = 5
requests_per_minute = 60
team_budget_usd_monthly = 100.5
min_balance_usd = 2

[policy]
allow_provider_selection = true

[[members]]
name = "capped"
key_sha256 = "{hash_key("k1")}"
budget_usd_daily = 0.1
tokens_per_minute = 1000
allow_paygo_override = true

[[members]]
name = "free"
key_sha256 = "{hash_key("k2")}"
budget_usd_daily = "unlimited"
requests_per_minute = 0
allow_provider_selection = false
"""
    settings = load(tmp_path, toml, members=False)
    capped, free = settings.members
    assert settings.limits.timezone == "Asia/Tokyo"
    assert settings.limits.team_budget_usd_monthly == Decimal("100.5")
    assert settings.limits.min_balance_usd == Decimal(2)
    assert capped.limits.budget_usd_daily == Decimal("0.1")  # exact, not 0.1000000000000000055
    assert capped.limits.requests_per_minute == 60 and capped.limits.tokens_per_minute == 1000
    assert (capped.allow_paygo_override, capped.allow_provider_selection) == (True, True)
    assert free.limits.budget_usd_daily is None and free.limits.requests_per_minute == 0
    assert (free.allow_paygo_override, free.allow_provider_selection) == (False, False)
    assert capped.limits.budgeted and not free.limits.budgeted


def test_anonymous_gets_the_default_limits(tmp_path: Path) -> None:
    toml = "[auth]\nmode = 'none'\n[limits]\nmax_concurrent_requests = 3\n"
    settings = load(tmp_path, toml, members=False)
    assert settings.anonymous.name == "anonymous"
    assert settings.anonymous.limits.max_concurrent_requests == 3


def test_allowed_hosts_default_to_the_loopback_names_on_a_loopback_address(
    tmp_path: Path,
) -> None:
    assert load(tmp_path, "").server.allowed_hosts == ("localhost", "127.0.0.1", "::1")
    public = "[server]\nhost = '0.0.0.0'\n[metering]\nmetrics_port = 9464\n"
    assert load(tmp_path, public).server.allowed_hosts == ("*",)
    named = public.replace("[metering]", "allowed_hosts = ['gw.example.com']\n[metering]")
    assert load(tmp_path, named).server.allowed_hosts == ("gw.example.com",)


def test_metrics_on_a_public_address_need_a_token_or_their_own_port(tmp_path: Path) -> None:
    message = error_for(tmp_path, "[server]\nhost = '0.0.0.0'\n")
    assert "metering.metrics_token:" in message and "metrics_port" in message
    token = "[server]\nhost = '0.0.0.0'\n[metering]\nmetrics_token = 'a-long-random-string'\n"
    assert load(tmp_path, token).metering.metrics_token
    port = "[server]\nhost = '0.0.0.0'\n[metering]\nmetrics_port = 9464\n"
    assert load(tmp_path, port).metering.metrics_port == 9464
