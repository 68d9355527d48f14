"""What an admin does to keys, the same from the `keys` command and the admin API: create,
update, disable / enable, revoke, rotate. Each checks its input (`fields`), changes the store
in one transaction with its audit entry, and returns the key; the new secret is returned once,
never stored. No database library: any `KeyStore` will do.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from gateway.errors import InvalidRequest
from gateway.keys import hash_key, issued_key, new_public_id, new_secret
from gateway.keystore.base import KeyStore, NameTaken
from gateway.keystore.fields import applied, key_changes
from gateway.types import StoredKey

MAX_GRACE_SECONDS = 30 * 86400.0


def create(
    store: KeyStore,
    data: Mapping[str, Any],
    *,
    actor: str,
    now: float,
    config_names: Collection[str],
) -> tuple[StoredKey, str]:
    """A new key from `data` (`name`, `role` and the editable fields), and the key itself."""
    fields = key_changes(data, creating=True, now=now)
    if fields["name"] in config_names:
        raise NameTaken(f"{fields['name']!r} is a member in the config file; pick another name")
    public_id, secret = new_public_id(), new_secret()
    key = issued_key(public_id, secret)
    stored = StoredKey(
        public_id=public_id, name=fields.pop("name"), secret_sha256=hash_key(key), created_at=now
    )
    stored = applied(stored, fields)
    store.create(stored, actor=actor)
    return stored, key


def update(
    store: KeyStore, name: str, data: Mapping[str, Any], *, actor: str, now: float
) -> StoredKey:
    """The fields `data` names set, in one transaction; nothing named changes nothing and is
    not audited. Setting only `disabled` is audited as `disable` / `enable`."""
    changes = key_changes(data, creating=False, now=now)
    if not changes:
        return store.get(name)
    action = "update"
    if changes.keys() == {"disabled"}:
        action = "disable" if changes["disabled"] else "enable"
    return store.change(name, changes, action=action, actor=actor, now=now)


def set_disabled(
    store: KeyStore, name: str, disabled: bool, *, actor: str, now: float
) -> StoredKey:
    return update(store, name, {"disabled": disabled}, actor=actor, now=now)


def revoke(store: KeyStore, name: str, *, actor: str, now: float) -> StoredKey:
    return store.change(name, {"revoked_at": now}, action="revoke", actor=actor, now=now)


def rotate(
    store: KeyStore, name: str, grace_seconds: float, *, actor: str, now: float
) -> tuple[StoredKey, str]:
    """A new secret for the key named `name` (same public id, name, limits and history); the
    old one keeps working for `grace_seconds`, then gets a 401 that says it was rotated."""
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise InvalidRequest(
            f"grace_seconds: must be between 0 and {MAX_GRACE_SECONDS:.0f} (30 days), "
            f"got {grace_seconds}",
            param="grace_seconds",
            code="invalid_key_field",
        )
    current = store.get(name)
    key = issued_key(current.public_id, new_secret())
    changes = {  # the old secret kept past its grace too, so a client using it is told why
        "secret_sha256": hash_key(key),
        "previous_sha256": current.secret_sha256,
        "previous_valid_until": now + grace_seconds,
        "rotated_at": now,
    }
    return store.change(name, changes, action="rotate", actor=actor, now=now), key
