"""The key store: keys issued by the `keys` command and the admin API, kept in the gateway's
database beside the usage ledger. `base` has the protocol and `StoredKey`; `sqlite` and
`postgresql` are the backends; `open_keystore` picks one from the location.
"""

from __future__ import annotations

import os
from pathlib import Path

from gateway.keystore.base import AuditEntry, KeyStore, KeyStoreError, NameTaken, UnknownKey
from gateway.keystore.sqlite import SQLiteKeyStore
from gateway.ledger import is_postgresql
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
    """The key store in the database at `location`, or `KeyStoreError`: a SQLite file is
    created or migrated, a PostgreSQL database must be at this code's schema version."""
    if is_postgresql(location):
        from gateway.keystore import postgresql  # psycopg only where it is used

        return postgresql.PostgreSQLKeyStore(str(location))
    return SQLiteKeyStore(location)


def stored_keys(location: str | Path) -> list[StoredKey]:
    """Every key in the store at `location`, none when there is no database there yet (no
    file; a PostgreSQL database with no schema), for commands that only look: nothing is
    created."""
    if is_postgresql(location):
        from gateway.keystore import postgresql

        return postgresql.stored_keys(str(location))
    if not os.path.lexists(location):
        return []
    store = open_keystore(location)
    try:
        return store.stored_keys()
    finally:
        store.close()
