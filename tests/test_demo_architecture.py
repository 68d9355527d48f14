"""The demo upstream's own layering, on top of `test_architecture`'s table (which keeps it from
importing the gateway): its shapes and rules are pure, and only `wire` and the API modules
know the web framework."""

from __future__ import annotations

import pytest

from tests.test_architecture import ALLOWED, IO_LIBRARIES, imports_of

DEMO = sorted(m for m in ALLOWED if m.split(".")[0] == "demo_upstream")
PURE = [
    "demo_upstream.catalog",
    "demo_upstream.schema",
    "demo_upstream.text",
    "demo_upstream.tools",
]


@pytest.mark.parametrize("module", PURE)
def test_the_demos_shapes_and_rules_are_pure(module: str) -> None:
    _, external = imports_of(module)
    assert not external & IO_LIBRARIES, f"{module} is pure but imports {external & IO_LIBRARIES}"


@pytest.mark.parametrize("module", DEMO)
def test_the_demo_imports_only_itself(module: str) -> None:
    internal, _ = imports_of(module)
    assert all(m.split(".")[0] == "demo_upstream" for m in internal), internal
