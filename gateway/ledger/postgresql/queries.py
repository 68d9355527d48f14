"""Reading the PostgreSQL ledger: report totals by member, model, endpoint, end user, day or
stored key, and the spend the limiter is rebuilt from, as the SQLite queries give them.
Read-only, and never migrates: a database at another schema version is refused. Costs are
NUMERIC, summed exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg

from gateway.ledger.postgresql.schema import check, connect, translated
from gateway.reports import GROUPINGS, NO_KEY, ReportRow, report_rows

_GROUP_KEYS = {
    "member": "member",
    "model": f"COALESCE(model, '{NO_KEY}')",
    "endpoint": "endpoint",
    "end_user": f"COALESCE(end_user, '{NO_KEY}')",
    "day": "to_char(to_timestamp(time) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "key": f"COALESCE('ngw-' || key_id || '-…', '{NO_KEY}')",  # as `keys list` shows a key
}


def totals(
    url: str, *, since: float | None = None, until: float | None = None, by: str
) -> list[ReportRow]:
    """Per-group sums of the rows with `since <= time < until` (unix seconds, either open),
    ordered by cost, highest first (`day`: oldest day first)."""
    if by not in _GROUP_KEYS:
        raise ValueError(f"cannot group by {by!r}: expected one of {', '.join(GROUPINGS)}")
    conditions = ["time >= %(since)s"] if since is not None else []
    conditions += ["time < %(until)s"] if until is not None else []
    query = f"""
        SELECT {_GROUP_KEYS[by]} AS key,
            COUNT(*),
            COUNT(*) FILTER (WHERE outcome = 'refused'),
            COUNT(unmetered),
            COALESCE(SUM(prompt_tokens), 0)::BIGINT,
            COALESCE(SUM(completion_tokens), 0)::BIGINT,
            COALESCE(SUM(cached_prompt_tokens), 0)::BIGINT,
            COALESCE(SUM(reasoning_tokens), 0)::BIGINT,
            COALESCE(SUM(cost_usd), 0)
        FROM usage
        WHERE {" AND ".join(conditions) or "TRUE"}
        GROUP BY 1
    """
    with _reading(url) as conn:
        found: list[Any] = conn.execute(query.encode(), {"since": since, "until": until}).fetchall()
    return report_rows(found, by)


def spend(url: str, *, since: float) -> list[tuple[str, str | None, Decimal]]:
    """What each (member, end user) has spent since `since` (unix seconds), estimates included."""
    query = b"""
        SELECT member, end_user, SUM(cost_usd) FROM usage
        WHERE time >= %s AND cost_usd IS NOT NULL
        GROUP BY member, end_user
    """
    with _reading(url) as conn:
        found: list[Any] = conn.execute(query, (since,)).fetchall()
    return [(member, end_user, Decimal(cost)) for member, end_user, cost in found]


@contextlib.contextmanager
def _reading(url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A read-only connection to a database at this schema version, or `LedgerError`."""
    with connect(url) as conn:
        conn.read_only = True
        check(conn, url)
        with translated(url, "cannot read the usage ledger"):
            yield conn
