"""Imports point one way: pure modules know no I/O library, only proxy.py knows the HTTP client library, and the
demo upstream knows nothing of the gateway (so it stays an honest stand-in)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "gateway"
IO_LIBRARIES = {
    "httpx",
    "aiohttp",
    "yarl",
    "starlette",
    "uvicorn",
    "anyio",
    "sqlite3",
    "prometheus_client",
    "redis",
}
PURE = {
    "types",
    "errors",
    "config",
    "keys",
    "policy",
    "protocol",
    "usage",
    "pricing",
    "accounting",
    "reports",
}
# module -> the gateway modules it may import
ALLOWED = {
    "types": set(),
    "errors": set(),
    "config": {"types", "pricing"},
    "keys": {"types", "errors"},
    "policy": {"types"},
    "protocol": {"errors"},
    "usage": {"types"},
    "pricing": {"types"},
    "reports": {"types"},
    "catalog": {"types", "errors"},
    "proxy": {"types", "errors"},
    "relay": {"errors", "proxy", "tally", "types", "usage"},
    "accounting": {"types", "pricing", "protocol"},
    "metrics": {"types", "pricing", "accounting"},
    "tally": {"types", "accounting", "metrics"},
    "ledger": {"types", "reports"},
    "logs": set(),
    "handlers": {
        "types",
        "errors",
        "config",
        "keys",
        "policy",
        "protocol",
        "catalog",
        "proxy",
        "relay",
        "metrics",
        "tally",
        "usage",
    },
    "app": {
        "config",
        "errors",
        "keys",
        "catalog",
        "proxy",
        "handlers",
        "ledger",
        "metrics",
        "tally",
    },
    "cli": {"__init__", "app", "config", "demo_upstream", "logs", "ledger", "reports"},
    "__main__": {"cli"},
    "__init__": set(),
    "demo_upstream": set(),
}


def imports_of(module: str) -> tuple[set[str], set[str]]:
    """(gateway modules, top-level third-party or stdlib packages) imported by a module."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    internal, external = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            top, _, rest = name.partition(".")
            if top != "gateway":
                external.add(top)
                continue
            part = rest.split(".")[0]
            internal.add(part if (PACKAGE / f"{part}.py").exists() else "__init__")
    return internal, external


def test_every_module_is_in_the_table() -> None:
    assert {p.stem for p in PACKAGE.glob("*.py")} == set(ALLOWED)


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_imports_point_one_way(module: str) -> None:
    internal, external = imports_of(module)
    assert internal <= ALLOWED[module], f"{module} imports {internal - ALLOWED[module]}"
    if module in PURE:
        assert not external & IO_LIBRARIES, (
            f"{module} is pure but imports {external & IO_LIBRARIES}"
        )


@pytest.mark.parametrize(
    ("library", "owner"),
    [
        # The upstream client library is swappable (bench/README.md) because one module knows it.
        ("aiohttp", "proxy"),
        ("yarl", "proxy"),
        ("sqlite3", "ledger"),
        ("prometheus_client", "metrics"),
    ],
)
def test_one_module_knows_each_library(library: str, owner: str) -> None:
    assert {m for m in ALLOWED if library in imports_of(m)[1]} == {owner}
