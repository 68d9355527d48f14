"""The SQLite usage ledger, the only package that imports sqlite3: `schema` (migrations,
opening for writing), `writer` (the batched writer thread), `queries` (reports and spend), `export`
(reading it all out for `migrate --from`).
"""

from gateway.ledger.sqlite.export import Export, Table, exported
from gateway.ledger.sqlite.queries import spend, totals
from gateway.ledger.sqlite.schema import MIGRATIONS, migrate, migrate_file, prepare
from gateway.ledger.sqlite.writer import MAX_QUEUED_ROWS, SQLiteLedger

__all__ = [
    "MAX_QUEUED_ROWS",
    "MIGRATIONS",
    "Export",
    "SQLiteLedger",
    "Table",
    "exported",
    "migrate",
    "migrate_file",
    "prepare",
    "spend",
    "totals",
]
