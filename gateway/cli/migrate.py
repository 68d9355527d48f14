"""The `migrate` command: bring the configured database to this gateway's schema (PostgreSQL
is migrated only here, under an advisory lock, so replicas never race on it; SQLite migrates
at start-up too), or, with `--from` and `--to`, copy a SQLite database's ledger, keys and
audit into an empty PostgreSQL one. One line on stderr and a non-zero exit on failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from gateway.config import ConfigError, load_database, shown_location
from gateway.ledger import LedgerError, TargetNotEmpty, copy, is_postgresql, migrate

PROG = "nanogpt-gateway migrate"


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    config_arguments: Callable[[argparse.ArgumentParser], None],
) -> None:
    parser = commands.add_parser(
        "migrate",
        help="apply the database schema ([database] url); or copy a SQLite database into "
        "PostgreSQL (--from, --to)",
        description="Apply this gateway's schema to the database [database] url names (safe "
        "to run from several places at once: one applies it, the others wait and find it "
        "done). With --from and --to: apply it to the PostgreSQL target and copy the SQLite "
        "source's usage ledger, keys and audit trail into it (the target must be empty).",
    )
    config_arguments(parser)
    parser.add_argument(
        "--from",
        dest="source",
        metavar="URL",
        help="a SQLite database to copy: sqlite:///path or a file's path",
    )
    parser.add_argument(
        "--to",
        dest="target",
        metavar="URL",
        help="the PostgreSQL database to copy into (default: the config's [database] url)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.target is not None and args.source is None:
        return _refuse("--to needs --from: the SQLite database to copy")
    try:
        if args.source is not None:  # --to by default: the config's (url_env keeps the
            # password out of the command line and the process list)
            target = args.target or load_database(args.config, os.environ).location
            return _copy(args.source, target)
        return _migrate(load_database(args.config, os.environ).location)
    except TargetNotEmpty as exc:
        return _refuse(str(exc))
    except LedgerError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1


def _migrate(location: str) -> int:
    before, after = migrate(location)
    shown = shown_location(location)
    kind = "PostgreSQL" if is_postgresql(location) else "SQLite"
    if before == after:
        print(f"{shown}: the {kind} schema is at version {after} already; nothing to do")
    else:
        print(f"{shown}: {kind} schema migrated from version {before} to {after}")
    return 0


def _copy(source: str, target: str) -> int:
    if source.startswith("sqlite:///"):
        source = source.removeprefix("sqlite:///")
    if is_postgresql(source) or "://" in source:
        raise ConfigError(
            f"--from: expected sqlite:///path or a file's path, got {shown_location(source)!r}"
        )
    if not is_postgresql(target):
        raise ConfigError(
            f"--to: expected a postgresql:// URL (or a config whose [database] url is one), "
            f"got {shown_location(target)!r}"
        )
    if not os.path.isfile(source):
        return _refuse(f"--from: {source}: no database here")
    _migrate(target)
    copied = copy(source, target)
    counts = ", ".join(f"{copied.get(t, 0)} {what}" for t, what in _WHAT.items())
    print(f"{shown_location(target)}: copied {counts} from {source}")
    return 0


_WHAT = {"usage": "usage rows", "keys": "keys", "key_audit": "audit entries"}


def _refuse(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2
