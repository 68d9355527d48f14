"""The key store: keys issued by the `keys` command and the admin API, kept in the gateway's
database beside the usage ledger. `base` has the protocol and `StoredKey`; `sqlite` is the
backend; `open_keystore` picks it from the location.
"""

from __future__ import annotations

import os
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
    "stored_keys",
]


def open_keystore(location: str | Path) -> KeyStore:
    """The key store in the database at `location`, created or migrated, or `KeyStoreError`."""
    return SQLiteKeyStore(location)


def stored_keys(location: str | Path) -> list[StoredKey]:
    """Every key in the store at `location`, none when there is no database there yet (for
    commands that only look: nothing is created)."""
    if not os.path.lexists(location):
        return []
    store = open_keystore(location)
    try:
        return store.stored_keys()
    finally:
        store.close()
