"""The SQLite database's schema (the usage ledger, and the key store beside it): its
versioned migrations (`PRAGMA user_version`) and opening a file for writing, created or
migrated. A newer database than this code knows is refused.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from gateway.ledger.base import LedgerError

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: the usage table
    """
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        request_id TEXT NOT NULL,
        member TEXT NOT NULL,
        end_user TEXT,
        model TEXT,
        endpoint TEXT NOT NULL,
        status INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        stream INTEGER NOT NULL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        cached_prompt_tokens INTEGER,
        reasoning_tokens INTEGER,
        cost_usd TEXT,
        unmetered TEXT,
        duration_seconds REAL NOT NULL,
        ttft_seconds REAL
    );
    CREATE INDEX usage_time ON usage (time);
    """,
    # 1 -> 2: the path forwarded, and whether the cost is what NanoGPT charged or the catalog's
    """
    ALTER TABLE usage ADD COLUMN path TEXT;
    ALTER TABLE usage ADD COLUMN cost_source TEXT;
    """,
    # 2 -> 3: the limit that refused a request
    """
    ALTER TABLE usage ADD COLUMN limit_name TEXT;
    """,
    # 3 -> 4: the key store (gateway.keystore.sqlite), its audit trail and change counter, and
    # the stored key (public id) each request came with
    """
    ALTER TABLE usage ADD COLUMN key_id TEXT;
    CREATE TABLE keys (
        public_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        secret_sha256 TEXT NOT NULL,
        created_at REAL NOT NULL,
        role TEXT NOT NULL,
        expires_at REAL,
        disabled INTEGER NOT NULL,
        revoked_at REAL,
        rotated_at REAL,
        previous_sha256 TEXT,
        previous_valid_until REAL,
        may_change_account INTEGER NOT NULL,
        allow TEXT,
        deny TEXT NOT NULL,
        limits TEXT NOT NULL,
        end_user_header TEXT,
        note TEXT NOT NULL,
        last_used_at REAL,
        changed INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX keys_name_not_revoked ON keys (name) WHERE revoked_at IS NULL;
    CREATE INDEX keys_changed ON keys (changed);
    CREATE TABLE key_audit (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        public_id TEXT NOT NULL,
        fields TEXT NOT NULL
    );
    CREATE TABLE key_changes (one INTEGER PRIMARY KEY CHECK (one = 1), version INTEGER NOT NULL);
    INSERT INTO key_changes VALUES (1, 0);
    """,
)
"""Migration `i` brings a ledger from schema version `i` to `i + 1`. Append only, never edit."""

_BUSY_TIMEOUT_SECONDS = 5.0


def migrate(conn: sqlite3.Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the database up to `len(migrations)`, one transaction per step, and return the
    version. A newer database than this code knows is refused rather than touched."""
    where = _filename(conn)
    target = len(migrations)
    version = user_version(conn)
    if version > target:
        raise LedgerError(
            f"{where}: the ledger has schema version {version}, but this gateway knows only "
            f"up to {target}; upgrade the gateway rather than let it rewrite newer history"
        )
    for step in range(version, target):
        script = (
            f"BEGIN IMMEDIATE;\n{migrations[step]};\nPRAGMA user_version = {step + 1};\nCOMMIT;"
        )
        try:
            conn.executescript(script)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if user_version(conn) > step:  # another process migrated it meanwhile
                continue
            raise LedgerError(
                f"{where}: migration to schema version {step + 1} failed: {exc}"
            ) from None
    return target


def prepare(path: str | Path) -> None:
    """Create or migrate the ledger at `path` and close it again, or raise `LedgerError`: the
    command checks the ledger before it serves, so a bad path stops start-up with one line."""
    open_for_writing(Path(path)).close()


def migrate_file(path: str | Path) -> tuple[int, int]:
    """Create or migrate the ledger at `path`: (schema version before, after)."""
    file = Path(path)
    before = 0
    if file.is_file():
        try:
            with contextlib.closing(
                sqlite3.connect(file.resolve().as_uri() + "?mode=ro", uri=True)
            ) as conn:
                before = user_version(conn)
        except sqlite3.Error as exc:
            raise LedgerError(f"{path}: not a usable usage ledger: {exc}") from None
    open_for_writing(file).close()
    return before, len(MIGRATIONS)


def open_for_writing(path: Path) -> sqlite3.Connection:
    if not path.parent.is_dir():
        raise LedgerError(f"{path}: directory {path.parent} does not exist")
    try:
        # Autocommit mode: transactions are explicit BEGIN/COMMIT. Only the writer thread uses
        # the connection after start-up, hence check_same_thread=False.
        conn = sqlite3.connect(
            path, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: cannot open the usage ledger: {exc}") from None
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # durable across crashes in WAL mode
        migrate(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise LedgerError(f"{path}: not a usable usage ledger: {exc}") from None
    except LedgerError:
        conn.close()
        raise
    return conn


def user_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def _filename(conn: sqlite3.Connection) -> str:
    for _, name, filename in conn.execute("PRAGMA database_list"):
        if name == "main":
            return str(filename) or ":memory:"
    return ":memory:"
