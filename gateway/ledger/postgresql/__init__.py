"""The PostgreSQL usage ledger (and the schema the key store shares), one of the two packages
that import psycopg: `schema` (migrations under an advisory lock, the version check,
connecting), `writer` (the batched writer thread), `queries` (reports and spend), `copy`
(loading what a SQLite database holds).
"""

from gateway.ledger.base import TargetNotEmpty
from gateway.ledger.postgresql.copy import load
from gateway.ledger.postgresql.queries import spend, totals
from gateway.ledger.postgresql.schema import MIGRATIONS, SCHEMA_VERSION, migrate, prepare
from gateway.ledger.postgresql.writer import PostgreSQLLedger

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "PostgreSQLLedger",
    "TargetNotEmpty",
    "load",
    "migrate",
    "prepare",
    "spend",
    "totals",
]
