"""Loading what another database holds into an empty PostgreSQL one (`nanogpt-gateway migrate
--from ... --to ...`): every table with COPY in one transaction, row order and ids kept, the
identity sequences moved past them, and the key store's change counter at least the source's.
A target that holds usage rows, keys or audit entries already is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import psycopg
from psycopg import sql

from gateway.config import shown_location
from gateway.ledger.base import TargetNotEmpty
from gateway.ledger.postgresql.schema import check, connect, translated

_IDENTITIES = (("usage", "id"), ("keys", "seq"), ("key_audit", "id"))


def load(
    url: str,
    tables: Iterable[tuple[str, Sequence[str], Iterator[tuple[object, ...]]]],
    key_version: int,
) -> dict[str, int]:
    """Copy `tables` ((name, columns, rows)) into the database at `url`, at this code's schema
    version, in one transaction; the rows copied per table. `TargetNotEmpty` if it has rows."""
    copied: dict[str, int] = {}
    with connect(url) as conn:
        check(conn, url)
        with translated(url, "copying failed"), conn.transaction():
            # Nothing writes meanwhile (a replica started too early waits, then finds rows).
            conn.execute("LOCK TABLE usage, keys, key_audit, key_changes IN EXCLUSIVE MODE")
            taken = [name for name, _ in _IDENTITIES if _exists(conn, name)]
            if taken:
                raise TargetNotEmpty(
                    f"{shown_location(url)}: the target holds {', '.join(taken)} rows already; "
                    "migrate --from copies into an empty database only"
                )
            for name, columns, rows in tables:
                statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    sql.Identifier(name), sql.SQL(", ").join(map(sql.Identifier, columns))
                )
                count = 0
                with conn.cursor().copy(statement) as copy:
                    for row in rows:
                        copy.write_row(row)
                        count += 1
                copied[name] = count
            for name, column in _IDENTITIES:
                conn.execute(
                    sql.SQL(
                        "SELECT setval(pg_get_serial_sequence(%s, %s), COALESCE(MAX({}), 0) + 1, "
                        "false) FROM {}"
                    ).format(sql.Identifier(column), sql.Identifier(name)),
                    (name, column),
                )
            conn.execute("UPDATE key_changes SET version = GREATEST(version, %s)", (key_version,))
    return copied


def _exists(conn: psycopg.Connection[tuple[object, ...]], table: str) -> bool:
    query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))
    row = conn.execute(query).fetchone()
    return bool(row and row[0])
