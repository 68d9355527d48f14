"""What a key store is to the gateway, whatever database holds it: the audit entry, the protocol every backend implements, and the error they raise. No database library."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.types import StoredKey


class KeyStoreError(Exception):
    """The key store cannot be opened, read or written, or a change to it is impossible (an
    unknown or taken name); the message is one line a user can act on."""


class UnknownKey(KeyStoreError):
    """No key of that name (that is not revoked)."""


class NameTaken(KeyStoreError):
    """A key not revoked, or a config member, has that name already."""


SECRET_FIELDS = frozenset({"secret_sha256", "previous_sha256"})
"""Fields an audit entry or a listing never shows."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One change to the store: who (`cli:<os user>` or an admin credential's name), what
    (`create`, `update`, `disable`, `enable`, `revoke`, `rotate`), to which key, and the fields
    it set (never a secret)."""

    time: float
    actor: str
    action: str
    target: str
    public_id: str
    fields: Mapping[str, Any]


class KeyStore(Protocol):
    """Stored keys and their audit trail. Every change bumps `version()` and writes its audit
    entry in the same transaction, so a reader that polls the version sees every change."""

    def version(self) -> int: ...

    def stored_keys(self) -> list[StoredKey]:
        """Every key, revoked and expired ones too, oldest first."""
        ...

    def changed_since(self, version: int) -> tuple[int, list[StoredKey]]:
        """The change counter now, and the keys created or changed after it read `version`
        (all of them for `-1`), as one snapshot."""
        ...

    def get(self, name: str) -> StoredKey:
        """The key named `name` that is not revoked, or `UnknownKey`."""
        ...

    def create(self, key: StoredKey, *, actor: str) -> None:
        """Store a new key, or `KeyStoreError` if its name is taken by a key not revoked."""
        ...

    def change(
        self, name: str, changes: Mapping[str, Any], *, action: str, actor: str, now: float
    ) -> StoredKey:
        """Set `changes` (field -> value) on the key named `name` and return it changed."""
        ...

    def touch(self, used: Mapping[str, float]) -> None:
        """Record last-used times by public id (no version bump: nobody need reload)."""
        ...

    def audit(self) -> Sequence[AuditEntry]:
        """Every audit entry, oldest first."""
        ...

    def close(self) -> None: ...
