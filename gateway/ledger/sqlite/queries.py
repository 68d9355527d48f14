"""Reading the SQLite ledger: report totals by member, model, endpoint, end user, day or stored
key, and
the spend the limiter is rebuilt from. Read-only: a report never creates, migrates or locks
the ledger. Costs are summed as exact decimals.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from decimal import MAX_PREC, Context, Decimal
from pathlib import Path

from gateway.ledger.base import LedgerError
from gateway.ledger.sqlite.schema import MIGRATIONS, user_version
from gateway.reports import GROUPINGS, NO_KEY, ReportRow, report_rows

_GROUP_KEYS = {
    "member": "member",
    "model": f"COALESCE(model, '{NO_KEY}')",
    "endpoint": "endpoint",
    "end_user": f"COALESCE(end_user, '{NO_KEY}')",
    "day": "strftime('%Y-%m-%d', time, 'unixepoch')",
    "key": f"COALESCE('ngw-' || key_id || '-…', '{NO_KEY}')",  # as `keys list` shows a key
}
_EXACT = Context(prec=MAX_PREC)  # sums of decimal strings are exact at any magnitude


def totals(
    path: str | Path, *, since: float | None = None, until: float | None = None, by: str
) -> list[ReportRow]:
    """Per-group sums of the rows with `since <= time < until` (unix seconds, either open).

    Read-only: a report never creates, migrates or locks the ledger. Rows are ordered by cost,
    highest first (`day`: oldest day first).
    """
    if by not in _GROUP_KEYS:
        raise ValueError(f"cannot group by {by!r}: expected one of {', '.join(GROUPINGS)}")
    conditions = ["time >= :since"] if since is not None else []
    conditions += ["time < :until"] if until is not None else []
    query = f"""
        SELECT {_GROUP_KEYS[by]} AS key,
            COUNT(*),
            COALESCE(SUM(outcome = 'refused'), 0),
            COALESCE(SUM(unmetered IS NOT NULL), 0),
            COALESCE(SUM(prompt_tokens), 0),
            COALESCE(SUM(completion_tokens), 0),
            COALESCE(SUM(cached_prompt_tokens), 0),
            COALESCE(SUM(reasoning_tokens), 0),
            decimal_sum(cost_usd)
        FROM usage
        WHERE {" AND ".join(conditions) or "1"}
        GROUP BY key
    """
    with _reading(path) as conn:
        found = conn.execute(query, {"since": since, "until": until}).fetchall()
    return report_rows(found, by)


def spend(path: str | Path, *, since: float) -> list[tuple[str, str | None, Decimal]]:
    """What each (member, end user) has spent since `since` (unix seconds), estimates included:
    what the limiter counts against budgets, rebuilt at start-up."""
    query = """
        SELECT member, end_user, decimal_sum(cost_usd) FROM usage
        WHERE time >= :since AND cost_usd IS NOT NULL
        GROUP BY member, end_user
    """
    with _reading(path) as conn:
        found = conn.execute(query, {"since": since}).fetchall()
    return [(member, end_user, Decimal(cost)) for member, end_user, cost in found]


@contextlib.contextmanager
def _reading(path: str | Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a ledger of this schema version, or `LedgerError`."""
    file = Path(path)
    if not file.is_file():
        raise LedgerError(f"{path}: no usage ledger here (the gateway creates it when it starts)")
    try:
        conn = sqlite3.connect(file.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: cannot open the usage ledger: {exc}") from None
    try:
        # typeshed types every aggregate as int -> int; ours sums TEXT into TEXT
        conn.create_aggregate("decimal_sum", 1, _DecimalSum)  # type: ignore[arg-type]
        version = user_version(conn)
        if version != len(MIGRATIONS):
            raise LedgerError(
                f"{path}: the ledger has schema version {version}, this gateway reads version "
                f"{len(MIGRATIONS)}; start the matching gateway once to migrate it"
            )
        yield conn
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: cannot read the usage ledger: {exc}") from None
    finally:
        conn.close()


class _DecimalSum:
    """SQLite aggregate `decimal_sum(text)`: the exact sum of decimal strings, NULLs skipped."""

    def __init__(self) -> None:
        self.total = Decimal(0)

    def step(self, value: str | None) -> None:
        if value is not None:
            self.total = _EXACT.add(self.total, Decimal(value))

    def finalize(self) -> str:
        return str(self.total)
