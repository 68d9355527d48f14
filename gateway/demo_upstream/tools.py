"""Whether the demo calls a tool, which, and with what: the rule every API family shares once its
own spelling of `tools` and `tool_choice` is read. Pure.

The rule: `none` never calls; `required` or a named tool always calls (the named one, else the
first); `auto` calls the first tool when the conversation ends with the user's own words, and
answers in text after a tool's result.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from gateway.demo_upstream.schema import instance

Mode = Literal["none", "auto", "required"]


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    parameters: Any  # the JSON Schema of its arguments, or None


@dataclass(frozen=True, slots=True)
class Call:
    id: str  # without the family's prefix (`call_`, `toolu_`)
    name: str
    arguments: str  # a JSON object, compact, valid against the tool's parameters
    input: dict[str, Any]


def pick(tools: list[Tool], mode: Mode, named: str | None, user_turn: bool) -> Tool | None:
    """The tool the demo calls now, or None to answer in text; `named` is a forced tool."""
    if not tools or mode == "none":
        return None
    if named is not None or mode == "required":
        return next((t for t in tools if t.name == named), tools[0])
    return tools[0] if user_turn else None


def call(tool: Tool, turn: int) -> Call:
    """The call of `tool` at the `turn`-th item of a conversation: arguments fill the schema's
    required properties; the id is the same for the same turn, and differs between turns."""
    made = instance(tool.parameters) if tool.parameters is not None else {}
    given = made if isinstance(made, dict) else {}
    arguments = json.dumps(given, separators=(",", ":"))
    ident = hashlib.sha256(f"{turn}:{tool.name}:{arguments}".encode()).hexdigest()[:24]
    return Call(id=ident, name=tool.name, arguments=arguments, input=given)


def fragments(text: str, size: int = 8) -> list[str]:
    """`text` cut into the pieces a stream sends it in (a tool call's JSON arguments)."""
    return [text[i : i + size] for i in range(0, len(text), size)]
