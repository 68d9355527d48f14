"""The `keys` command's words: stored keys (as `fields.described` gives them) and the audit
trail, as aligned tables or JSON. Never a secret: none is given. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from gateway.reports import rounded

KEY_COLUMNS = ("name", "key", "role", "status", "created", "expires", "last used", "limits")
_LIMIT_WORDS = (
    ("budget_usd_daily", "${}/day"),
    ("budget_usd_monthly", "${}/month"),
    ("requests_per_minute", "{} rpm"),
    ("tokens_per_minute", "{} tpm"),
    ("max_concurrent_requests", "{} concurrent"),
    ("end_user_budget_usd_daily", "end user ${}/day"),
    ("end_user_budget_usd_monthly", "end user ${}/month"),
)


def limits_summary(key: Mapping[str, Any]) -> str:
    """A stored key's own limits in a few words (`$5/day $50/month 60 rpm`); `defaults` when
    it sets none (the `[limits]` defaults apply)."""
    words = []
    for field, form in _LIMIT_WORDS:
        value = key.get(field)
        if value == "unlimited":
            words.append(form.replace("$", "").format("unlimited"))
        elif value is not None:
            words.append(form.format(_number(value)))
    return " ".join(words) or "defaults"


def format_keys(keys: Sequence[Mapping[str, Any]], fmt: str) -> str:
    """The `keys list` report: keys as `keystore.fields.described` gives them, each with its
    `spent_usd_month` (a `Decimal`), as a table or JSON. Never a secret: none is given."""
    if fmt == "json":
        return json.dumps([_spent_text(k) for k in keys], indent=2)
    if not keys:
        return "no keys (create one with `nanogpt-gateway keys create NAME`)"
    header = [*KEY_COLUMNS, "spent this month"]
    cells = [
        [
            k["name"],
            k["key"],
            k["role"],
            k["status"],
            k["created_at"],
            k["expires_at"] or "never",
            k["last_used_at"] or "never",
            limits_summary(k),
            f"${rounded(k['spent_usd_month'])}",
        ]
        for k in keys
    ]
    return _aligned([header, *cells])


def format_key(key: Mapping[str, Any], fmt: str) -> str:
    """The `keys show` report: every field of one key, `field: value` lines or JSON."""
    if fmt == "json":
        return json.dumps(_spent_text(key), indent=2)
    width = max(len(field) for field in key)
    lines = []
    for field, value in key.items():
        if field == "allow" and value is None:
            text = "(every model)"
        elif isinstance(value, list):
            text = ", ".join(value) if value else "(none)"
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, Decimal):
            text = f"{rounded(value)}"
        elif isinstance(value, float):
            text = _number(value)
        elif value is None or value == "":
            text = "-"
        else:
            text = str(value)
        lines.append(f"{field.ljust(width)}  {text}")
    return "\n".join(lines)


def format_audit(entries: Sequence[Mapping[str, Any]], fmt: str) -> str:
    """The `keys audit` report: `time`, `actor`, `action`, `target`, `key`, `fields` of each
    change, oldest first, as a table or JSON."""
    if fmt == "json":
        return json.dumps(list(entries), indent=2)
    if not entries:
        return "no changes to keys yet"
    header = ["time", "actor", "action", "target", "key", "fields"]
    cells = [
        [
            e["time"],
            e["actor"],
            e["action"],
            e["target"],
            e["key"],
            json.dumps(e["fields"], separators=(",", ":")),
        ]
        for e in entries
    ]
    return _aligned([header, *cells])


def _spent_text(key: Mapping[str, Any]) -> dict[str, Any]:
    return {**key, "spent_usd_month": str(key["spent_usd_month"])}


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _aligned(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)
