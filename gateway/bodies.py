"""Decoding request bodies: a JSON object, whole or in slices. Pure.

A 1 MB chat body takes about 4 ms to decode, and a thread does not help: CPython's json
decoder holds the GIL throughout (measured: the event loop stalled as long with
`asyncio.to_thread` as without). So a large body is decoded a top-level value, or an array
element, at a time by a generator that yields between slices; the caller gives the event loop
a turn at each yield. The result is exactly `json.loads`'s, errors included.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator
from typing import Any

SLICE_CHARS = 64 * 1024
"""About 0.25 ms of decoding between two turns of the event loop."""

Slices = Generator[None, None, Any]
_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def decode_in_slices(body: bytes, slice_chars: int = SLICE_CHARS) -> Slices:
    """`json.loads(body)`, yielding whenever about `slice_chars` have been decoded since the
    last yield; raises what `json.loads` raises. Only a top-level object is sliced."""
    text = body.decode(json.detect_encoding(body), "surrogatepass")
    cursor = _Cursor(text, slice_chars)
    if text[cursor.skip(0) : cursor.skip(0) + 1] != "{":
        return json.loads(text)
    value = yield from cursor.object(cursor.skip(0))
    if cursor.skip(cursor.end) != len(text):
        raise json.JSONDecodeError("Extra data", text, cursor.skip(cursor.end))
    return value


class _Cursor:
    def __init__(self, text: str, slice_chars: int) -> None:
        self.text = text
        self.slice_chars = slice_chars
        self.yielded_at = 0
        self.end = 0

    def skip(self, at: int) -> int:
        match = _WHITESPACE.match(self.text, at)
        assert match is not None  # `*` matches the empty string
        return match.end()

    def expect(self, at: int, what: str, message: str) -> None:
        if self.text[at : at + 1] != what:
            raise json.JSONDecodeError(message, self.text, at)

    def object(self, at: int) -> Slices:
        """The object whose `{` is at `at`; sets `self.end` past its `}`."""
        result: dict[str, Any] = {}
        at = self.skip(at + 1)
        if self.text[at : at + 1] == "}":
            self.end = at + 1
            return result
        while True:
            self.expect(at, '"', "Expecting property name enclosed in double quotes")
            key, at = _DECODER.raw_decode(self.text, at)  # a string: it starts with a quote
            at = self.skip(at)
            self.expect(at, ":", "Expecting ':' delimiter")
            result[key] = yield from self.value(self.skip(at + 1))
            at = self.skip(self.end)
            if self.text[at : at + 1] == "}":
                self.end = at + 1
                return result
            self.expect(at, ",", "Expecting ',' delimiter")
            at = self.skip(at + 1)

    def array(self, at: int) -> Slices:
        """The array whose `[` is at `at`, an element at a time; sets `self.end`."""
        result: list[Any] = []
        at = self.skip(at + 1)
        if self.text[at : at + 1] == "]":
            self.end = at + 1
            return result
        while True:
            result.append((yield from self.value(at)))
            at = self.skip(self.end)
            if self.text[at : at + 1] == "]":
                self.end = at + 1
                return result
            self.expect(at, ",", "Expecting ',' delimiter")
            at = self.skip(at + 1)

    def value(self, at: int) -> Slices:
        if self.text[at : at + 1] == "[":
            return (yield from self.array(at))
        value, self.end = _DECODER.raw_decode(self.text, at)
        if self.end - self.yielded_at >= self.slice_chars:
            self.yielded_at = self.end
            yield
        return value
