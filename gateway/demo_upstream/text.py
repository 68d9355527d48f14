"""The demo's canned words: the reply it gives (in text, or as JSON when structured output is
asked for), how it counts tokens (whitespace-separated words), how a stream cuts a reply into
deltas, and what a `:thinking` model "thinks". Pure.
"""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.demo_upstream.schema import instance

GREETING = "Hello from the NanoGPT demo upstream."
REASONING = "The user wants a reply; answer with the demo greeting and echo their words."
_PIECE = re.compile(r"\s*\S+\s*")


def words(text: Any) -> int:
    """The stand-in's token count: whitespace-separated words."""
    return len(text.split()) if isinstance(text, str) else 0


def pieces(content: str) -> list[str]:
    """`content` cut into the deltas a stream sends, one word (and the space after it) each;
    joined, they are `content` again."""
    return _PIECE.findall(content) or ([content] if content else [])


def cut(content: str, limit: int | None) -> tuple[str, bool]:
    """`content` cut to `limit` words, and whether it was cut."""
    parts = pieces(content)
    if limit is None or len(parts) <= limit:
        return content, False
    return "".join(parts[:limit]).rstrip(), True


def reply(said: str, limit: int | None, *, tool_result: bool = False) -> tuple[str, bool]:
    """The demo reply to `said` (the user's words, or a tool's result), cut to `limit` words,
    and whether it was cut."""
    heard = "The tool returned:" if tool_result else "You said:"
    return cut(" ".join(f"{GREETING} {heard} {said[:200]}".split()), limit)


def json_reply(said: str, schema: Any = None) -> str:
    """Structured output: a minimal instance of `schema`, or, with none, a JSON object holding
    the demo's greeting and what was said."""
    made = instance(schema) if schema is not None else {"reply": GREETING, "you_said": said[:200]}
    return json.dumps(made)


def output_tokens(content: str, model: str) -> tuple[int, int]:
    """Output tokens of a reply (reasoning included) and the reasoning part of them."""
    reasoning = words(REASONING) if model.endswith(":thinking") else 0
    return words(content) + reasoning, reasoning
