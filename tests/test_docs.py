"""The docs stay true: every setting is documented, and CI runs the README's test command."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from gateway.config import SECTIONS, MemberSettings
from gateway.endpoints import ENDPOINTS, Endpoint

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
EXAMPLE = (ROOT / "config" / "gateway.example.toml").read_text()
SETTINGS = [(section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
MEMBER_KEYS = [f.name for f in dataclasses.fields(MemberSettings)]


@pytest.mark.parametrize(("section", "key"), SETTINGS)
def test_every_setting_is_documented(section: str, key: str) -> None:
    assert f"`{section}.{key}`" in README
    section_text = EXAMPLE.split(f"[{section}]", 1)[1].split("\n[", 1)[0]
    assert re.search(rf"^#? ?{key} = ", section_text, re.MULTILINE), (
        f"{section}.{key} not in example"
    )


@pytest.mark.parametrize("key", MEMBER_KEYS)
def test_every_member_key_is_documented(key: str) -> None:
    assert f"`members[].{key}`" in README
    assert re.search(rf"^{key} = ", EXAMPLE, re.MULTILINE)


def test_example_sets_the_documented_defaults() -> None:
    example = tomllib.loads(EXAMPLE)
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.name in example.get(section, {}):
                value, default = example[section][f.name], f.default
                if f.default_factory is not dataclasses.MISSING:  # a nested table
                    default = dataclasses.asdict(f.default_factory())
                assert default is not dataclasses.MISSING, f"{section}.{f.name} has no default"
                assert value == default or list(default) == value, f"{section}.{f.name}"


def test_ci_runs_the_readme_test_command() -> None:
    commands = re.findall(r"```sh\n(.+?)\n```", README)
    start, test = commands[0], commands[1]
    assert "quickstart" in start and "pytest" in test
    assert "coverage report --fail-under=95" in test, "CI keeps the coverage gate"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci


METERED_BY = {
    "openai": "tokens (`usage`)",
    "anthropic": "tokens (Anthropic `usage`)",
    "cost": "`cost` in the answer",
    "unreported": "unmetered (`not_reported`)",
    "free": "free",
}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.path} {sorted(e.methods)}")
def test_every_endpoint_is_documented(endpoint: Endpoint) -> None:
    """The README's endpoint table has a row saying what is checked and how it is metered."""
    path = "/v1/" + endpoint.path.replace("**", "{id}").replace("*", "{id}")
    methods = ", ".join(sorted(endpoint.methods - {"HEAD"}))
    rows = [r for r in README.splitlines() if r.startswith(f"| `{path}` | {methods} |")]
    assert len(rows) == 1, f"no README row for {methods} {path}"
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    model_cell, metered_cell, who = cells[2], cells[3], cells[4]
    if endpoint.catalog is not None and not endpoint.served_here:
        assert model_cell.startswith(f"{endpoint.catalog} model")
        assert ("(optional)" in model_cell) is not endpoint.model_required
    assert metered_cell == METERED_BY[endpoint.metering]
    assert who == endpoint.access
