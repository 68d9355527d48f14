"""A typed TOML reader: a table checked against a dataclass's fields and annotations, or a
`ConfigError` naming the key (`limits.rpm: expected an integer, got string "ten"`). Pure.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal

from gateway.config.schema import ConfigError


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:  # a directory, no permission, an I/O error
        raise ConfigError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # tomllib decodes the file before parsing it
        raise ConfigError(
            f"{path}: not valid TOML: not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None


def section(cls: type, table: Any, where: str) -> Any:
    """Build one section dataclass from its TOML table, checking keys and types by annotation."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {_describe(table)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in table:
        if key not in hints:
            raise ConfigError(f"{where}.{key}: unknown key (expected one of {', '.join(names)})")
    values = {key: _coerce(value, hints[key], f"{where}.{key}") for key, value in table.items()}
    missing = [f.name for f in dataclasses.fields(cls) if _required(f) and f.name not in values]
    if missing:
        raise ConfigError(f"{where}.{missing[0]}: required")
    return cls(**values)


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in args if arg is not type(None)]
        for option in options[:-1]:
            try:
                return _coerce(value, option, where)
            except ConfigError:
                pass
        try:
            return _coerce(value, options[-1], where)
        except ConfigError:
            if len(options) == 1:
                raise
        expected = " or ".join(_expected(option) for option in options)
        raise ConfigError(f"{where}: expected {expected}, got {_describe(value)}")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):  # a nested table
        return section(hint, value, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected {_expected(hint)}, got {_describe(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {_describe(value)}")
        return tuple(value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):  # TOML has nan and inf; no setting means either
            raise ConfigError(f"{where}: expected a finite number, got {value}")
        return float(value)
    if hint in (str, int, bool) and type(value) is hint:
        return value
    raise ConfigError(f"{where}: expected {_expected(hint)}, got {_describe(value)}")


def _expected(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return " or ".join(f'"{a}"' for a in typing.get_args(hint))
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}[hint]


def _describe(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list"}
    name = kind.get(type(value), "table" if isinstance(value, dict) else type(value).__name__)
    return f"{name} {value!r}" if isinstance(value, str | int | float) else name
