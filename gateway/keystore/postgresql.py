"""The key store in PostgreSQL: the `keys`, `key_audit` and `key_changes` tables of the
gateway's database (its schema is the ledger's, applied by `nanogpt-gateway migrate`). The only
module that asks PostgreSQL for keys, through a small connection pool shared by the threads
that call it. Each row keeps the change counter's value at its last change (`changed`), and
every change bumps the counter and writes its audit entry in one transaction, so every
replica's roster sees it at its next poll.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from gateway.config import shown_location
from gateway.keystore.base import AuditEntry, KeyStoreError, NameTaken, UnknownKey
from gateway.keystore.fields import applied, audited, settings_of
from gateway.keystore.rows import FIELDS, to_key, to_row
from gateway.ledger.base import LedgerError
from gateway.ledger.postgresql.schema import (
    CONNECT_TIMEOUT_SECONDS,
    CONNECTION_OPTIONS,
    check,
    connect,
    translated,
)
from gateway.ledger.postgresql.schema import version as schema_version
from gateway.types import StoredKey

Connection = psycopg.Connection[tuple[Any, ...]]
_SELECT = f"SELECT {', '.join(FIELDS)} FROM keys"
_ORDER = "ORDER BY created_at, seq"


class PostgreSQLKeyStore:
    """`KeyStore` on PostgreSQL. Opening checks the database answers and is at this code's
    schema version (`KeyStoreError` otherwise)."""

    def __init__(self, url: str, *, max_connections: int = 4) -> None:
        self.url = url
        self._where = shown_location(url)
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            open=False,
            timeout=CONNECT_TIMEOUT_SECONDS,
            kwargs=CONNECTION_OPTIONS,
            check=ConnectionPool.check_connection,
            name="gateway-keys",
        )
        try:  # a direct connection first: its error says why, the pool's only that it timed out
            with connect(url) as conn:
                check(conn, url)
            with self._errors("open"):
                self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except (KeyStoreError, LedgerError) as exc:
            self._pool.close()
            raise KeyStoreError(str(exc)) from None

    def version(self) -> int:
        with self._reading() as conn:
            return _counter(conn)

    def stored_keys(self) -> list[StoredKey]:
        with self._reading() as conn:
            return [to_key(row) for row in conn.execute(f"{_SELECT} {_ORDER}".encode())]

    def changed_since(self, version: int) -> tuple[int, list[StoredKey]]:
        with self._reading() as conn, conn.transaction():
            # one snapshot: the counter and the rows it counted
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            now = _counter(conn)
            query = f"{_SELECT} WHERE changed > %s {_ORDER}".encode()
            rows = conn.execute(query, (version,)).fetchall()
        return now, [to_key(row) for row in rows]

    def get(self, name: str) -> StoredKey:
        with self._reading() as conn:
            return _active(conn, name)

    def create(self, key: StoredKey, *, actor: str) -> None:
        with self._writing() as (conn, version):
            if conn.execute(
                "SELECT 1 FROM keys WHERE name = %s AND revoked_at IS NULL", (key.name,)
            ).fetchone():
                raise NameTaken(f"a key named {key.name!r} exists already")
            placeholders = ", ".join("%s" for _ in (*FIELDS, "changed"))
            conn.execute(
                f"INSERT INTO keys ({', '.join(FIELDS)}, changed) VALUES ({placeholders})".encode(),
                (*to_row(key), version),
            )
            _audit(conn, key.created_at, actor, "create", key, settings_of(key))

    def change(
        self, name: str, changes: Mapping[str, Any], *, action: str, actor: str, now: float
    ) -> StoredKey:
        with self._writing() as (conn, version):
            key = applied(_active(conn, name, lock=True), changes)
            assignments = ", ".join(f"{f} = %s" for f in (*FIELDS, "changed"))
            conn.execute(
                f"UPDATE keys SET {assignments} WHERE public_id = %s".encode(),
                (*to_row(key), version, key.public_id),
            )
            _audit(conn, now, actor, action, key, changes)
            return key

    def touch(self, used: Mapping[str, float]) -> None:
        rows = [(when, public_id, when) for public_id, when in used.items()]
        with self._errors("write"), self._pool.connection() as conn, conn.transaction():
            conn.cursor().executemany(
                "UPDATE keys SET last_used_at = %s WHERE public_id = %s "
                "AND (last_used_at IS NULL OR last_used_at < %s)",
                rows,
            )

    def audit(self) -> Sequence[AuditEntry]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT time, actor, action, target, public_id, fields FROM key_audit ORDER BY id"
            ).fetchall()
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
        self._pool.close()

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        with translated(self.url, f"cannot {doing} the key store", KeyStoreError):
            yield

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self._errors("read"), self._pool.connection() as conn:
            yield conn

    @contextmanager
    def _writing(self) -> Iterator[tuple[Connection, int]]:
        """One transaction that bumps the change counter, with the counter's new value (the
        changed row's `changed`), or nothing at all. The counter's row lock orders writers (a
        second `create` of one name waits, then finds the first's key), and a counter a reader
        sees is never ahead of a change it cannot see yet."""
        with self._errors("write"), self._pool.connection() as conn, conn.transaction():
            bumped = conn.execute(
                "UPDATE key_changes SET version = version + 1 RETURNING version"
            ).fetchone()
            assert bumped is not None
            yield conn, int(bumped[0])


def stored_keys(url: str) -> list[StoredKey]:
    """Every key in the database at `url`; none when it has no schema yet (for commands that
    only look: nothing is created). `KeyStoreError` when it cannot be read."""
    try:
        with connect(url) as conn:
            with translated(url, "cannot read the key store", KeyStoreError):
                if schema_version(conn) == 0:
                    return []
            check(conn, url)
            with translated(url, "cannot read the key store", KeyStoreError):
                return [to_key(row) for row in conn.execute(f"{_SELECT} {_ORDER}".encode())]
    except LedgerError as exc:
        raise KeyStoreError(str(exc)) from None


def _counter(conn: Connection) -> int:
    row = conn.execute("SELECT version FROM key_changes").fetchone()
    assert row is not None
    return int(row[0])


def _active(conn: Connection, name: str, *, lock: bool = False) -> StoredKey:
    query = f"{_SELECT} WHERE name = %s AND revoked_at IS NULL{' FOR UPDATE' if lock else ''}"
    row = conn.execute(query.encode(), (name,)).fetchone()
    if row is None:
        raise UnknownKey(f"no key named {name!r} (that is not revoked)")
    return to_key(row)


def _audit(
    conn: Connection,
    now: float,
    actor: str,
    action: str,
    key: StoredKey,
    changes: Mapping[str, Any],
) -> None:
    conn.execute(
        "INSERT INTO key_audit (time, actor, action, target, public_id, fields) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (now, actor, action, key.name, key.public_id, json.dumps(audited(changes))),
    )
