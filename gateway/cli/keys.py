"""The `keys` command: create, list, show, update, disable / enable, revoke, rotate and audit
the keys the store issues, in the database `[database] url` names (safe while the
gateway runs: it notices every change within a second).

Every change goes through `keystore.actions`, as the admin API's do, so the checks and their
messages are the same, and is audited as `cli:<os user>`. A bad argument, an unknown name or
an unreadable database ends the command with one line and exit status 2.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from gateway.budgets import period
from gateway.config import Settings, load_settings
from gateway.errors import InvalidRequest
from gateway.keys import shown
from gateway.keystore import KeyStore, KeyStoreError, actions, listing, open_keystore
from gateway.keystore.fields import DURATION_FORMS, described, parse_duration, rfc3339
from gateway.ledger import LedgerError, spend
from gateway.types import StoredKey

PROG = "nanogpt-gateway keys"
LIMIT_FLAGS = {
    "budget_usd_daily": "--budget-usd-daily",
    "budget_usd_monthly": "--budget-usd-monthly",
    "requests_per_minute": "--rpm",
    "tokens_per_minute": "--tpm",
    "max_concurrent_requests": "--max-concurrent",
    "end_user_budget_usd_daily": "--end-user-budget-usd-daily",
    "end_user_budget_usd_monthly": "--end-user-budget-usd-monthly",
}
"""Each limit's flag, by the config's name for it (`[limits]`, `[[members]]`)."""


class Refused(Exception):
    """A flag's value that cannot even be handed to the checks (`--rpm lots`)."""


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    config_arguments: Callable[[argparse.ArgumentParser], None],
) -> None:
    """The `keys` command and its actions, each taking `--config` (`config_arguments`)."""
    keys = commands.add_parser(
        "keys", help="issue and manage member and admin keys (kept in the gateway's database)"
    )
    keys_actions = keys.add_subparsers(required=True, metavar="ACTION")

    def action(name: str, help: str, run: Callable[..., int]) -> argparse.ArgumentParser:
        parser = keys_actions.add_parser(name, help=help, description=help)
        config_arguments(parser)
        parser.set_defaults(run=lambda args: _run(run, args, creates=name == "create"))
        return parser

    create = action("create", "issue a key: printed once, only its hash is stored", _create)
    create.add_argument("name", help="who the key is for: 1-64 letters, digits, _ . @ -")
    create.add_argument(
        "--admin", action="store_true", help="an admin-API credential (/admin/v1), not a member"
    )
    _field_arguments(create, updating=False)

    listing = action("list", "the keys, their limits and this month's spend (no secrets)", _list)
    listing.add_argument("--all", action="store_true", help="revoked and expired keys too")
    listing.add_argument("--format", choices=["table", "json"], default="table")

    show = action("show", "one key, every field (no secret)", _show)
    show.add_argument("name")
    show.add_argument("--format", choices=["table", "json"], default="table")

    update = action("update", "change a key's limits, models, expiry or note", _update)
    update.add_argument("name")
    _field_arguments(update, updating=True)

    for name, help in (
        ("disable", "refuse a key (401) until it is enabled again"),
        ("enable", "let a disabled key in again"),
        ("revoke", "end a key for good (its name may then be reused)"),
    ):
        change = action(name, help, _change)
        change.add_argument("name")
        change.set_defaults(verb=name)

    rotate = action(
        "rotate", "a new secret for a key: same name, limits and history; printed once", _rotate
    )
    rotate.add_argument("name")
    rotate.add_argument(
        "--grace",
        default="0s",
        help=f"how long the old secret keeps working: {DURATION_FORMS}; default 0s (at once)",
    )

    audit = action("audit", "every change to the keys: when, who, what (never a secret)", _audit)
    audit.add_argument("--format", choices=["table", "json"], default="table")


def _field_arguments(parser: argparse.ArgumentParser, *, updating: bool) -> None:
    again = ', "default" (the [limits] default)' if updating else ""
    for field, flag in LIMIT_FLAGS.items():
        what = "USD" if "usd" in field else "N"
        parser.add_argument(
            flag, dest=field, metavar=what, help=f'{field}: a number, "unlimited"{again}'
        )
    replaces = " (replaces the list)" if updating else ""
    parser.add_argument(
        "--allow",
        action="append",
        metavar="PATTERN",
        help=f"a model pattern the key may use, repeatable{replaces}; default: every model",
    )
    parser.add_argument(
        "--deny",
        action="append",
        metavar="PATTERN",
        help=f"a model pattern the key may not use, repeatable{replaces}",
    )
    never = ', or "never"' if updating else ""
    parser.add_argument(
        "--expires",
        metavar="WHEN",
        help=f"a duration from now ({DURATION_FORMS}) or an RFC 3339 instant{never}",
    )
    parser.add_argument(
        "--may-change-account",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether the key may call NanoGPT's account-changing endpoints",
    )
    parser.add_argument(
        "--end-user-header", metavar="HEADER", help="the header naming a shared client's end user"
    )
    parser.add_argument("--note", metavar="TEXT", help="a note for admins (at most 500 chars)")
    if updating:
        parser.add_argument(
            "--clear-allow", action="store_true", help="let the key use every model again"
        )
        parser.add_argument("--clear-deny", action="store_true", help="deny no model")
        parser.add_argument(
            "--no-end-user-header", action="store_true", help="stop telling end users apart"
        )


def _run(
    run: Callable[[argparse.Namespace, Settings, KeyStore], int], args: Any, *, creates: bool
) -> int:
    """`run` on the store the config names; only `create` makes the database if it is missing
    (as the gateway does when it starts), so a look in the wrong place leaves nothing behind."""
    settings = load_settings(
        args.config, os.environ, team_key_required=False, members_required=False
    )
    path = settings.database.location
    if not creates and not settings.database.is_postgresql and not os.path.lexists(path):
        return _refuse(
            f"{path}: no database here: the gateway makes it when it starts (keys create too); "
            f"a relative {settings.database.setting} starts from the working directory"
        )
    try:
        with _store(settings) as store:
            return run(args, settings, store)
    except InvalidRequest as exc:
        return _refuse(exc.message)
    except (KeyStoreError, LedgerError, Refused) as exc:
        return _refuse(str(exc))


def _refuse(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


@contextmanager
def _store(settings: Settings) -> Iterator[KeyStore]:
    store = open_keystore(settings.database.location)
    try:
        yield store
    finally:
        store.close()


def actor() -> str:
    """Who the audit trail says made a change from the command line: `cli:<os user>`."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no LOGNAME/USER and no passwd entry (a bare container)
        user = f"uid-{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"cli:{user}"


def _create(args: argparse.Namespace, settings: Settings, store: KeyStore) -> int:
    data = {"name": args.name, **({"role": "admin"} if args.admin else {}), **_fields(args)}
    stored, key = actions.create(
        store,
        data,
        actor=actor(),
        now=time.time(),
        config_names={m.name for m in settings.members},
    )
    _hand_over(stored, key, settings, "Created")
    return 0


def _update(args: argparse.Namespace, settings: Settings, store: KeyStore) -> int:
    data = _fields(args)
    if args.clear_allow:
        _only(args, "allow", "--clear-allow", "--allow")
        data["allow"] = None
    if args.clear_deny:
        _only(args, "deny", "--clear-deny", "--deny")
        data["deny"] = []
    if args.no_end_user_header:
        _only(args, "end_user_header", "--no-end-user-header", "--end-user-header")
        data["end_user_header"] = None
    if not data:
        raise Refused("nothing to change: give at least one flag (keys update --help)")
    stored = actions.update(store, args.name, data, actor=actor(), now=time.time())
    print(f"Updated key {stored.name!r} ({shown(stored.public_id)}): {', '.join(data)}.")
    return 0


def _change(args: argparse.Namespace, settings: Settings, store: KeyStore) -> int:
    now, who = time.time(), actor()
    if args.verb == "revoke":
        stored = actions.revoke(store, args.name, actor=who, now=now)
        done = "revoked: it is refused from now on"
    else:
        disabled = args.verb == "disable"
        stored = actions.set_disabled(store, args.name, disabled, actor=who, now=now)
        done = "disabled: it is refused until enabled" if disabled else "enabled"
    print(f"Key {stored.name!r} ({shown(stored.public_id)}) {done}.")
    return 0


def _rotate(args: argparse.Namespace, settings: Settings, store: KeyStore) -> int:
    try:
        grace = parse_duration(args.grace)
    except ValueError as exc:
        raise Refused(f"--grace: {exc}") from None
    stored, key = actions.rotate(store, args.name, grace, actor=actor(), now=time.time())
    _hand_over(stored, key, settings, "Rotated")
    until = stored.previous_valid_until
    old = f"until {rfc3339(until)}" if grace else "no longer: it is refused now"
    print(f"The old secret works {old}.", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace, settings: Settings, store: KeyStore) -> int:
    now = time.time()
    keys = [k for k in store.stored_keys() if args.all or k.status(now) in ("active", "disabled")]
    spent = _spent(settings, now)
    rows = [_listed(k, now, spent) for k in keys]
    print(listing.format_keys(rows, args.format))
    return 0


def _show(args: argparse.Namespace, settings: Settings, store: KeyStore) -> int:
    now = time.time()
    key = store.get(args.name)
    print(listing.format_key(_listed(key, now, _spent(settings, now)), args.format))
    return 0


def _audit(args: argparse.Namespace, settings: Settings, store: KeyStore) -> int:
    entries = [
        {
            "time": rfc3339(e.time),
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "key": shown(e.public_id),
            "fields": dict(e.fields),
        }
        for e in store.audit()
    ]
    print(listing.format_audit(entries, args.format))
    return 0


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, under the config's field names, as `keystore.fields` takes them."""
    data: dict[str, Any] = {}
    for field, flag in LIMIT_FLAGS.items():
        text = getattr(args, field)
        if text is not None:
            data[field] = _limit(text, flag, counts="usd" not in field)
    for field in ("allow", "deny", "end_user_header", "note"):
        if getattr(args, field) is not None:
            data[field] = getattr(args, field)
    if args.expires is not None:
        data["expires_at"] = None if args.expires.strip() == "never" else args.expires
    if args.may_change_account is not None:
        data["may_change_account"] = args.may_change_account
    return data


def _limit(text: str, flag: str, *, counts: bool) -> float | int | str | None:
    """A limit flag's value: a number (checked by `keystore.fields`), `unlimited`, or
    `default` (`None`: the `[limits]` default)."""
    word = text.strip().lower()
    if word in ("unlimited", "default"):
        return "unlimited" if word == "unlimited" else None
    try:
        return int(word) if counts and word.lstrip("-").isdigit() else float(word)
    except ValueError:
        kind = "a whole number" if counts else "a number of USD"
        raise Refused(f'{flag}: expected {kind}, "unlimited" or "default", got {text!r}') from None


def _only(args: argparse.Namespace, field: str, flag: str, other: str) -> None:
    if getattr(args, field) is not None:
        raise Refused(f"{flag} and {other} contradict each other: give one")


def _hand_over(stored: StoredKey, key: str, settings: Settings, done: str) -> None:
    """The key alone on stdout (so `$(nanogpt-gateway keys create ...)` captures just it), how
    to use it and that it is shown once on stderr."""
    host = settings.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "<gateway host>"
    elif ":" in host:
        host = f"[{host}]"
    api = "/admin/v1" if stored.role == "admin" else "/v1"
    print(key)
    print(
        f"{done} {stored.role} key {stored.name!r} ({shown(stored.public_id)}). It is shown "
        "this once: the gateway keeps only its SHA-256.\n"
        f"Use it as the API key (Authorization: Bearer <key>) with base URL "
        f"http://{host}:{settings.server.port}{api}",
        file=sys.stderr,
    )


def _spent(settings: Settings, now: float) -> dict[str, Decimal]:
    """What each member has spent this calendar month (in `limits.timezone`), from the ledger."""
    month = period("month", now, ZoneInfo(settings.limits.timezone)).start
    totals: dict[str, Decimal] = {}
    for member, _, cost in spend(settings.database.location, since=month):
        totals[member] = totals.get(member, Decimal(0)) + cost
    return totals


def _listed(key: StoredKey, now: float, spent: dict[str, Decimal]) -> dict[str, Any]:
    return {**described(key, now), "spent_usd_month": spent.get(key.name, Decimal(0))}
