"""Configuration: every mistake stops start-up with one line that names the key."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import hypothesis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import (
    SECTIONS,
    ConfigError,
    Demo,
    MemberSettings,
    Settings,
    load_database,
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


def test_the_usage_command_reads_the_database_without_a_team_key(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        "[metering]\nledger_path = 'u.db'\n[[members]]\nname = 'a'\nkey_env = 'UNSET'\n"
    )
    assert load_database(config, {}).location == "u.db"
    assert load_database(None, {}).location == "./gateway-usage.db"
    config.write_text("[database]\nurl_env = 'DB'\n")
    assert load_database(config, {"DB": "postgresql://gw:pw@db/gw"}).is_postgresql
    config.write_text("[metering]\nledger_path = 3\n")
    with pytest.raises(ConfigError, match=r"metering\.ledger_path: expected a string"):
        load_database(config, {})


@pytest.mark.parametrize(
    ("table", "env", "location"),
    [
        ("", {}, "./gateway-usage.db"),
        ("[metering]\nledger_path = '/var/lib/gw/u.db'", {}, "/var/lib/gw/u.db"),
        ("[database]\nurl = 'sqlite:///data/u.db'", {}, "data/u.db"),
        ("[database]\nurl = 'sqlite:////srv/u.db'", {}, "/srv/u.db"),
        ("[database]\nurl = 'postgresql://gw@db:5432/gw'", {}, "postgresql://gw@db:5432/gw"),
        ("[database]\nurl = 'postgres://gw@db/gw'", {}, "postgres://gw@db/gw"),
        (
            "[database]\nurl_env = 'DB_URL'",
            {"DB_URL": "postgresql://a:b@h/d"},
            "postgresql://a:b@h/d",
        ),
    ],
)
def test_one_url_names_the_database(
    tmp_path: Path, table: str, env: dict[str, str], location: str
) -> None:
    settings = make_settings(tmp_path, table, members=True, **env)
    assert settings.database.location == location


@pytest.mark.parametrize(
    ("table", "env", "error"),
    [
        (
            "[database]\nurl = 'sqlite:///a.db'\n[metering]\nledger_path = 'b.db'",
            {},
            "database.url: set it or metering.ledger_path (its older name), not both",
        ),
        ("[database]\nurl = 'a.db'", {}, "database.url: expected sqlite:///relative/path"),
        ("[database]\nurl = 'mysql://h/d'", {}, "database.url: expected sqlite:///"),
        ("[database]\nurl = 'sqlite:///'", {}, "database.url: expected sqlite:///"),
        ("[database]\nurl = 'postgresql:///gw'", {}, "database.url: a PostgreSQL URL needs a host"),
        ("[database]\nurl_env = 'DB_URL'", {}, "database.url_env: the environment variable DB_URL"),
        ("[database]\nurl = 'sqlite:///a'\nurl_env = 'X'", {}, "database: set url or url_env"),
        ("[database]\nhost = 'db'", {}, "database.host: unknown key"),
    ],
)
def test_a_wrong_database_stops_start_up_naming_the_key(
    tmp_path: Path, table: str, env: dict[str, str], error: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(error)):
        make_settings(tmp_path, table, members=True, **env)


def test_a_database_password_never_shows(tmp_path: Path) -> None:
    url = "postgresql://gw:hunter2hunter2@db:5432/gw"
    settings = make_settings(tmp_path, "[database]\nurl_env = 'DB_URL'", DB_URL=url)
    assert "hunter2" not in repr(settings)
    assert settings.database.shown == "postgresql://gw:***@db:5432/gw"
    with pytest.raises(ConfigError) as caught:
        make_settings(tmp_path, "[database]\nurl = 'pgsql://gw:hunter2hunter2@db/gw'")
    assert "hunter2" not in str(caught.value) and "pgsql://gw:***@db/gw" in str(caught.value)


def test_state_defaults_to_one_process_and_reads_redis_settings(tmp_path: Path) -> None:
    assert make_settings(tmp_path, "").state.redis_url is None
    settings = make_settings(
        tmp_path,
        "[state]\nredis_url = 'rediss://cache:6380/2'\nredis_password_env = 'RP'\n"
        "lease_ttl_seconds = 12\non_redis_error = { rates = 'closed' }",
        RP="s3cret-redis",
    )
    state = settings.state
    assert state.redis_url == "rediss://cache:6380/2" and state.lease_ttl_seconds == 12
    assert (state.on_redis_error.budgets, state.on_redis_error.rates) == ("closed", "closed")
    assert settings.redis_password.reveal() == "s3cret-redis"
    assert "s3cret-redis" not in repr(settings)


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ("redis_url = 'http://cache'", "state.redis_url: expected redis://host:6379/0"),
        ("redis_url = 'redis://h'\nlease_ttl_seconds = 0", "state.lease_ttl_seconds: must be 1"),
        (
            "on_redis_error = { budgets = 'open' }",
            'state.on_redis_error.budgets: expected "closed" or "local"',
        ),
        ("on_redis_error = { money = 'closed' }", "state.on_redis_error.money: unknown key"),
        ("on_redis_error = 'closed'", "state.on_redis_error: expected a table"),
        ("redis_password_env = 'RP'", "state.redis_password_env: set state.redis_url too"),
        (
            "redis_url = 'redis://h'\nredis_password_env = 'NOPE'",
            "state.redis_password_env: the environment variable NOPE",
        ),
    ],
)
def test_a_wrong_state_stops_start_up_naming_the_key(
    tmp_path: Path, table: str, error: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(error)):
        make_settings(tmp_path, f"[state]\n{table}")


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


# --- properties: any file -----------------------------------------------------------------------

VALID: dict[str, list[Any]] = {
    "host": ["127.0.0.1", "localhost", "::1", "0.0.0.0"],
    "port": [8080, 1, 65535],
    "base_url": ["https://nano-gpt.com/api", "http://localhost:9/api"],
    "api_key_env": ["NANOGPT_API_KEY"],
    "timezone": ["UTC", "Europe/Berlin", "Asia/Tokyo"],
    "cors_origins": [["https://chat.example.com"], ["*"], []],
    "allowed_hosts": [["gw.example.com"], ["*"], []],
    "allow": [["*"], ["openai/*", "deepseek/*"], ["[ab]*"]],
    "deny": [["anthropic/*"], []],
    "require_capabilities": [["tool_calling"], []],
    "forward_client_headers": [["x-openwebui-user-email"], []],
    "end_user_header": ["x-openwebui-user-email"],
    "ledger_path": ["./usage.db"],
    "url": ["sqlite:///usage.db", "postgresql://gw@db:5432/gw"],
    "url_env": ["DB_URL"],
    "redis_url": ["redis://cache:6379/0", "rediss://cache:6380"],
    "redis_password_env": ["REDIS_PASSWORD"],
    "metrics_token": ["x" * 16],
    "metrics_port": [9100],
    "max_body_bytes": [1, 1024],
    "default_max_tokens": [1, 4096],
}
"""Values the loader takes (numbers are drawn by type): a document of these loads."""
WRONG: dict[str, list[Any]] = {
    "host": [""],
    "port": [0, 65536],
    "base_url": ["ftp://x", "http://u:p@h/", "https://h/api?q=1", "nano-gpt.com"],
    "api_key_env": ["1BAD", "TEAM_KEY"],
    "timezone": ["Nowhere/Zone", "", "../etc", "UTC\x00"],
    "cors_origins": [["https://x.example/path"]],
    "allowed_hosts": [["bad host"]],
    "allow": [["[unclosed"], [""], ["a b"]],
    "deny": [["a b"]],
    "end_user_header": ["bad header"],
    "ledger_path": [" "],
    "url": ["usage.db", "mysql://db/gw", "postgresql:///gw"],
    "url_env": ["UNSET"],
    "redis_url": ["http://cache"],
    "redis_password_env": ["UNSET"],
    "lease_ttl_seconds": [0, 0.5],
    "metrics_token": ["short"],
    "metrics_port": [8080, 0],
    "max_body_bytes": [0],
    "default_max_tokens": [0],
}
"""Values the loader must refuse, each naming its key."""
NUMBERS: dict[Any, st.SearchStrategy[Any]] = {
    bool: st.booleans(),
    int: st.integers(0, 10**6),
    float: st.floats(min_value=0.001, max_value=1e9) | st.integers(1, 1000),
    str: st.text(max_size=12),
}
SCALARS = st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
ANY_VALUE = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


def typed(name: str, hint: Any) -> st.SearchStrategy[Any]:
    """Values of a setting's type the loader should take."""
    if name in VALID:
        return st.sampled_from(VALID[name])
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([typed(name, arg) for arg in args if arg is not type(None)])
    if origin is Literal:
        return st.sampled_from(args)
    if origin is tuple:
        return st.lists(st.text(alphabet="abc/-*", min_size=1, max_size=8), max_size=3)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return table(hint, mistakes=False)
    return NUMBERS[hint]


def table(
    cls: type, mistakes: bool, leave_out: tuple[str, ...] = (), **fixed: Any
) -> st.SearchStrategy[dict[str, Any]]:
    """A TOML table for a settings dataclass: any of its keys, with values of their type, and
    with `mistakes` now and then a value of the wrong type or range, or an unknown key."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        value = typed(f.name, hints[f.name])
        if mistakes:
            wrong = st.sampled_from(WRONG[f.name]) if f.name in WRONG else ANY_VALUE
            value = st.one_of(value, value, value, wrong, st.floats(), st.integers(max_value=-1))
            # st.floats() brings nan, inf and negatives: the loader must refuse each
        values[f.name] = value
    for name in {*fixed, *leave_out}:
        del values[name]
    known = st.fixed_dictionaries(fixed, optional=values)
    if not mistakes:
        return known
    unknown = st.dictionaries(st.sampled_from(["rpm", "Host", "unknown"]), SCALARS, max_size=1)
    return st.one_of(known, known, st.builds(lambda a, b: {**a, **b}, known, unknown))


KEYS = ("key_sha256", "key_env")


@st.composite
def members(draw: st.DrawFn, mistakes: bool) -> list[dict[str, Any]]:
    """`[[members]]` tables: one to three, each with its own name and key unless `mistakes`."""
    tables = []
    for i in range(draw(st.integers(0 if mistakes else 1, 3))):
        key = draw(st.sampled_from([{"key_sha256": hash_key(f"sk-{i}")}, {"key_env": f"KEY_{i}"}]))
        name = st.just(f"member-{i}")
        if mistakes:
            name = name | st.sampled_from(["member-0", "anonymous", "bad name", "a" * 65])
            key = draw(
                st.sampled_from([key, {}, {**key, "key_env": "KEY_0"}, {"key_env": "UNSET"}])
            )
        fixed = {k: st.just(v) for k, v in key.items()}
        tables.append(draw(table(MemberSettings, mistakes, KEYS, name=name, **fixed)))
    return tables


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A settings document: every section and member key, mostly right; half of them with
    mistakes (the other half loads, unless two right values clash)."""
    mistakes = draw(st.booleans())
    price: st.SearchStrategy[Any] = st.fixed_dictionaries(
        {"prompt": NUMBERS[float], "completion": NUMBERS[float]}
    )
    if mistakes:
        price = price | ANY_VALUE
    optional: dict[str, st.SearchStrategy[Any]] = {
        **{name: table(cls, mistakes) for name, cls in SECTIONS.items()},
        "pricing": st.dictionaries(st.sampled_from(["openai/gpt-5.2", "x"]), price, max_size=2),
    }
    if mistakes:
        optional["unknown"] = SCALARS
    document: dict[str, Any] = draw(
        st.fixed_dictionaries({"members": members(mistakes)}, optional=optional)
    )
    hypothesis.event("with mistakes" if mistakes else "right values")
    if not mistakes and draw(st.booleans()):  # right but for one number that is none
        section, key = draw(st.sampled_from(FLOAT_SETTINGS))
        document[section] = {**document.get(section, {}), key: draw(NON_FINITE)}
    return document


FLOAT_SETTINGS = [
    (name, f.name)
    for name, cls in SECTIONS.items()
    for f in dataclasses.fields(cls)
    if float
    in (typing.get_type_hints(cls)[f.name], *typing.get_args(typing.get_type_hints(cls)[f.name]))
]
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


ENVIRONMENT = {
    "NANOGPT_API_KEY": "sk-team",
    **{f"KEY_{i}": f"sk-{i}" for i in range(3)},
    "DB_URL": "sqlite:///env.db",
    "REDIS_PASSWORD": "redis-secret",
}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return {math.inf: "inf", -math.inf: "-inf"}.get(value, repr(value))
    if isinstance(value, str):
        escape = r'["\\\x00-\x08\x0a-\x1f\x7f]'
        return '"' + re.sub(escape, lambda m: f"\\u{ord(m[0]):04x}", value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(key)


def toml_document(document: dict[str, Any]) -> str:
    """`document` as a TOML file is written: top-level keys, then a table per section."""
    tables = {k: v for k, v in document.items() if isinstance(v, dict | list)}
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in document.items() if k not in tables]
    for name, value in tables.items():
        for row in value if isinstance(value, list) else [value]:
            lines.append(f"[[{name}]]" if isinstance(value, list) else f"[{name}]")
            entries = row.items() if isinstance(row, dict) else [("value", row)]
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in entries]
    return "\n".join(lines) + "\n"


def loaded(path: Path, env: dict[str, str]) -> Settings | None:
    """The settings, or `None` for a `ConfigError` that names the file: nothing else escapes."""
    try:
        settings = load_settings(path, env)
    except ConfigError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        hypothesis.event("refused: " + str(exc).split(": ")[1].split(".")[0].split("[")[0])
        return None
    hypothesis.event("loaded")
    return settings


def usable(settings: Settings) -> None:
    """What loads can be run: every number of it a finite one, not below zero."""
    numbers = [
        settings.upstream.connect_timeout_seconds,
        settings.upstream.read_timeout_seconds,
        settings.catalog.ttl_seconds,
        settings.metering.balance_poll_seconds,
        settings.policy.max_prompt_usd_per_mtok,
        settings.policy.max_completion_usd_per_mtok,
        *dataclasses.astuple(settings.limits)[1:],
        settings.state.lease_ttl_seconds,
        *(v for m in (*settings.members, settings.anonymous) for v in astuple(m.limits)),
        *(v for p in settings.pricing.values() for v in astuple(p)),
    ]
    for number in numbers:
        assert number is None or (math.isfinite(number) and number >= 0), numbers


def astuple(value: Any) -> tuple[Any, ...]:
    return tuple(getattr(value, f.name) for f in dataclasses.fields(value))


@settings(max_examples=200)
@given(document=documents())
def test_any_settings_document_loads_usable_or_is_one_config_error(
    tmp_path_factory: pytest.TempPathFactory, document: dict[str, Any]
) -> None:
    path = tmp_path_factory.mktemp("config") / "gateway.toml"
    path.write_text(toml_document(document))
    settings = loaded(path, ENVIRONMENT)
    if settings is not None:
        usable(settings)


@settings(max_examples=150)
@given(
    text=st.text()
    | documents()
    .map(toml_document)
    .flatmap(
        lambda doc: st.tuples(st.integers(0, len(doc)), st.text(max_size=3)).map(
            lambda cut: doc[: cut[0]] + cut[1] + doc[cut[0] :]
        )
    ),
    encoding=st.sampled_from(["utf-8", "utf-8", "utf-16", "latin-1"]),
)
def test_any_file_loads_or_is_one_config_error(
    tmp_path_factory: pytest.TempPathFactory, text: str, encoding: str
) -> None:
    path = tmp_path_factory.mktemp("config") / "gateway.toml"
    path.write_bytes(text.encode(encoding, "replace"))
    loaded(path, ENVIRONMENT)


def test_a_directory_or_unreadable_config_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file: Is a directory"):
        load_settings(tmp_path, {"NANOGPT_API_KEY": TEAM_KEY})
    unreadable = tmp_path / "gateway.toml"
    unreadable.write_text("")
    unreadable.chmod(0)
    try:
        if os.access(unreadable, os.R_OK):  # root reads anything: nothing to refuse
            return
        with pytest.raises(ConfigError, match="cannot read the file: Permission denied"):
            load_settings(unreadable, {"NANOGPT_API_KEY": TEAM_KEY})
    finally:
        unreadable.chmod(0o600)
