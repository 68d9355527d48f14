"""The demo's JSON Schema instance generator: a table of schemas and the smallest instance the
demo answers with, then schemas written by pydantic and the openai SDK, checked by pydantic
itself (the validator a structured-output client runs on what the demo sends)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

import openai
import pydantic
import pytest

from gateway.demo_upstream.schema import instance

OBJECT = {"type": "object"}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string"}, "demo"),
        ({"type": "integer"}, 0),
        ({"type": "number"}, 0),
        ({"type": "boolean"}, True),
        ({"type": "null"}, None),
        ({}, None),
        ({"type": ["null", "string"]}, "demo"),
        ({"const": "fixed"}, "fixed"),
        ({"type": "string", "enum": ["c", "f"]}, "c"),
        ({"enum": [3, 4]}, 3),
        # strings: formats and lengths
        ({"type": "string", "format": "date-time"}, "2026-01-01T00:00:00Z"),
        ({"type": "string", "format": "email"}, "demo@example.com"),
        ({"type": "string", "format": "uuid"}, "00000000-0000-4000-8000-000000000000"),
        ({"type": "string", "minLength": 6}, "demooo"),
        ({"type": "string", "maxLength": 2}, "de"),
        ({"minLength": 1}, "demo"),
        # numbers: 0 when allowed, else the bound nearest 0, stepped inside when exclusive
        ({"type": "integer", "minimum": 3}, 3),
        ({"type": "integer", "exclusiveMinimum": 3}, 4),
        ({"type": "integer", "exclusiveMinimum": 0, "multipleOf": 5}, 5),
        ({"type": "integer", "minimum": 1.5}, 2),
        ({"type": "integer", "maximum": -2}, -2),
        ({"type": "integer", "exclusiveMaximum": -2}, -3),
        ({"type": "integer", "maximum": -5, "multipleOf": 3}, -6),
        ({"type": "integer", "minimum": -5, "maximum": 5}, 0),
        ({"type": "number", "exclusiveMinimum": 0, "maximum": 1}, 0.5),
        ({"type": "number", "exclusiveMinimum": 2}, 3),
        ({"type": "number", "minimum": 0.25}, 0.25),
        # objects: required properties only, then enough for minProperties
        ({"type": "object", "properties": {"a": {"type": "string"}}}, {}),
        (
            {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
            {"city": "demo", "unit": "c"},
        ),
        ({"properties": {"a": {"type": "integer"}, "b": {}}, "minProperties": 1}, {"a": 0}),
        ({"type": "object", "required": ["untyped"]}, {"untyped": None}),
        (
            {
                "type": "object",
                "properties": {
                    "inner": {
                        "type": "object",
                        "properties": {"n": {"type": "integer", "minimum": 1}},
                        "required": ["n"],
                    }
                },
                "required": ["inner"],
            },
            {"inner": {"n": 1}},
        ),
        # arrays: one item (or minItems), none when no item schema or maxItems 0
        ({"type": "array", "items": {"type": "string"}}, ["demo"]),
        ({"type": "array", "items": {"type": "integer"}, "minItems": 3}, [0, 0, 0]),
        ({"type": "array", "items": {"type": "integer"}, "maxItems": 0}, []),
        ({"type": "array"}, []),
        (
            {"type": "array", "prefixItems": [{"type": "string"}, {"type": "boolean"}]},
            ["demo", True],
        ),
        # combinators and references
        ({"anyOf": [{"type": "null"}, {"type": "integer"}]}, 0),
        ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "demo"),
        (
            {
                "allOf": [
                    {"properties": {"a": {"type": "string"}}, "required": ["a"]},
                    {"properties": {"b": {"type": "integer"}}, "required": ["b"]},
                ]
            },
            {"a": "demo", "b": 0},
        ),
        (
            {
                "type": "object",
                "properties": {"home": {"$ref": "#/$defs/Place"}},
                "required": ["home"],
                "$defs": {
                    "Place": {
                        "type": "object",
                        "properties": {"zip": {"type": "string"}},
                        "required": ["zip"],
                    }
                },
            },
            {"home": {"zip": "demo"}},
        ),
        (
            {"$ref": "#/definitions/a~1b", "definitions": {"a/b": {"type": "integer"}}},
            0,
        ),
        ({"$ref": "https://example.com/elsewhere.json"}, None),
    ],
)
def test_instance(schema: dict[str, Any], expected: Any) -> None:
    assert instance(schema) == expected


def test_a_reference_cycle_ends() -> None:
    # a list whose every item must be such a list again has no finite instance: the demo
    # nests a while, then gives up with None rather than recursing without end
    node = {"type": "array", "items": {"$ref": "#/$defs/Node"}, "minItems": 1}
    made = instance({"$ref": "#/$defs/Node", "$defs": {"Node": node}})
    depth = 0
    while isinstance(made, list):
        (made,) = made
        depth += 1
    assert made is None and depth > 3


class Unit(StrEnum):
    celsius = "c"
    fahrenheit = "f"


class Place(pydantic.BaseModel):
    city: str
    country: str | None
    tags: list[str]


class Forecast(pydantic.BaseModel):
    place: Place
    unit: Unit
    days: int = pydantic.Field(ge=1, le=14)
    kind: Literal["daily", "hourly"]
    alerts: list[Place]
    confidence: float = pydantic.Field(gt=0, lt=1)
    note: str = pydantic.Field(min_length=8)


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param(Forecast.model_json_schema(), id="pydantic"),
        pytest.param(
            openai.pydantic_function_tool(Forecast)["function"]["parameters"], id="strict"
        ),
    ],
)
def test_instance_validates_against_a_pydantic_model(schema: dict[str, Any]) -> None:
    made = instance(schema)
    forecast = Forecast.model_validate(made)
    assert forecast.place.tags == ["demo"] and forecast.days == 1
    assert forecast.unit is Unit.celsius and 0 < forecast.confidence < 1
