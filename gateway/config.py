"""Configuration: a TOML file and a few environment variables, validated once into `Settings`.

The section dataclasses below are the one list of settings: their fields are the keys the TOML
may hold, their annotations the types, their defaults the defaults. Any mistake stops start-up
with a `ConfigError` that names the file and the key. Pure: reads only what it is given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from gateway.pricing import exact
from gateway.types import ANONYMOUS, Distillation, Member, PolicyRules, Price, Secret

DEFAULT_BASE_URL = "https://nano-gpt.com/api"
CatalogSource = Literal["canonical", "subscription", "paid", "personalized"]
AuthMode = Literal["keys", "none"]


class ConfigError(ValueError):
    """A configuration mistake, phrased as one line that names where it is."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    access_log: bool = False
    """Off by default: the usage ledger already has a richer row for every request, and a log
    line per request is CPU on the hot path (bench/README.md)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamSettings:
    base_url: str = DEFAULT_BASE_URL
    api_key_env: str = "NANOGPT_API_KEY"
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 600.0
    max_body_bytes: int = 10 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSettings:
    mode: AuthMode = "keys"


@dataclass(frozen=True, slots=True, kw_only=True)
class CatalogSettings:
    source: CatalogSource = "canonical"
    ttl_seconds: float = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySettings:
    allow: tuple[str, ...] = ("*",)
    deny: tuple[str, ...] = ()
    distillation: Distillation = "any"
    max_prompt_usd_per_mtok: float | None = None
    max_completion_usd_per_mtok: float | None = None
    require_capabilities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class MeteringSettings:
    ledger_path: str = "./gateway-usage.db"
    inject_stream_usage: bool = True
    balance_poll_seconds: float = 300.0
    metrics_token: str | None = None
    metrics_port: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberSettings:
    name: str
    key_sha256: str | None = None
    key_env: str | None = None
    admin: bool = False
    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] = ()
    end_user_header: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceSettings:
    prompt: float
    completion: float


SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "upstream": UpstreamSettings,
    "auth": AuthSettings,
    "catalog": CatalogSettings,
    "policy": PolicySettings,
    "metering": MeteringSettings,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Demo:
    """Where the offline stand-in listens, and the team key it accepts (`serve --demo`)."""

    base_url: str
    team_key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    catalog: CatalogSettings = field(default_factory=CatalogSettings)
    policy: PolicyRules = field(default_factory=PolicyRules)
    metering: MeteringSettings = field(default_factory=MeteringSettings)
    pricing: Mapping[str, Price] = field(default_factory=dict)
    members: tuple[Member, ...] = ()
    team_key: Secret = field(default_factory=lambda: Secret(""))
    demo: bool = False


def hash_key(key: str) -> str:
    """The `key_sha256` of a member key: what the config stores instead of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


def load_settings(
    path: str | Path | None,
    env: Mapping[str, str],
    *,
    host: str | None = None,
    port: int | None = None,
    demo: Demo | None = None,
    fallback_member: tuple[str, str] | None = None,
) -> Settings:
    """Read, validate and resolve the whole configuration, or raise `ConfigError`.

    `host`/`port` (command-line overrides) are applied before validation, so `--host 0.0.0.0`
    cannot sneak past the loopback rule of `auth.mode = "none"`. `fallback_member` (name, key)
    is the member of a zero-config start (`serve --demo`, `quickstart`) when none is configured.
    """
    where = str(path) if path is not None else "(defaults)"
    data = _read_toml(Path(path)) if path is not None else {}
    try:
        return _build(data, env, host=host, port=port, demo=demo, fallback_member=fallback_member)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_metering(path: str | Path | None) -> MeteringSettings:
    """Only `[metering]`, for commands that read the ledger and need no team key."""
    if path is None:
        return MeteringSettings()
    try:
        metering: MeteringSettings = _section(
            MeteringSettings, _read_toml(Path(path)).get("metering", {}), "metering"
        )
        return metering
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _build(
    data: dict[str, Any],
    env: Mapping[str, str],
    *,
    host: str | None,
    port: int | None,
    demo: Demo | None,
    fallback_member: tuple[str, str] | None,
) -> Settings:
    known = {*SECTIONS, "members", "pricing"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{key}: unknown key (expected one of {', '.join(sorted(known))})")
    sections = {name: _section(cls, data.get(name, {}), name) for name, cls in SECTIONS.items()}
    server: ServerSettings = sections["server"]
    upstream: UpstreamSettings = sections["upstream"]
    auth: AuthSettings = sections["auth"]
    catalog: CatalogSettings = sections["catalog"]
    policy: PolicySettings = sections["policy"]
    metering: MeteringSettings = sections["metering"]

    server = dataclasses.replace(
        server, host=host if host is not None else server.host, port=port or server.port
    )
    if "NANOGPT_BASE_URL" in env:
        upstream = dataclasses.replace(upstream, base_url=env["NANOGPT_BASE_URL"])
    if demo is not None:
        upstream = dataclasses.replace(upstream, base_url=demo.base_url)
    _check_server(server)
    _check_upstream(upstream)
    if catalog.ttl_seconds <= 0:
        raise ConfigError("catalog.ttl_seconds: must be greater than 0")
    _check_metering(metering, server)

    rules = PolicyRules(
        allow=_patterns(policy.allow, "policy.allow"),
        deny=_patterns(policy.deny, "policy.deny"),
        distillation=policy.distillation,
        max_prompt_usd_per_mtok=_non_negative(
            policy.max_prompt_usd_per_mtok, "policy.max_prompt_usd_per_mtok"
        ),
        max_completion_usd_per_mtok=_non_negative(
            policy.max_completion_usd_per_mtok, "policy.max_completion_usd_per_mtok"
        ),
        require_capabilities=policy.require_capabilities,
        subscription_only=catalog.source == "subscription",
    )
    members = _members(data.get("members", []), env)

    if auth.mode == "none" and not _is_loopback(server.host):
        raise ConfigError(
            f'auth.mode: "none" is only allowed on a loopback address, not server.host = '
            f'"{server.host}"; an open gateway would relay the team key to anyone who can reach it'
        )
    if auth.mode == "keys" and not members and fallback_member is not None:
        name, key = fallback_member
        members = (Member(name=name, key_sha256=hash_key(key)),)
    if demo is not None:
        team_key = Secret(demo.team_key)
    else:
        team_key = Secret(env.get(upstream.api_key_env, "").strip())
        if not team_key:
            raise ConfigError(
                f"upstream.api_key_env: the environment variable {upstream.api_key_env} holding "
                "the team's NanoGPT key is not set (or run `nanogpt-gateway serve --demo`)"
            )
    if auth.mode == "keys" and not members:
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
        pricing=_pricing(data.get("pricing", {})),
        members=members,
        team_key=team_key,
        demo=demo is not None,
    )


def _section(cls: type, table: Any, where: str) -> Any:
    """Build one section dataclass from its TOML table, checking keys and types by annotation."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {_describe(table)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in table:
        if key not in hints:
            raise ConfigError(f"{where}.{key}: unknown key (expected one of {', '.join(names)})")
    values = {key: _coerce(value, hints[key], f"{where}.{key}") for key, value in table.items()}
    missing = [f.name for f in dataclasses.fields(cls) if _required(f) and f.name not in values]
    if missing:
        raise ConfigError(f"{where}.{missing[0]}: required")
    return cls(**values)


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = (arg for arg in args if arg is not type(None))
        return _coerce(value, inner, where)
    if origin is Literal:
        if value not in args:
            choices = " or ".join(f'"{a}"' for a in args)
            raise ConfigError(f"{where}: expected {choices}, got {_describe(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {_describe(value)}")
        return tuple(value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (str, int, bool) and type(value) is hint:
        return value
    expected = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    raise ConfigError(f"{where}: expected {expected[hint]}, got {_describe(value)}")


def _describe(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list"}
    name = kind.get(type(value), "table" if isinstance(value, dict) else type(value).__name__)
    return f"{name} {value!r}" if isinstance(value, str | int | float) else name


def _check_server(server: ServerSettings) -> None:
    if not server.host:
        raise ConfigError("server.host: must not be empty")
    if not 0 < server.port < 65536:
        raise ConfigError(f"server.port: must be between 1 and 65535, got {server.port}")


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


_PATTERN_CHARS = re.compile(r"[\x21-\x7e]+")


def _patterns(patterns: tuple[str, ...], where: str) -> tuple[str, ...]:
    """Glob patterns on model ids: printable, no spaces, brackets closed."""
    for i, pattern in enumerate(patterns):
        problem = None
        if not _PATTERN_CHARS.fullmatch(pattern):
            problem = "must be non-empty printable text without spaces"
        elif pattern.count("[") != pattern.count("]"):
            problem = "has an unclosed [...] group"
        if problem:
            raise ConfigError(f"{where}[{i}]: bad pattern {pattern!r}: {problem}")
    return patterns


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
        spec: PriceSettings = _section(PriceSettings, table, where)
        for name in ("prompt", "completion"):
            _non_negative(getattr(spec, name), f"{where}.{name}")
        prices[model_id] = Price(exact(spec.prompt), exact(spec.completion))
    return prices


def _non_negative(value: float | None, where: str) -> float | None:
    if value is not None and value < 0:
        raise ConfigError(f"{where}: must not be negative, got {value}")
    return value


def _members(tables: Any, env: Mapping[str, str]) -> tuple[Member, ...]:
    if not isinstance(tables, list):
        raise ConfigError("members: expected an array of tables ([[members]])")
    members: list[Member] = []
    seen_names: set[str] = set()
    seen_keys: dict[str, str] = {}
    for i, table in enumerate(tables):
        where = f"members[{i}]"
        spec: MemberSettings = _section(MemberSettings, table, where)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}", spec.name):
            raise ConfigError(f"{where}.name: use 1-64 letters, digits, '_', '.', '@' or '-'")
        if spec.name in seen_names or spec.name == ANONYMOUS.name:
            raise ConfigError(f"{where}.name: {spec.name!r} is already taken")
        if (spec.key_sha256 is None) == (spec.key_env is None):
            raise ConfigError(f"{where}: set exactly one of key_sha256 or key_env")
        if spec.key_sha256 is not None:
            digest = spec.key_sha256.lower()
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ConfigError(
                    f"{where}.key_sha256: expected 64 hex digits "
                    "(make one with `nanogpt-gateway hash-key KEY`)"
                )
        else:
            key = env.get(spec.key_env or "", "").strip()
            if not key:
                raise ConfigError(
                    f"{where}.key_env: environment variable {spec.key_env} is not set"
                )
            digest = hash_key(key)
        if digest in seen_keys:
            raise ConfigError(f"{where}: same key as member {seen_keys[digest]!r}")
        seen_names.add(spec.name)
        seen_keys[digest] = spec.name
        header = spec.end_user_header
        if header is not None and not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", header):
            raise ConfigError(f"{where}.end_user_header: not an HTTP header name: {header!r}")
        members.append(
            Member(
                name=spec.name,
                key_sha256=digest,
                admin=spec.admin,
                allow=_patterns(spec.allow, f"{where}.allow") if spec.allow is not None else None,
                deny=_patterns(spec.deny, f"{where}.deny"),
                end_user_header=header.lower() if header is not None else None,
            )
        )
    return tuple(members)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
