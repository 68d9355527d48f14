"""Imports point one way: pure modules know no I/O library, each I/O library is known to one
module, and the demo upstream knows nothing of the gateway (so it stays an honest stand-in).

Modules are named as in `gateway.<name>`: `config.loader` is a module of the `config` package,
`config` its `__init__`.
"""

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
    "asyncio",
    "sqlite3",
    "prometheus_client",
    "redis",
    "psycopg",
    "psycopg_pool",
}
PURE = {
    "types",
    "errors",
    "config",
    "config.schema",
    "config.toml",
    "config.loader",
    "config.members",
    "config.reload",
    "keys",
    "keystore.actions",
    "keystore.base",
    "keystore.fields",
    "keystore.listing",
    "keystore.rows",
    "ledger.rows",
    "policy",
    "protocol",
    "compat",
    "endpoints",
    "sse",
    "bodies",
    "usage",
    "pricing",
    "accounting",
    "reports",
    "budgets",
    "billing",
    "codings",
    "headers",
    "redaction",
    "limits",
    "limits.base",
    "limits.breaker",
    "limits.fallback",
    "limits.memory",
    "limits.scripts",
    "limits.wire",
}
CONFIG = {
    "config",
    "config.schema",
    "config.toml",
    "config.loader",
    "config.members",
    "config.reload",
}
# module -> the gateway modules it may import
ALLOWED: dict[str, set[str]] = {
    "types": set(),
    "errors": set(),
    "config": {"config.schema", "config.loader", "config.members", "config.reload"},
    "config.schema": {"types"},
    "config.toml": {"config.schema"},
    "config.loader": {"config.members", "config.schema", "config.toml", "keys", "types", "pricing"},
    "config.members": {"config.schema", "config.toml", "keys", "types", "pricing"},
    "config.reload": {"config.schema"},
    "keys": {"types", "errors"},
    "keystore": {"keystore.base", "keystore.postgresql", "keystore.sqlite", "ledger", "types"},
    "keystore.actions": {"errors", "keys", "keystore.base", "keystore.fields", "types"},
    "keystore.base": {"types"},
    "keystore.listing": {"reports"},
    "keystore.fields": {"config", "errors", "keys", "keystore.base", "types"},
    "keystore.rows": {"types"},
    "keystore.sqlite": {
        "keystore.base",
        "keystore.fields",
        "keystore.rows",
        "ledger.base",
        "ledger.sqlite.schema",
        "types",
    },
    "keystore.postgresql": {
        "config",
        "keystore.base",
        "keystore.fields",
        "keystore.rows",
        "ledger.base",
        "ledger.postgresql.schema",
        "types",
    },
    "roster": {"config", "keys", "keystore", "keystore.fields", "types"},
    "policy": {"types"},
    "protocol": {"bodies", "endpoints", "errors"},
    "compat": {"errors"},
    "endpoints": {"errors", "types"},
    "sse": {"types", "usage"},
    "bodies": set(),
    "usage": {"types"},
    "pricing": {"types"},
    "accounting": {"types", "pricing", "endpoints"},
    "budgets": {"pricing", "types"},
    "billing": {"errors", "types"},
    "limits": {"limits.base", "limits.fallback", "limits.memory", "limits.redis", "types"},
    "limits.breaker": set(),
    "limits.fallback": {"errors", "limits.base", "limits.memory"},
    "limits.scripts": set(),
    "limits.wire": {"budgets", "limits.base", "limits.memory"},
    "limits.redis": {
        "budgets",
        "limits.base",
        "limits.breaker",
        "limits.fallback",
        "limits.scripts",
        "limits.wire",
        "types",
    },
    "limits.base": {"budgets", "errors", "types"},
    "limits.memory": {"budgets", "limits.base", "types"},
    "reports": {"budgets", "limits.base", "types"},
    "catalog": {"types", "errors"},
    "balance": {"errors"},
    "upstream": {"types", "errors", "codings", "deadline", "headers", "redaction"},
    "codings": set(),
    "deadline": set(),
    "headers": {"types"},
    "redaction": set(),
    "metrics": {"types", "pricing", "accounting", "limits.base"},
    "tally": {"types", "accounting", "endpoints", "metrics", "limits"},
    "relay": {"errors", "upstream", "tally", "types", "usage"},
    "ledger": {"config", "ledger.base", "ledger.postgresql", "ledger.sqlite", "reports"},
    "ledger.base": {"types"},
    "ledger.sqlite": {
        "ledger.sqlite.export",
        "ledger.sqlite.queries",
        "ledger.sqlite.schema",
        "ledger.sqlite.writer",
    },
    "ledger.sqlite.schema": {"ledger.base"},
    "ledger.batching": {"ledger.base", "types"},
    "ledger.rows": {"types"},
    "ledger.sqlite.writer": {"ledger.batching", "ledger.rows", "ledger.sqlite.schema", "types"},
    "ledger.sqlite.queries": {"ledger.base", "ledger.sqlite.schema", "reports"},
    "ledger.postgresql": {
        "ledger.base",
        "ledger.postgresql.copy",
        "ledger.postgresql.queries",
        "ledger.postgresql.schema",
        "ledger.postgresql.writer",
    },
    "ledger.postgresql.schema": {"config", "ledger.base"},
    "ledger.postgresql.writer": {
        "config",
        "ledger.batching",
        "ledger.postgresql.schema",
        "ledger.rows",
        "types",
    },
    "ledger.postgresql.queries": {"ledger.postgresql.schema", "reports"},
    "ledger.postgresql.copy": {"config", "ledger.base", "ledger.postgresql.schema"},
    "ledger.sqlite.export": {"ledger.base", "ledger.sqlite.schema"},
    "logs": set(),
    "browsers": {"errors"},
    "pipeline": {
        "billing",
        "budgets",
        "catalog",
        "compat",
        "config",
        "endpoints",
        "errors",
        "limits",
        "policy",
        "protocol",
        "roster",
        "tally",
        "types",
        "upstream",
    },
    "admission": {
        "accounting",
        "billing",
        "budgets",
        "errors",
        "limits",
        "pipeline",
        "pricing",
        "protocol",
        "tally",
        "types",
    },
    "metered": {"errors", "logs", "pipeline", "relay", "tally", "types"},
    "forwarding": {
        "endpoints",
        "errors",
        "limits.base",
        "pipeline",
        "protocol",
        "sse",
        "tally",
        "upstream",
        "usage",
    },
    "routes": {
        "admission",
        "metered",
        "budgets",
        "limits.base",
        "forwarding",
        "types",
        "errors",
        "endpoints",
        "keys",
        "policy",
        "metrics",
        "pipeline",
        "relay",
        "tally",
    },
    "admin": {
        "budgets",
        "errors",
        "keys",
        "keystore",
        "keystore.actions",
        "keystore.fields",
        "ledger",
        "pipeline",
        "reports",
    },
    "app": {
        "admin",
        "balance",
        "browsers",
        "config",
        "endpoints",
        "errors",
        "keystore",
        "keystore.fields",
        "roster",
        "catalog",
        "upstream",
        "pipeline",
        "routes",
        "ledger",
        "limits",
        "limits.base",
        "budgets",
        "metrics",
        "tally",
    },
    "server": {"config", "errors", "relay"},
    "cli": {
        "__init__",
        "cli.keys",
        "cli.migrate",
        "cli.readouts",
        "cli.serving",
        "config",
        "keys",
        "keystore",
        "keystore.fields",
        "reports",
    },
    "cli.keys": {
        "budgets",
        "config",
        "errors",
        "keys",
        "keystore",
        "keystore.actions",
        "keystore.fields",
        "keystore.listing",
        "ledger",
        "types",
    },
    "cli.migrate": {"config", "ledger"},
    "cli.serving": {
        "app",
        "config",
        "demo_upstream",
        "keystore",
        "keystore.fields",
        "ledger",
        "logs",
        "server",
    },
    "cli.readouts": {
        "app",
        "budgets",
        "config",
        "keystore",
        "keystore.fields",
        "ledger",
        "reports",
    },
    "__main__": {"cli"},
    "__init__": set(),
    # the demo upstream: its own modules only, nothing of the gateway
    "demo_upstream": {"demo_upstream.app"},
    "demo_upstream.app": {
        "demo_upstream.catalog",
        "demo_upstream.chat",
        "demo_upstream.media",
        "demo_upstream.messages",
        "demo_upstream.responses",
        "demo_upstream.wire",
    },
    "demo_upstream.catalog": set(),
    "demo_upstream.schema": set(),
    "demo_upstream.text": {"demo_upstream.schema"},
    "demo_upstream.tools": {"demo_upstream.schema"},
    "demo_upstream.wire": set(),
    "demo_upstream.chat": {
        "demo_upstream.catalog",
        "demo_upstream.text",
        "demo_upstream.tools",
        "demo_upstream.wire",
    },
    "demo_upstream.responses": {
        "demo_upstream.chat",
        "demo_upstream.text",
        "demo_upstream.tools",
        "demo_upstream.wire",
    },
    "demo_upstream.messages": {
        "demo_upstream.chat",
        "demo_upstream.text",
        "demo_upstream.tools",
        "demo_upstream.wire",
    },
    "demo_upstream.media": {"demo_upstream.catalog", "demo_upstream.text", "demo_upstream.wire"},
}


def module_path(module: str) -> Path:
    path = PACKAGE.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def modules() -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found.add(".".join(parts))
    return found


def imports_of(module: str) -> tuple[set[str], set[str]]:
    """(gateway modules, top-level third-party or stdlib packages) imported by a module."""
    tree = ast.parse(module_path(module).read_text())
    internal, external = set(), set()
    known = modules()
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
            # the longest known module the name starts with: `config.schema.Settings` is
            # `config.schema`, `config.Settings` is `config`, `gateway.__version__` `__init__`
            parts = rest.split(".")
            candidates = (".".join(parts[:n]) for n in range(len(parts), 0, -1))
            internal.add(next((c for c in candidates if c in known), "__init__"))
    return internal, external


def test_every_module_is_in_the_table() -> None:
    assert modules() == set(ALLOWED)


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_imports_point_one_way(module: str) -> None:
    internal, external = imports_of(module)
    internal.discard(module)
    assert internal <= ALLOWED[module], f"{module} imports {internal - ALLOWED[module]}"
    if module in PURE:
        assert not external & IO_LIBRARIES, (
            f"{module} is pure but imports {external & IO_LIBRARIES}"
        )


@pytest.mark.parametrize(
    ("library", "owners"),
    [
        # The upstream client library is swappable (bench/README.md) because one module knows it.
        ("aiohttp", ("upstream",)),
        ("yarl", ("upstream",)),
        # the ledger's SQLite backend, and the key store's (whose tables it migrates)
        ("sqlite3", ("ledger.sqlite", "keystore.sqlite")),
        # the PostgreSQL backend likewise: its ledger package, and the key store's module
        ("psycopg", ("ledger.postgresql", "keystore.postgresql")),
        ("psycopg_pool", ("keystore.postgresql",)),
        ("prometheus_client", ("metrics",)),
        # the shared limiter's counters
        ("redis", ("limits.redis",)),
        ("tomllib", ("config.toml",)),
    ],
)
def test_one_module_knows_each_library(library: str, owners: tuple[str, ...]) -> None:
    """One module, or the modules of one package (the SQLite backend's schema, writer and
    queries), per store: swapping the library touches one place each."""
    knowers = {m for m in ALLOWED if library in imports_of(m)[1]}
    assert knowers and all(
        any(m == owner or m.startswith(f"{owner}.") for owner in owners) for m in knowers
    ), knowers


def test_only_config_modules_import_config_internals() -> None:
    for module in set(ALLOWED) - CONFIG:
        internal, _ = imports_of(module)
        assert not internal & (CONFIG - {"config"}), f"{module} reaches into the config package"


def test_one_process_on_sqlite_loads_neither_database_nor_cache_client() -> None:
    """psycopg (with libpq) and redis-py are imported where a PostgreSQL or Redis location is
    opened, not by the gateway itself: a single process on SQLite does not carry them."""
    import subprocess
    import sys

    probe = "import sys, gateway.app, gateway.cli; print(sorted({'psycopg', 'redis'} & set(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "[]"
