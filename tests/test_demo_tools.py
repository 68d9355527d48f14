"""The demo's tool rule, shared by the chat, Responses and Messages APIs: which tool it calls
(if any) and with what arguments. Pure, so plain table tests."""

from __future__ import annotations

import json

import pytest

from gateway.demo_upstream.tools import Mode, Tool, call, fragments, pick

WEATHER = Tool("weather", {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]})  # fmt: skip
CLOCK = Tool("clock", None)


@pytest.mark.parametrize(
    ("tools", "mode", "named", "user_turn", "expected"),
    [
        ([WEATHER, CLOCK], "auto", None, True, WEATHER),
        ([WEATHER, CLOCK], "auto", None, False, None),  # after a tool's result: text
        ([WEATHER, CLOCK], "none", None, True, None),
        ([WEATHER, CLOCK], "required", None, False, WEATHER),  # forced, whatever came last
        ([WEATHER, CLOCK], "required", "clock", True, CLOCK),
        ([WEATHER, CLOCK], "required", "clock", False, CLOCK),
        ([], "auto", None, True, None),
        ([], "required", None, True, None),  # nothing to call
    ],
)
def test_pick(
    tools: list[Tool], mode: Mode, named: str | None, user_turn: bool, expected: Tool | None
) -> None:
    assert pick(tools, mode, named, user_turn) is expected


def test_call_fills_the_schema_and_names_the_turn() -> None:
    made = call(WEATHER, 1)
    assert made.name == "weather" and made.input == {"city": "demo"}
    assert json.loads(made.arguments) == made.input and " " not in made.arguments
    assert call(WEATHER, 1) == made  # the same turn, the same call
    assert call(WEATHER, 3).id != made.id  # a later turn, another id
    assert call(CLOCK, 1).arguments == "{}"  # no parameters: an empty object
    assert call(Tool("odd", {"type": "string"}), 1).input == {}  # arguments are always an object


@pytest.mark.parametrize("text", ["", "{}", '{"city":"demo","days":1,"unit":"c"}'])
def test_fragments_join_back(text: str) -> None:
    parts = fragments(text)
    assert "".join(parts) == text
    assert all(0 < len(p) <= 8 for p in parts)
