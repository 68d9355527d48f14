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
from gateway.budgets import period
from gateway.config import load_database, load_settings
from gateway.keystore import KeyStoreError, stored_keys
from gateway.keystore.fields import everyones_limits
from gateway.ledger import LedgerError, spend, totals


def usage(args: argparse.Namespace) -> int:
    ledger = args.ledger or load_database(args.config, os.environ).location
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
    limiter = seeded_limiter(settings, now, shared=False)  # the ledger is the record
    zone = ZoneInfo(settings.limits.timezone)
    month = period("month", now, zone).start
    path = settings.database.location
    try:
        spent_by = spend(path, since=month)
        stored = stored_keys(path)
    except (LedgerError, KeyStoreError) as exc:
        print(f"nanogpt-gateway limits: {exc}", file=sys.stderr)
        return 1
    defaults = settings.anonymous.limits
    named = everyones_limits(settings.members, stored, defaults, settings.policy)
    seen = [member for member, _, _ in spent_by]
    members = reports.limit_members(named, seen, defaults)
    rows = reports.limit_rows(members, settings.limits, limiter, now)
    print(reports.format_limits(rows, args.format))
    return 0
