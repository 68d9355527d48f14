"""The `nanogpt-gateway` command: serve, quickstart, check-config, usage, limits, keys,
migrate, hash-key, demo-upstream.

Configuration errors end the process with one line naming the key, and exit status 2.
`serving` runs the servers, `readouts` reads the ledger, `keys` manages the key store,
`migrate` applies the database schema (and copies SQLite into PostgreSQL).
Nothing imports this package.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gateway import __version__, reports
from gateway.cli import keys, migrate, readouts, serving
from gateway.cli.serving import DEMO_MEMBER_KEY
from gateway.config import ConfigError, load_settings
from gateway.keys import hash_key
from gateway.keystore import KeyStoreError, stored_keys
from gateway.keystore.fields import clashing_name


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        status = int(args.run(args) or 0)
        sys.stdout.flush()
        return status
    except ConfigError as exc:
        print(f"nanogpt-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`keys list | head -1`): what it wanted, it has. Python's own
        # recipe: point stdout at /dev/null so the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nanogpt-gateway",
        description="An OpenAI-compatible gateway for a team sharing one NanoGPT account.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway")
    _config_arguments(serve)
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")
    serve.add_argument(
        "--demo",
        action="store_true",
        help="run on the built-in offline stand-in of NanoGPT instead of the real API",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(run=serving.serve)

    quickstart = commands.add_parser(
        "quickstart",
        help="zero-config local start: real NanoGPT if NANOGPT_API_KEY is set, else the demo",
    )
    quickstart.add_argument("--port", type=int, default=8080)
    quickstart.set_defaults(run=serving.quickstart)

    check = commands.add_parser("check-config", help="validate a configuration file and exit")
    _config_arguments(check)
    check.set_defaults(run=_check_config)

    usage = commands.add_parser(
        "usage", help="print requests, tokens and cost from the usage ledger"
    )
    _config_arguments(usage)
    usage.add_argument(
        "--ledger",
        help="the ledger: a SQLite file or a postgresql:// URL (default: [database] url)",
    )
    usage.add_argument("--since", help="7d, 12h, 2026-11-01 or 2026-11-01T08:00 (UTC)")
    usage.add_argument("--until", help="same forms as --since (default: now)")
    usage.add_argument("--by", choices=reports.GROUPINGS, default="member")
    usage.add_argument("--format", choices=["table", "csv", "json"], default="table")
    usage.set_defaults(run=readouts.usage)

    limits = commands.add_parser(
        "limits", help="each member's budgets: spent, left and when they reset (from the ledger)"
    )
    _config_arguments(limits)
    limits.add_argument("--format", choices=["table", "json"], default="table")
    limits.set_defaults(run=readouts.limits)

    keys.add_parser(commands, _config_arguments)
    migrate.add_parser(commands, _config_arguments)

    hash_cmd = commands.add_parser("hash-key", help="print the key_sha256 of a member key")
    hash_cmd.add_argument("key")
    hash_cmd.set_defaults(run=lambda args: print(hash_key(args.key)))

    demo = commands.add_parser(
        "demo-upstream", help="run only the offline NanoGPT stand-in (not the product)"
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8181)
    demo.set_defaults(run=serving.demo_upstream)
    return parser


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=os.environ.get("GATEWAY_CONFIG"),
        help="TOML configuration file (default: $GATEWAY_CONFIG)",
    )


def _check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, os.environ)
    try:  # as `serve` would refuse it: a member named as a stored key
        clash = clashing_name(settings.members, stored_keys(settings.database.location))
    except KeyStoreError as exc:
        raise ConfigError(f"{settings.database.setting}: {exc}") from None
    if clash:
        raise ConfigError(f"{args.config}: {clash}")
    names = ", ".join(m.name for m in settings.members) or "none (auth.mode = none)"
    print(f"{args.config or '(defaults)'}: OK; members: {names}")
    return 0


__all__ = ["DEMO_MEMBER_KEY", "main"]
