"""A minimal instance of a JSON Schema: what the demo answers when asked for structured output
(`response_format` / `text.format`) and what it passes as a tool call's arguments.

Handles what tool and response schemas use: `type` (one or a list), `const`, `enum`, objects
(required properties, then enough others for `minProperties`), arrays (`items`, `prefixItems`,
`minItems` / `maxItems`), string `format` / `minLength` / `maxLength`, number and integer bounds and
`multipleOf`, `anyOf` / `oneOf` (the first branch), `allOf` (merged), and local `$ref`s
(`#/$defs/...`, `#/definitions/...`). `pattern` and `uniqueItems` are not honoured. Pure.
"""

from __future__ import annotations

import math
from typing import Any

_MAX_DEPTH = 32  # a `$ref` cycle whose every branch is required has no finite instance
_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "email": "demo@example.com",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "duration": "PT1S",
}


def instance(schema: Any) -> Any:
    """The smallest value the demo can think of that `schema` accepts: only required object
    properties, one item per array (or `minItems`), `"demo"` for strings, 0 for numbers."""
    return _make(schema, schema if isinstance(schema, dict) else {}, 0)


def _make(schema: Any, root: dict[str, Any], depth: int) -> Any:
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    if isinstance(ref := schema.get("$ref"), str):
        return _make(_resolve(ref, root), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(enum := schema.get("enum"), list) and enum:
        return enum[0]
    if isinstance(parts := schema.get("allOf"), list) and parts:
        return _make(_merged(schema, parts, root), root, depth + 1)
    for key in ("anyOf", "oneOf"):
        if isinstance(branches := schema.get(key), list) and branches:
            return _make(_first_not_null(branches, root), root, depth + 1)
    kind = _kind(schema)
    if kind == "object":
        return _object(schema, root, depth)
    if kind == "array":
        return _array(schema, root, depth)
    if kind == "string":
        return _string(schema)
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    return None


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    """A local JSON pointer (`#/$defs/Name`); anything else resolves to nothing."""
    if not ref.startswith("#"):
        return None
    target: Any = root
    for token in filter(None, ref[1:].split("/")):
        key = token.replace("~1", "/").replace("~0", "~")
        target = target.get(key) if isinstance(target, dict) else None
    return target


def _merged(schema: dict[str, Any], parts: list[Any], root: dict[str, Any]) -> dict[str, Any]:
    """`allOf` as one schema: properties and required lists unioned, other keys last-wins."""
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in parts:
        part = _resolve(part["$ref"], root) if isinstance(part, dict) and "$ref" in part else part
        if not isinstance(part, dict):
            continue
        properties = {**_dict(merged, "properties"), **_dict(part, "properties")}
        required = [*_list(merged, "required"), *_list(part, "required")]
        merged |= part
        merged |= {"properties": properties, "required": list(dict.fromkeys(required))}
    return merged


def _first_not_null(branches: list[Any], root: dict[str, Any]) -> Any:
    def is_null(branch: Any) -> bool:
        if isinstance(branch, dict) and "$ref" in branch:
            branch = _resolve(branch["$ref"], root)
        return isinstance(branch, dict) and branch.get("type") == "null"

    return next((b for b in branches if not is_null(b)), branches[0])


def _kind(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if isinstance(k, str)]
        kind = next((k for k in kinds if k != "null"), kinds[0] if kinds else None)
    if isinstance(kind, str):
        return kind
    hints = {
        "object": ("properties", "required", "additionalProperties", "minProperties"),
        "array": ("items", "prefixItems", "minItems", "maxItems"),
        "string": ("minLength", "maxLength", "format", "pattern"),
        "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
    }
    return next((k for k, keys in hints.items() if any(key in schema for key in keys)), None)


def _object(schema: dict[str, Any], root: dict[str, Any], depth: int) -> dict[str, Any]:
    properties = _dict(schema, "properties")
    required = schema.get("required")
    names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
    missing = max(0, _int(schema, "minProperties") - len(names))
    names += [n for n in properties if n not in names][:missing]
    return {name: _make(properties.get(name, {}), root, depth + 1) for name in names}


def _array(schema: dict[str, Any], root: dict[str, Any], depth: int) -> list[Any]:
    prefix = schema.get("prefixItems")
    prefix = prefix if isinstance(prefix, list) else []
    items = schema.get("items")
    count = max(_int(schema, "minItems"), len(prefix), 1 if items not in (None, False) else 0)
    if "maxItems" in schema:
        count = min(count, _int(schema, "maxItems"))
    schemas = [*prefix, *[items] * max(0, count - len(prefix))][:count]
    return [_make(s, root, depth + 1) for s in schemas]


def _string(schema: dict[str, Any]) -> str:
    shape = schema.get("format")
    text = _FORMATS.get(shape, "demo") if isinstance(shape, str) else "demo"
    text += "o" * (_int(schema, "minLength") - len(text))
    return text[: _int(schema, "maxLength")] if "maxLength" in schema else text


def _number(schema: dict[str, Any], *, integer: bool) -> int | float:
    """0 if it fits the bounds, else the bound nearest 0 (stepped inside when exclusive); then
    the next `multipleOf` up."""
    low, low_open = _bound(schema, "minimum", "exclusiveMinimum", max)
    high, high_open = _bound(schema, "maximum", "exclusiveMaximum", min)
    value: float = 0
    if low is not None and (low > 0 or (low == 0 and low_open)):
        value = low
        if integer:
            value = math.floor(low) + 1 if low_open else math.ceil(low)
        elif low_open:
            value = (low + high) / 2 if high is not None else low + 1
    elif high is not None and (high < 0 or (high == 0 and high_open)):
        value = high
        if integer:
            value = math.ceil(high) - 1 if high_open else math.floor(high)
        elif high_open:
            value = (low + high) / 2 if low is not None else high - 1
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and not isinstance(step, bool) and step > 0 and value:
        value = (math.ceil if value > 0 else math.floor)(value / step) * step  # away from 0
    return int(value) if integer else value


def _bound(schema: dict[str, Any], closed: str, opened: str, tighter: Any) -> tuple[Any, bool]:
    """The tighter of an inclusive and an exclusive bound, and whether it is exclusive."""
    given = [
        (schema[key], key == opened)
        for key in (closed, opened)
        if isinstance(schema.get(key), int | float) and not isinstance(schema.get(key), bool)
    ]
    if not given:
        return None, False
    value = tighter(v for v, _ in given)
    return value, any(v == value and is_open for v, is_open in given)


def _int(schema: dict[str, Any], key: str) -> int:
    value = schema.get(key)
    return max(0, value) if isinstance(value, int) and not isinstance(value, bool) else 0


def _dict(schema: dict[str, Any], key: str) -> dict[str, Any]:
    value = schema.get(key)
    return value if isinstance(value, dict) else {}


def _list(schema: dict[str, Any], key: str) -> list[Any]:
    value = schema.get(key)
    return value if isinstance(value, list) else []
