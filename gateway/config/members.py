"""Members and their limits, validated: each `[[members]]` table with its key (as a hash),
its model patterns, its billing permissions and its limits (the `[limits]` defaults with its
own values). Pure: reads only the environment mapping it is given.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.config.schema import MEMBER_LIMITS, ConfigError, LimitSettings, MemberSettings
from gateway.config.toml import section
from gateway.keys import hash_key
from gateway.pricing import exact
from gateway.types import ANONYMOUS, LimitRules, Limits, Member, PolicyRules

_PATTERN_CHARS = re.compile(r"[\x21-\x7e]+")


def patterns(patterns: tuple[str, ...], where: str) -> tuple[str, ...]:
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


def member_name(name: str, where: str) -> str:
    """A member's name: it labels metrics and ledger rows, so it stays plain."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}", name):
        raise ConfigError(f"{where}: use 1-64 letters, digits, '_', '.', '@' or '-'")
    return name


def header_name(header: str, where: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", header):
        raise ConfigError(f"{where}: not an HTTP header name: {header!r}")
    return header


def limits(spec: LimitSettings) -> tuple[LimitRules, Limits]:
    """The team's rules and every member's default limits from `[limits]`."""
    try:
        ZoneInfo(spec.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f'limits.timezone: not an IANA time zone name like "Europe/Berlin": {spec.timezone!r}'
        ) from None
    if spec.default_max_tokens < 1:
        raise ConfigError("limits.default_max_tokens: must be at least 1")
    rules = LimitRules(
        timezone=spec.timezone,
        team_budget_usd_daily=_usd(spec.team_budget_usd_daily, "limits.team_budget_usd_daily"),
        team_budget_usd_monthly=_usd(
            spec.team_budget_usd_monthly, "limits.team_budget_usd_monthly"
        ),
        min_balance_usd=_usd(spec.min_balance_usd, "limits.min_balance_usd"),
        default_max_tokens=spec.default_max_tokens,
    )
    values: dict[str, Any] = {
        key: _limit(getattr(spec, key), f"limits.{key}") for key in MEMBER_LIMITS
    }
    return rules, Limits(**values)


def _limit(value: float | str | None, where: str) -> Decimal | int | None:
    """A limit's value as the limiter counts it: USD exactly, counts as integers."""
    if value is None or isinstance(value, str):
        return None
    if value < 0:
        raise ConfigError(f"{where}: must not be negative, got {value} (0 allows nothing)")
    return exact(value) if isinstance(value, float) else value


def _usd(value: float | None, where: str) -> Decimal | None:
    limit = _limit(value, where)
    assert not isinstance(limit, int)
    return limit


def _member_limits(spec: MemberSettings, defaults: Limits, where: str) -> Limits:
    values = {key: getattr(spec, key) for key in MEMBER_LIMITS}
    return with_limits(defaults, values, where)


def with_limits(defaults: Limits, values: Mapping[str, float | str | None], where: str) -> Limits:
    """The `[limits]` defaults with a member's own values: a number replaces the default,
    `"unlimited"` lifts it, `None` (or no entry) keeps it."""
    overrides: dict[str, Any] = {}
    for key, value in values.items():
        if value is not None:
            overrides[key] = _limit(value, f"{where}.{key}")
    return dataclasses.replace(defaults, **overrides)


def member_defaults(name: str, digest: str, rules: PolicyRules, limits: Limits) -> Member:
    return Member(
        name=name,
        key_sha256=digest,
        limits=limits,
        allow_paygo_override=rules.allow_paygo_override,
        allow_provider_selection=rules.allow_provider_selection,
    )


def members(
    tables: Any,
    env: Mapping[str, str],
    rules: PolicyRules,
    default_limits: Limits,
    *,
    keys_required: bool = True,
) -> tuple[Member, ...]:
    """The `[[members]]` tables, validated. Without `keys_required` (commands that need only
    the members' names and limits), a `key_env` not set leaves the member without a key."""
    if not isinstance(tables, list):
        raise ConfigError("members: expected an array of tables ([[members]])")
    members: list[Member] = []
    seen_names: set[str] = set()
    seen_keys: dict[str, str] = {}
    for i, table in enumerate(tables):
        where = f"members[{i}]"
        spec: MemberSettings = section(MemberSettings, table, where)
        member_name(spec.name, f"{where}.name")
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
            if not key and keys_required:
                raise ConfigError(
                    f"{where}.key_env: environment variable {spec.key_env} is not set"
                )
            digest = hash_key(key) if key else ""
        if digest and digest in seen_keys:
            raise ConfigError(f"{where}: same key as member {seen_keys[digest]!r}")
        seen_names.add(spec.name)
        seen_keys[digest] = spec.name
        header = spec.end_user_header
        if header is not None:
            header_name(header, f"{where}.end_user_header")
        members.append(
            Member(
                name=spec.name,
                key_sha256=digest,
                admin=spec.admin,
                allow=patterns(spec.allow, f"{where}.allow") if spec.allow is not None else None,
                deny=patterns(spec.deny, f"{where}.deny"),
                end_user_header=header.lower() if header is not None else None,
                limits=_member_limits(spec, default_limits, where),
                allow_paygo_override=_either(spec.allow_paygo_override, rules.allow_paygo_override),
                allow_provider_selection=_either(
                    spec.allow_provider_selection, rules.allow_provider_selection
                ),
            )
        )
    return tuple(members)


def _either(value: bool | None, default: bool) -> bool:
    return default if value is None else value
