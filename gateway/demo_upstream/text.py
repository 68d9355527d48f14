"""The demo's canned words: the reply it gives, how it counts tokens (whitespace-separated words),
how a stream cuts a reply into deltas, and what a `:thinking` model "thinks". Pure: imports only
the standard library.
"""

from __future__ import annotations

from typing import Any

REASONING = "The user wants a reply; answer with the demo greeting and echo their words."


def words(text: Any) -> int:
    """The stand-in's token count: whitespace-separated words."""
    return len(text.split()) if isinstance(text, str) else 0


def pieces(content: str) -> list[str]:
    """`content` cut into the deltas a stream sends, one word each."""
    parts = content.split()
    return [w + " " for w in parts[:-1]] + parts[-1:]


def reply(said: str, limit: int | None) -> tuple[str, bool]:
    """The demo reply to `said`, cut to `limit` words, and whether it was cut."""
    parts = f"Hello from the NanoGPT demo upstream. You said: {said[:200]}".split()
    return " ".join(parts[:limit]), limit is not None and len(parts) > limit


def output_tokens(content: str, model: str) -> tuple[int, int]:
    """Output tokens of a reply (reasoning included) and the reasoning part of them."""
    reasoning = words(REASONING) if model.endswith(":thinking") else 0
    return words(content) + reasoning, reasoning
