"""The key store in SQLite: the `keys`, `key_audit` and `key_changes` tables of the gateway's
database (the ledger's file; its schema migrates both). The only module that asks SQLite for
keys; one connection, used by one thread at a time. Each row keeps the change counter's value
at its last change (`changed`), so a reader asks only for what changed since it last looked.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.keystore.base import AuditEntry, KeyStoreError, NameTaken, UnknownKey
from gateway.keystore.fields import applied, audited, settings_of
from gateway.keystore.rows import FIELDS, to_key, to_row
from gateway.ledger.base import LedgerError
from gateway.ledger.sqlite.schema import open_for_writing
from gateway.types import StoredKey

_FIELDS = FIELDS
_SELECT = f"SELECT {', '.join(_FIELDS)} FROM keys"


class SQLiteKeyStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._conn = open_for_writing(self.path)
        except LedgerError as exc:
            raise KeyStoreError(str(exc)) from None
        self._lock = threading.Lock()

    def version(self) -> int:
        with self._reading() as conn:
            version: int = conn.execute("SELECT version FROM key_changes").fetchone()[0]
            return version

    def stored_keys(self) -> list[StoredKey]:
        with self._reading() as conn:
            return [to_key(row) for row in conn.execute(f"{_SELECT} ORDER BY created_at, rowid")]

    def changed_since(self, version: int) -> tuple[int, list[StoredKey]]:
        with self._reading() as conn:
            conn.execute("BEGIN")  # one snapshot: the counter and the rows it counted
            try:
                now: int = conn.execute("SELECT version FROM key_changes").fetchone()[0]
                rows = conn.execute(
                    f"{_SELECT} WHERE changed > ? ORDER BY created_at, rowid", (version,)
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            return now, [to_key(row) for row in rows]

    def get(self, name: str) -> StoredKey:
        with self._reading() as conn:
            return _active(conn, name)

    def create(self, key: StoredKey, *, actor: str) -> None:
        with self._writing() as (conn, version):
            if conn.execute(
                "SELECT 1 FROM keys WHERE name = ? AND revoked_at IS NULL", (key.name,)
            ).fetchone():
                raise NameTaken(f"a key named {key.name!r} exists already")
            placeholders = ", ".join("?" for _ in (*_FIELDS, "changed"))
            conn.execute(
                f"INSERT INTO keys ({', '.join(_FIELDS)}, changed) VALUES ({placeholders})",
                (*to_row(key), version),
            )
            _audit(conn, key.created_at, actor, "create", key, settings_of(key))

    def change(
        self, name: str, changes: Mapping[str, Any], *, action: str, actor: str, now: float
    ) -> StoredKey:
        with self._writing() as (conn, version):
            key = applied(_active(conn, name), changes)
            assignments = ", ".join(f"{f} = ?" for f in (*_FIELDS, "changed"))
            conn.execute(
                f"UPDATE keys SET {assignments} WHERE public_id = ?",
                (*to_row(key), version, key.public_id),
            )
            _audit(conn, now, actor, action, key, changes)
            return key

    def touch(self, used: Mapping[str, float]) -> None:
        rows = [(when, public_id, when) for public_id, when in used.items()]
        with self._lock, _errors(self.path, "write"):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "UPDATE keys SET last_used_at = ? WHERE public_id = ? "
                    "AND (last_used_at IS NULL OR last_used_at < ?)",
                    rows,
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def audit(self) -> Sequence[AuditEntry]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT time, actor, action, target, public_id, fields FROM key_audit ORDER BY id"
            )
            return [
                AuditEntry(
                    time=time,
                    actor=actor,
                    action=action,
                    target=target,
                    public_id=public_id,
                    fields=json.loads(fields),
                )
                for time, actor, action, target, public_id, fields in rows
            ]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _errors(self.path, "read"):
            yield self._conn

    @contextmanager
    def _writing(self) -> Iterator[tuple[sqlite3.Connection, int]]:
        """One transaction that bumps the change counter, with the counter's new value (the
        changed row's `changed`), or nothing at all."""
        with self._lock, _errors(self.path, "write"):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("UPDATE key_changes SET version = version + 1")
                version: int = self._conn.execute("SELECT version FROM key_changes").fetchone()[0]
                yield self._conn, version
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")


@contextmanager
def _errors(path: Path, doing: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise KeyStoreError(f"{path}: cannot {doing} the key store: {exc}") from None


def _active(conn: sqlite3.Connection, name: str) -> StoredKey:
    row = conn.execute(f"{_SELECT} WHERE name = ? AND revoked_at IS NULL", (name,)).fetchone()
    if row is None:
        raise UnknownKey(f"no key named {name!r} (that is not revoked)")
    return to_key(row)


def _audit(
    conn: sqlite3.Connection,
    now: float,
    actor: str,
    action: str,
    key: StoredKey,
    changes: Mapping[str, Any],
) -> None:
    conn.execute(
        "INSERT INTO key_audit (time, actor, action, target, public_id, fields) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (now, actor, action, key.name, key.public_id, json.dumps(audited(changes))),
    )
