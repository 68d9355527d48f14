"""The commands that read the usage ledger: `usage` (totals by member, model, endpoint, day
or end user) and `limits` (each member's budgets: spent, left, reset).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from gateway import reports
from gateway.app import seeded_limiter
from gateway.budgets import WINDOWS, budget_of, period
from gateway.config import load_metering, load_settings
from gateway.ledger import LedgerError, spend, totals
from gateway.limits.base import rfc3339


def usage(args: argparse.Namespace) -> int:
    ledger = args.ledger or load_metering(args.config).ledger_path
    now = datetime.now(UTC)
    try:
        since = reports.parse_when(args.since, now=now) if args.since else None
        until = reports.parse_when(args.until, now=now) if args.until else None
    except ValueError as exc:
        print(f"nanogpt-gateway usage: {exc}", file=sys.stderr)
        return 2
    try:
        rows = totals(ledger, since=since, until=until, by=args.by)
    except LedgerError as exc:
        print(f"nanogpt-gateway usage: {exc}", file=sys.stderr)
        return 1
    formats = {
        "table": reports.format_table,
        "csv": reports.format_csv,
        "json": reports.format_json,
    }
    print(formats[args.format](rows, args.by))
    return 0


def limits(args: argparse.Namespace) -> int:
    settings = load_settings(
        args.config, os.environ, team_key_required=False, members_required=False
    )
    now = time.time()
    limiter = seeded_limiter(settings, now)
    zone = ZoneInfo(settings.limits.timezone)
    rows = []
    configured = {m.name: m.limits for m in settings.members}
    # Members the ledger knows but the config no longer (or never: `serve --demo`) names
    # count under the [limits] defaults.
    month = period("month", now, zone).start
    try:
        spent_by = spend(settings.metering.ledger_path, since=month)
    except LedgerError as exc:
        print(f"nanogpt-gateway limits: {exc}", file=sys.stderr)
        return 1
    seen = sorted({member for member, _, _ in spent_by})
    members = [*configured, *(name for name in seen if name not in configured)]
    defaults = settings.anonymous.limits
    for name in [*members, None]:
        for window in WINDOWS:
            if name is None:
                budget = budget_of(settings.limits, window, "team_")
            else:
                budget = budget_of(configured.get(name, defaults), window)
            spent, _ = limiter.spent(name, window, now)
            resets = rfc3339(period(window, now, zone).end)
            row = reports.LimitRow(
                member=name or "team",
                window=window,
                budget_usd=budget,
                spent_usd=spent,
                resets_at=resets,
            )
            rows.append(row)
    print(reports.format_limits(rows, args.format))
    return 0
