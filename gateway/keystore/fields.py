"""What a stored key may say, checked: the admin API's bodies and the `keys` command's flags
arrive here under the config's own field names, and leave as `StoredKey` values, or as a 400
naming the field. Also the other way: a stored key as a member, and as a listing. Pure.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.config import (
    MEMBER_LIMITS,
    ConfigError,
    header_name,
    member_name,
    patterns,
    with_limits,
)
from gateway.errors import InvalidRequest
from gateway.keys import shown
from gateway.keystore.base import SECRET_FIELDS
from gateway.types import ANONYMOUS, Limits, Member, PolicyRules, StoredKey

EDITABLE = (
    "expires_at",
    "disabled",
    "may_change_account",
    "allow",
    "deny",
    *MEMBER_LIMITS,
    "end_user_header",
    "note",
)
"""Fields `keys update` and `PATCH` may set; `name` and `role` are set at creation only."""
CREATABLE = ("name", "role", *EDITABLE)
MAX_NOTE_CHARS = 500
LATEST_EXPIRY = datetime(9999, 12, 31, tzinfo=UTC).timestamp()
"""An expiry later than this cannot be written as an RFC 3339 instant."""
_DURATION = re.compile(r"(\d{1,9})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_FORMS = "Ns, Nm, Nh or Nd (30d)"


def parse_duration(text: str) -> float:
    """Seconds of `Ns`, `Nm`, `Nh` or `Nd`, or `ValueError`."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration: expected {DURATION_FORMS}")
    return float(int(match[1]) * _UNIT_SECONDS[match[2]])


def parse_instant(text: str) -> float:
    """Unix seconds of an RFC 3339 instant with its offset (`2027-01-31T00:00:00Z`)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or "T" not in text.upper():
        raise ValueError(f"{text!r} is not an RFC 3339 instant like 2027-01-31T00:00:00Z")
    return when.timestamp()


def rfc3339(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_changes(data: Mapping[str, Any], *, creating: bool, now: float) -> dict[str, Any]:
    """`data` (field -> value, as the admin API's JSON or the command's flags give them) as
    `StoredKey` field values: a limit set to `None` returns to the `[limits]` default. 400
    (`InvalidRequest` naming the field) on an unknown field, a wrong type or a bad value."""
    allowed = CREATABLE if creating else EDITABLE
    changes: dict[str, Any] = {}
    for field, value in data.items():
        if field not in allowed:
            fixed = " (set at creation only)" if field in CREATABLE else ""
            raise _bad(field, f"unknown field{fixed}; expected one of {', '.join(allowed)}")
        try:
            changes[field] = _checked(field, value, now)
        except (ConfigError, ValueError, TypeError) as exc:
            raise _bad(field, str(exc)) from None
    if creating and "name" not in changes:
        raise _bad("name", "a key needs a name")
    return changes


def _checked(field: str, value: Any, now: float) -> Any:
    if field == "name":
        name = member_name(_text(value), "name")
        if name == ANONYMOUS.name:
            raise ValueError(f"{name!r} is reserved")
        return name
    if field == "role":
        if value not in ("member", "admin"):
            raise ValueError(f'expected "member" or "admin", got {value!r}')
        return value
    if field == "expires_at":
        if value is None:
            return None
        text = _text(value)
        if _DURATION.fullmatch(text.strip()):
            at = now + parse_duration(text)
        else:
            try:
                at = parse_instant(text)
            except ValueError:
                raise ValueError(
                    f"{text!r} is neither a duration: {DURATION_FORMS}, nor an RFC 3339 "
                    "instant like 2027-01-31T00:00:00Z"
                ) from None
        if at <= now:
            raise ValueError(f"{text} is not in the future")
        if at > LATEST_EXPIRY:
            raise ValueError(f"{text} is past 9999-12-31; leave the key without an expiry")
        return at
    if field in ("disabled", "may_change_account"):
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {value!r}")
        return value
    if field in ("allow", "deny"):
        if value is None and field == "allow":
            return None
        if not isinstance(value, list | tuple) or not all(isinstance(p, str) for p in value):
            raise TypeError(f"expected a list of model patterns, got {value!r}")
        return patterns(tuple(value), field)
    if field in MEMBER_LIMITS:
        return _limit(field, value)
    if field == "end_user_header":
        return None if value is None else header_name(_text(value), field).lower()
    text = _text(value)  # note
    if len(text) > MAX_NOTE_CHARS:
        raise ValueError(f"at most {MAX_NOTE_CHARS} characters")
    return text


def _limit(field: str, value: Any) -> float | int | str | None:
    if value is None or value == "unlimited":
        return value  # type: ignore[no-any-return]
    counts = "usd" not in field
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "a whole number" if counts else "a number of USD"
        raise TypeError(f'expected {kind}, "unlimited" or null, got {value!r}')
    if counts and not (isinstance(value, int) or value.is_integer()):
        raise TypeError(f"expected a whole number, got {value}")
    if value < 0 or value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"must be a finite number, 0 or more (0 allows nothing), got {value}")
    return int(value) if counts else float(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _bad(field: str, message: str) -> InvalidRequest:
    # The config's checks name the field already (`allow[0]: bad pattern ...`): not twice.
    named = message.startswith((f"{field}:", f"{field}["))
    text = message if named else f"{field}: {message}"
    return InvalidRequest(text, param=field, code="invalid_key_field")


def applied(key: StoredKey, changes: Mapping[str, Any]) -> StoredKey:
    """`key` with `changes` (as `key_changes` gives them, or any `StoredKey` field) set."""
    limits = dict(key.limits)
    fields: dict[str, Any] = {}
    for field, value in changes.items():
        if field in MEMBER_LIMITS:
            if value is None:
                limits.pop(field, None)
            else:
                limits[field] = value
        else:
            fields[field] = value
    return dataclasses.replace(key, **fields, limits=limits)


def member_of(key: StoredKey, defaults: Limits, rules: PolicyRules) -> Member:
    """The member a stored key acts as, under the config's `[limits]` and `[policy]`."""
    return Member(
        name=key.name,
        key_sha256=key.secret_sha256,
        admin=key.may_change_account,
        allow=key.allow,
        deny=key.deny,
        end_user_header=key.end_user_header,
        limits=with_limits(defaults, key.limits, key.name),
        allow_paygo_override=rules.allow_paygo_override,
        allow_provider_selection=rules.allow_provider_selection,
    )


def described(key: StoredKey, now: float) -> dict[str, Any]:
    """A key as listings show it, under the config's field names: never a secret, limits the
    key's own (`null`: the `[limits]` default), instants as RFC 3339."""
    return {
        "name": key.name,
        "public_id": key.public_id,
        "key": shown(key.public_id),
        "role": key.role,
        "status": key.status(now),
        "created_at": rfc3339(key.created_at),
        "expires_at": rfc3339(key.expires_at),
        "last_used_at": rfc3339(key.last_used_at),
        "rotated_at": rfc3339(key.rotated_at),
        "revoked_at": rfc3339(key.revoked_at),
        "may_change_account": key.may_change_account,
        "allow": list(key.allow) if key.allow is not None else None,
        "deny": list(key.deny),
        **{field: key.limits.get(field) for field in MEMBER_LIMITS},
        "end_user_header": key.end_user_header,
        "note": key.note,
    }


def settings_of(key: StoredKey) -> dict[str, Any]:
    """What a new key was created with, under the config's field names: the fields that
    differ from a bare key's."""
    bare = StoredKey(public_id="", name="", secret_sha256="", created_at=0)
    fields: dict[str, Any] = {"name": key.name, "role": key.role}
    for field in EDITABLE:
        if field not in MEMBER_LIMITS and getattr(key, field) != getattr(bare, field):
            fields[field] = getattr(key, field)
    return {**fields, **key.limits}


def audited(changes: Mapping[str, Any]) -> dict[str, Any]:
    """What an audit entry says a change set: instants as RFC 3339, never a secret."""
    entry: dict[str, Any] = {}
    for field, value in changes.items():
        if field in SECRET_FIELDS:
            entry["secret"] = "replaced"
        elif field.endswith(("_at", "_until")) and isinstance(value, float | int):
            entry[field] = rfc3339(value)
        elif isinstance(value, tuple):
            entry[field] = list(value)
        else:
            entry[field] = value
    return entry


def clashing_name(members: Sequence[Member], stored: Sequence[StoredKey]) -> str | None:
    """Why a config cannot run beside the store's keys: a member named as a stored key
    (which would then be two members at once), or `None`."""
    taken = {key.name for key in stored if key.revoked_at is None}
    for i, member in enumerate(members):
        if member.name in taken:
            return (
                f"members[{i}].name: {member.name!r} is the name of a stored key "
                "(`nanogpt-gateway keys list`); rename the member or revoke the key"
            )
    return None


def everyones_limits(
    members: Sequence[Member], stored: Sequence[StoredKey], defaults: Limits, rules: PolicyRules
) -> list[tuple[str, Limits]]:
    """Each config member's limits, then each stored key's that is not revoked (a key named
    as a config member is not one: the config wins), for the `limits` reports."""
    named = [(m.name, m.limits) for m in members]
    configured = {name for name, _ in named}
    return named + [
        (key.name, member_of(key, defaults, rules).limits)
        for key in stored
        if key.revoked_at is None and key.name not in configured
    ]
