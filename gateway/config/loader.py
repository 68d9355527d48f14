"""Loading the configuration: the TOML file and a few environment variables, validated once
into `Settings`. Any mistake stops start-up with a `ConfigError` that names the file and the
key. Pure: reads only the file and the environment mapping it is given.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.config.members import limits as resolve_limits
from gateway.config.members import member_defaults, patterns
from gateway.config.members import members as resolve_members
from gateway.config.schema import (
    DEFAULT_BASE_URL,
    POSTGRESQL_SCHEMES,
    SECTIONS,
    AdminSettings,
    AuthSettings,
    CatalogSettings,
    ConfigError,
    Database,
    DatabaseSettings,
    Demo,
    LimitSettings,
    MeteringSettings,
    PolicySettings,
    PriceSettings,
    ServerSettings,
    Settings,
    StateSettings,
    UpstreamSettings,
    shown_location,
)
from gateway.config.toml import read_toml, section
from gateway.keys import hash_key
from gateway.pricing import exact
from gateway.types import ANONYMOUS, PolicyRules, Price, Secret


def load_settings(
    path: str | Path | None,
    env: Mapping[str, str],
    *,
    host: str | None = None,
    port: int | None = None,
    demo: Demo | None = None,
    fallback_member: tuple[str, str] | None = None,
    team_key_required: bool = True,
    members_required: bool = True,
) -> Settings:
    """Read, validate and resolve the whole configuration, or raise `ConfigError`. Commands
    that only read or manage stored keys (`limits`, `keys`) need neither the team key nor a
    member, nor the members' keys (`members_required = False`): a member whose `key_env` is
    not set then has no key.

    `host`/`port` (command-line overrides) are applied before validation, so `--host 0.0.0.0`
    cannot sneak past the loopback rule of `auth.mode = "none"`. `fallback_member` (name, key)
    is the member of a zero-config start (`serve --demo`, `quickstart`) when none is configured.
    """
    where = str(path) if path is not None else "(defaults)"
    data = read_toml(Path(path)) if path is not None else {}
    try:
        return _build(
            data,
            env,
            host=host,
            port=port,
            demo=demo,
            fallback_member=fallback_member,
            team_key_required=team_key_required,
            members_required=members_required,
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_database(path: str | Path | None, env: Mapping[str, str]) -> Database:
    """Only where the database is (`[database]`, or `metering.ledger_path`), for commands that
    read the ledger and need no team key."""
    if path is None:
        return Database(MeteringSettings().ledger_path)
    try:
        data = read_toml(Path(path))
        tables = {name: data.get(name, {}) for name in ("metering", "database")}
        metering: MeteringSettings = section(MeteringSettings, tables["metering"], "metering")
        database: DatabaseSettings = section(DatabaseSettings, tables["database"], "database")
        return _database(database, metering, tables["metering"], env)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _build(
    data: dict[str, Any],
    env: Mapping[str, str],
    *,
    host: str | None,
    port: int | None,
    demo: Demo | None,
    fallback_member: tuple[str, str] | None,
    team_key_required: bool = True,
    members_required: bool = True,
) -> Settings:
    known = {*SECTIONS, "members", "pricing"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{key}: unknown key (expected one of {', '.join(sorted(known))})")
    sections = {name: section(cls, data.get(name, {}), name) for name, cls in SECTIONS.items()}
    server: ServerSettings = sections["server"]
    upstream: UpstreamSettings = sections["upstream"]
    auth: AuthSettings = sections["auth"]
    catalog: CatalogSettings = sections["catalog"]
    policy: PolicySettings = sections["policy"]
    metering: MeteringSettings = sections["metering"]
    limit_settings: LimitSettings = sections["limits"]
    admin: AdminSettings = sections["admin"]
    database = _database(sections["database"], metering, data.get("metering", {}), env)
    state: StateSettings = sections["state"]

    server = dataclasses.replace(
        server, host=host if host is not None else server.host, port=port or server.port
    )
    if "NANOGPT_BASE_URL" in env:
        upstream = dataclasses.replace(upstream, base_url=env["NANOGPT_BASE_URL"])
    if demo is not None:
        upstream = dataclasses.replace(upstream, base_url=demo.base_url)
    server = _check_server(server)
    _check_upstream(upstream)
    if catalog.ttl_seconds <= 0:
        raise ConfigError("catalog.ttl_seconds: must be greater than 0")
    _check_metering(metering, server)
    redis_password = _check_state(state, env)

    rules = PolicyRules(
        allow=patterns(policy.allow, "policy.allow"),
        deny=patterns(policy.deny, "policy.deny"),
        distillation=policy.distillation,
        max_prompt_usd_per_mtok=_non_negative(
            policy.max_prompt_usd_per_mtok, "policy.max_prompt_usd_per_mtok"
        ),
        max_completion_usd_per_mtok=_non_negative(
            policy.max_completion_usd_per_mtok, "policy.max_completion_usd_per_mtok"
        ),
        require_capabilities=policy.require_capabilities,
        subscription_only=catalog.source == "subscription",
        allow_paygo_override=policy.allow_paygo_override,
        allow_provider_selection=policy.allow_provider_selection,
    )
    limit_rules, default_limits = resolve_limits(limit_settings)
    members = resolve_members(
        data.get("members", []), env, rules, default_limits, keys_required=members_required
    )

    if auth.mode == "none" and not _is_loopback(server.host):
        raise ConfigError(
            f'auth.mode: "none" is only allowed on a loopback address, not server.host = '
            f'"{server.host}"; an open gateway would relay the team key to anyone who can reach it'
        )
    if (
        demo is None
        and not _is_loopback(server.host)
        and metering.metrics_token is None
        and metering.metrics_port is None
    ):
        raise ConfigError(
            "metering.metrics_token: /metrics shows member names, their spend and the "
            f'balance; with server.host = "{server.host}" set metrics_token (Prometheus sends '
            "it as a bearer token) or metrics_port (a port kept off the public network)"
        )
    if auth.mode == "keys" and not members and fallback_member is not None:
        name, key = fallback_member
        members = (member_defaults(name, hash_key(key), rules, default_limits),)
    if demo is not None:
        team_key = Secret(demo.team_key)
    else:
        team_key = Secret(env.get(upstream.api_key_env, "").strip())
        if not team_key and team_key_required:
            raise ConfigError(
                f"upstream.api_key_env: the environment variable {upstream.api_key_env} holding "
                "the team's NanoGPT key is not set (or run `nanogpt-gateway serve --demo`)"
            )
    if auth.mode == "keys" and not members and members_required:
        raise ConfigError(
            'members: at least one [[members]] entry is needed when auth.mode = "keys"'
        )

    return Settings(
        server=server,
        upstream=upstream,
        auth=auth,
        catalog=catalog,
        policy=rules,
        metering=metering,
        limits=limit_rules,
        pricing=_pricing(data.get("pricing", {})),
        members=members,
        anonymous=member_defaults(ANONYMOUS.name, "", rules, default_limits),
        team_key=team_key,
        database=database,
        state=state,
        redis_password=redis_password,
        admin_token_sha256=_admin_token(admin, env),
        demo=demo is not None,
    )


def _admin_token(admin: AdminSettings, env: Mapping[str, str]) -> str | None:
    """The digest of the admin API's token, if one is configured."""
    if admin.token_sha256 is not None and admin.token_env is not None:
        raise ConfigError("admin: set token_sha256 or token_env, not both")
    if admin.token_sha256 is not None:
        digest = admin.token_sha256.lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ConfigError(
                "admin.token_sha256: expected 64 hex digits "
                "(make one with `nanogpt-gateway hash-key TOKEN`)"
            )
        return digest
    if admin.token_env is None:
        return None
    token = env.get(admin.token_env, "").strip()
    if len(token) < 16:
        raise ConfigError(
            f"admin.token_env: environment variable {admin.token_env} is not set "
            "or shorter than 16 characters"
        )
    return hash_key(token)


def _database(
    database: DatabaseSettings,
    metering: MeteringSettings,
    metering_table: Mapping[str, Any],
    env: Mapping[str, str],
) -> Database:
    """One location for the ledger, keys and audit: `database.url` (or the variable
    `database.url_env` names), else `metering.ledger_path`, its older name."""
    if database.url is not None and database.url_env is not None:
        raise ConfigError("database: set url or url_env, not both")
    url = database.url
    where = "database.url"
    if database.url_env is not None:
        where = "database.url_env"
        url = env.get(database.url_env, "").strip()
        if not url:
            raise ConfigError(
                f"database.url_env: the environment variable {database.url_env} is not set"
            )
    if url is None:
        return Database(metering.ledger_path)
    if "ledger_path" in metering_table:
        raise ConfigError(f"{where}: set it or metering.ledger_path (its older name), not both")
    if url.startswith(POSTGRESQL_SCHEMES):
        if not urlsplit(url).hostname and "host=" not in url:
            raise ConfigError(f"{where}: a PostgreSQL URL needs a host: {shown_location(url)}")
        return Database(url, where)
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return Database(url.removeprefix("sqlite:///"), where)
    raise ConfigError(
        f"{where}: expected sqlite:///relative/path, sqlite:////absolute/path or "
        f"postgresql://user@host/db, got {shown_location(url)!r}"
    )


def _check_state(state: StateSettings, env: Mapping[str, str]) -> Secret:
    """`[state]` checked; the Redis password from `redis_password_env`, if any."""
    if state.redis_url is not None and not state.redis_url.startswith(REDIS_SCHEMES):
        raise ConfigError(
            "state.redis_url: expected redis://host:6379/0, rediss:// (TLS) or "
            f"unix:///path/to/socket, got {shown_location(state.redis_url)!r}"
        )
    if state.lease_ttl_seconds < 1:
        raise ConfigError("state.lease_ttl_seconds: must be 1 or more")
    if state.redis_password_env is None:
        return Secret("")
    if state.redis_url is None:
        raise ConfigError("state.redis_password_env: set state.redis_url too")
    password = env.get(state.redis_password_env, "")
    if not password:
        raise ConfigError(
            f"state.redis_password_env: the environment variable {state.redis_password_env} "
            "is not set"
        )
    return Secret(password)


def _check_server(server: ServerSettings) -> ServerSettings:
    """Checked, with `allowed_hosts` resolved: on a loopback address only the loopback names
    (a web page cannot then reach the gateway through a rebound DNS name)."""
    if not server.host:
        raise ConfigError("server.host: must not be empty")
    if not 0 < server.port < 65536:
        raise ConfigError(f"server.port: must be between 1 and 65535, got {server.port}")
    for i, origin in enumerate(server.cors_origins):
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ConfigError(
                f"server.cors_origins[{i}]: expected an origin like "
                f'"https://chat.example.com" (scheme and host, no path) or "*", got {origin!r}'
            )
    for i, name in enumerate(server.allowed_hosts):
        if name != "*" and not re.fullmatch(r"[A-Za-z0-9.:\[\]-]+", name):
            raise ConfigError(f"server.allowed_hosts[{i}]: not a host name: {name!r}")
    positive = ("max_header_bytes", "max_headers", "header_timeout_seconds", "body_timeout_seconds")
    for key in positive:
        if getattr(server, key) <= 0:
            raise ConfigError(f"server.{key}: must be greater than 0")
    if server.shutdown_grace_seconds < 0:
        raise ConfigError("server.shutdown_grace_seconds: must be 0 or more")
    hosts = server.allowed_hosts
    if not hosts:
        hosts = ("localhost", "127.0.0.1", "::1") if _is_loopback(server.host) else ("*",)
    return dataclasses.replace(server, allowed_hosts=hosts)


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _check_upstream(upstream: UpstreamSettings) -> None:
    parts = urlsplit(upstream.base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f'upstream.base_url: expected an http(s) URL like "{DEFAULT_BASE_URL}", '
            f"got {upstream.base_url!r}"
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError("upstream.base_url: must not carry credentials, a query or a fragment")
    for key in ("connect_timeout_seconds", "read_timeout_seconds"):
        if getattr(upstream, key) <= 0:
            raise ConfigError(f"upstream.{key}: must be greater than 0")
    if upstream.max_body_bytes <= 0:
        raise ConfigError("upstream.max_body_bytes: must be greater than 0")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", upstream.api_key_env):
        raise ConfigError(
            f"upstream.api_key_env: not an environment variable name: {upstream.api_key_env!r}"
        )


def _check_metering(metering: MeteringSettings, server: ServerSettings) -> None:
    if not metering.ledger_path.strip():
        raise ConfigError("metering.ledger_path: must not be empty")
    if metering.balance_poll_seconds < 0:
        raise ConfigError("metering.balance_poll_seconds: must be 0 (off) or more")
    if metering.metrics_token is not None and len(metering.metrics_token) < 16:
        raise ConfigError("metering.metrics_token: use at least 16 characters")
    port = metering.metrics_port
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"metering.metrics_port: must be between 1 and 65535, got {port}")
    if port == server.port:
        raise ConfigError(f"metering.metrics_port: must differ from server.port ({port})")


def _pricing(tables: Any) -> dict[str, Price]:
    """`[pricing."model-id"]` tables: USD per million tokens that override the catalog's."""
    if not isinstance(tables, dict):
        raise ConfigError('pricing: expected tables like [pricing."model-id"]')
    prices = {}
    for model_id, table in tables.items():
        where = f"pricing.{json.dumps(model_id)}"
        spec: PriceSettings = section(PriceSettings, table, where)
        for name in ("prompt", "completion"):
            _non_negative(getattr(spec, name), f"{where}.{name}")
        prices[model_id] = Price(exact(spec.prompt), exact(spec.completion))
    return prices


def _non_negative(value: float | None, where: str) -> float | None:
    if value is not None and value < 0:
        raise ConfigError(f"{where}: must not be negative, got {value}")
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
