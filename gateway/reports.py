"""The `usage` and `limits` commands' words: when a period starts or ends, and how their
reports read.

Pure, so the report's look is tested without a database: `ledger.totals()` fills `ReportRow`s,
this module parses `--since`/`--until` and renders rows as a table, CSV or JSON. No sqlite3.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from gateway.budgets import WINDOWS, budget_of, period
from gateway.limits.base import Limiter, rfc3339
from gateway.types import LimitRules, Limits

GROUPINGS = ("member", "model", "endpoint", "day", "end_user", "key")
"""What a report may be grouped by: the `--by` choices."""

NO_KEY = "(none)"
"""The key of rows whose model or end user was never known (a refused request, no `user`)."""

TOTAL_KEY = "TOTAL"

WHEN_FORMS = (
    "a duration back from now (30m, 12h, 7d, 2w), "
    "a UTC date (2026-11-01) or an ISO datetime (2026-11-01T12:00, naive means UTC, "
    "or with Z or +02:00)"
)
_DURATION = re.compile(r"(\d+)([mhdw])")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_TABLE_DECIMALS = 6


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportRow:
    """One group of a usage report. `unmetered` counts requests that reached NanoGPT but whose
    cost is unknown (no usage came back, or no price), so they are missing from the sums."""

    key: str
    requests: int = 0
    refused: int = 0
    unmetered: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = Decimal(0)


def report_rows(found: Iterable[Sequence[Any]], by: str) -> list[ReportRow]:
    """A ledger query's groups (key, requests, refused, unmetered, prompt, completion,
    cached, reasoning tokens, cost) as report rows: by day in date order, else the costliest
    first."""
    rows = [
        ReportRow(
            key=key,
            requests=requests,
            refused=refused,
            unmetered=unmetered,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_prompt_tokens=cached,
            reasoning_tokens=reasoning,
            cost_usd=Decimal(cost),
        )
        for key, requests, refused, unmetered, prompt, completion, cached, reasoning, cost in found
    ]
    if by == "day":
        return sorted(rows, key=lambda r: r.key)
    return sorted(rows, key=lambda r: (-r.cost_usd, r.key))


def parse_when(text: str, *, now: datetime) -> float:
    """Unix seconds of a `--since`/`--until` value: a duration back from `now` or an ISO date or
    datetime. A naive `now` or datetime is taken as UTC; anything else raises `ValueError`."""
    value = text.strip()
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    duration = _DURATION.fullmatch(value)
    if duration:
        seconds = int(duration[1]) * _UNIT_SECONDS[duration[2]]
        try:
            return (now - timedelta(seconds=seconds)).timestamp()
        except OverflowError:
            raise ValueError(f"{text!r} reaches back before the year 1") from None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: expected {WHEN_FORMS}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def total(rows: Sequence[ReportRow]) -> ReportRow:
    """The sum of all rows, exact in cost, keyed `TOTAL`."""
    return ReportRow(
        key=TOTAL_KEY,
        requests=sum(r.requests for r in rows),
        refused=sum(r.refused for r in rows),
        unmetered=sum(r.unmetered for r in rows),
        prompt_tokens=sum(r.prompt_tokens for r in rows),
        completion_tokens=sum(r.completion_tokens for r in rows),
        cached_prompt_tokens=sum(r.cached_prompt_tokens for r in rows),
        reasoning_tokens=sum(r.reasoning_tokens for r in rows),
        cost_usd=sum((r.cost_usd for r in rows), Decimal(0)),
    )


def format_table(rows: Sequence[ReportRow], by: str) -> str:
    """Aligned columns for a terminal, with a TOTAL line; costs rounded to 6 decimals (half even).
    No trailing newline."""
    if not rows:
        return "no requests in this period"
    header = [by, "requests", "refused", "unmetered", "prompt tok", "completion tok"]
    header += ["cached", "reasoning", "cost USD"]
    every = [*rows, total(rows)]
    cells = [header, *(_table_cells(r) for r in every)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        first = values[0].ljust(widths[0])
        rest = (v.rjust(w) for v, w in zip(values[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    lines = [line(header), *(line(c) for c in cells[1:-1])]
    lines += ["-" * len(lines[0]), line(cells[-1])]
    if any(rounded(r.cost_usd) != r.cost_usd for r in every):
        lines.append(f"(costs rounded to {_TABLE_DECIMALS} decimals; csv and json are exact)")
    return "\n".join(lines)


def format_csv(rows: Sequence[ReportRow], by: str) -> str:
    """One header line and one line per row, cost exact in plain decimal notation; no TOTAL line,
    so a spreadsheet can sum the columns itself. No trailing newline."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([by, *_FIELDS])
    for row in rows:
        record = _record(row)
        writer.writerow([row.key, *(record[f] for f in _FIELDS)])
    return out.getvalue().rstrip("\n")


def format_json(rows: Sequence[ReportRow], by: str) -> str:
    return json.dumps(usage_document(rows, by), indent=2)


def usage_document(rows: Sequence[ReportRow], by: str) -> dict[str, Any]:
    """`{"by": ..., "rows": [...], "total": {...}}`, each row keyed by the grouping's name and
    every cost an exact decimal string (a JSON number would be read back as a float): the
    `usage` command's JSON and the admin API's `/admin/v1/usage`."""
    return {
        "by": by,
        "rows": [{by: row.key, **_record(row)} for row in rows],
        "total": _record(total(rows)),
    }


_FIELDS = (
    "requests",
    "refused",
    "unmetered",
    "prompt_tokens",
    "completion_tokens",
    "cached_prompt_tokens",
    "reasoning_tokens",
    "cost_usd",
)


def _record(row: ReportRow) -> dict[str, Any]:
    values: dict[str, Any] = {f: getattr(row, f) for f in _FIELDS}
    values["cost_usd"] = format(row.cost_usd, "f")  # exact and never "1E-10"
    return values


def _table_cells(row: ReportRow) -> list[str]:
    counts = (
        row.requests,
        row.refused,
        row.unmetered,
        row.prompt_tokens,
        row.completion_tokens,
        row.cached_prompt_tokens,
        row.reasoning_tokens,
    )
    return [row.key, *(f"{n:,}" for n in counts), f"{rounded(row.cost_usd):,.{_TABLE_DECIMALS}f}"]


def rounded(cost: Decimal) -> Decimal:
    """A cost as the tables show it: to 6 decimals, half even."""
    return round(cost, _TABLE_DECIMALS)


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitRow:
    """One budget window of one member (or `team`) for the `limits` command."""

    member: str
    window: str
    budget_usd: Decimal | None
    spent_usd: Decimal
    resets_at: str

    @property
    def left_usd(self) -> Decimal | None:
        return (
            None if self.budget_usd is None else max(self.budget_usd - self.spent_usd, Decimal(0))
        )


def limit_rows(
    members: Sequence[tuple[str, Limits]], rules: LimitRules, limiter: Limiter, now: float
) -> list[LimitRow]:
    """Each budget window of each member (name, limits), then the team's, as `limiter`
    counts them at `now`: the `limits` command's rows and the admin API's `/admin/v1/limits`."""
    zone = ZoneInfo(rules.timezone)
    rows = []
    every: list[tuple[str | None, Limits | None]] = [*members, (None, None)]
    for name, limits in every:
        for window in WINDOWS:
            if limits is None:
                budget = budget_of(rules, window, "team_")
            else:
                budget = budget_of(limits, window)
            spent, _ = limiter.spent(name, window, now)
            row = LimitRow(
                member=name or "team",
                window=window,
                budget_usd=budget,
                spent_usd=spent,
                resets_at=rfc3339(period(window, now, zone).end),
            )
            rows.append(row)
    return rows


def limit_members(
    named: Iterable[tuple[str, Limits]], seen: Iterable[str], defaults: Limits
) -> list[tuple[str, Limits]]:
    """Whose budgets the `limits` report shows: the members named (config, key store), then
    the ones the ledger saw spend that none names (a member since removed, `serve --demo`'s),
    under the `[limits]` defaults."""
    members = dict(named)
    return [*members.items(), *((n, defaults) for n in sorted(set(seen)) if n not in members)]


def limit_record(row: LimitRow) -> dict[str, Any]:
    """One row of the `limits` report as JSON: amounts as exact decimal strings, `null` where
    no budget applies."""
    return {
        "member": row.member,
        "window": row.window,
        "budget_usd": _text(row.budget_usd),
        "spent_usd": str(row.spent_usd),
        "left_usd": _text(row.left_usd),
        "resets_at": row.resets_at,
    }


def format_limits(rows: Sequence[LimitRow], fmt: str) -> str:
    """The `limits` report as a table or JSON; `unlimited` where no budget applies."""
    if fmt == "json":
        return json.dumps([limit_record(r) for r in rows], indent=2)
    header = ["member", "window", "budget_usd", "spent_usd", "left_usd", "resets_at"]
    cells = [
        [
            r.member,
            r.window,
            "unlimited" if r.budget_usd is None else f"{r.budget_usd:f}",
            f"{rounded(r.spent_usd)}",
            "unlimited" if r.left_usd is None else f"{rounded(r.left_usd)}",
            r.resets_at,
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *cells]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)
