"""A stored key as a database row and back, the same for every backend: the `StoredKey`
fields in order, lists and limits as JSON text, flags as 0/1. Pure.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from gateway.types import StoredKey

FIELDS = tuple(f.name for f in dataclasses.fields(StoredKey))
"""The `keys` table's columns besides `changed` (and PostgreSQL's `seq`), in row order."""
_JSON_FIELDS = frozenset({"allow", "deny", "limits"})
_FLAGS = frozenset({"disabled", "may_change_account"})


def to_row(key: StoredKey) -> tuple[Any, ...]:
    """`key`'s column values, in `FIELDS` order."""
    values = []
    for field in FIELDS:
        value = getattr(key, field)
        if field in _JSON_FIELDS and value is not None:
            value = json.dumps(list(value) if isinstance(value, tuple) else value)
        elif field in _FLAGS:
            value = int(value)
        values.append(value)
    return tuple(values)


def to_key(row: Sequence[Any]) -> StoredKey:
    """The key a row of `FIELDS` columns holds."""
    values: dict[str, Any] = {}
    for field, value in zip(FIELDS, row, strict=True):
        if field in _JSON_FIELDS and value is not None:
            value = json.loads(value)
            value = tuple(value) if isinstance(value, list) else value
        elif field in _FLAGS:
            value = bool(value)
        values[field] = value
    return StoredKey(**values)
