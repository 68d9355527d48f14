"""The key store: keys issued by the `keys` command and the admin API, kept in the gateway's
database beside the usage ledger. `base` has the protocol and `StoredKey`; `sqlite` is the
backend; `open_keystore` picks it from the location.
"""

from __future__ import annotations

from pathlib import Path

from gateway.keystore.base import AuditEntry, KeyStore, KeyStoreError, NameTaken, UnknownKey
from gateway.keystore.sqlite import SQLiteKeyStore
from gateway.types import StoredKey

__all__ = [
    "AuditEntry",
    "KeyStore",
    "KeyStoreError",
    "NameTaken",
    "StoredKey",
    "UnknownKey",
    "open_keystore",
]


def open_keystore(location: str | Path) -> KeyStore:
    """The key store in the database at `location`, created or migrated, or `KeyStoreError`."""
    return SQLiteKeyStore(location)
