"""Server-sent events as they pass: split into whole events the moment each one's blank line
arrives (only a partial event waits, for its own end), read for usage, and, for a client that
did not ask for usage, cleared of it. Pure.
"""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.types import Usage
from gateway.usage import PRICING, UsageReader, json_value

_LINE_END = re.compile(rb"\r\n|\r|\n")
# Only events that name usage or pricing are parsed; the rest pass as bytes.
_USAGE = b'"usage"'
_PRICING = b'"' + PRICING.encode() + b'"'
_NULL_USAGE_SUFFIXES = (b',"usage":null}', b', "usage": null}')
_NULL_USAGE_ENDS = tuple(suffix + b"\n\n" for suffix in _NULL_USAGE_SUFFIXES)


class EventStream:
    """Server-sent events, forwarded whole as each one ends, read for usage.

    With `hide_usage` (the gateway added `stream_options.include_usage` for a client that did
    not ask), the usage-only event (no choices) is dropped, and `usage` is removed from the
    others (`"usage": null` on every chunk, the figures on NanoGPT's finish frame), so the
    client sees what it would have seen without the gateway.
    """

    def __init__(self, reader: UsageReader, *, hide_usage: bool = False) -> None:
        self._reader = reader
        self._hide_usage = hide_usage
        # The partial event, as the chunks that brought it (joined once, when it ends: a long
        # event must not be copied or scanned again with every chunk).
        self._parts: list[bytes] = []
        self._lines: _Lines | None = None
        """Set at the first CR: from then on, events are found line by line."""

    @property
    def usage(self) -> Usage | None:
        return self._reader.usage

    def feed(self, chunk: bytes) -> bytes:
        if self._lines is not None or b"\r" in chunk:
            return self._feed_event_by_event(chunk)
        # The usual case, lines ending in LF alone, done a chunk at a time rather than an event
        # at a time: every complete event at once, `"usage": null` cut from all of them with
        # one replace, and only the events that still name usage looked at one by one.
        parts = self._parts
        last_end = chunk.rfind(b"\n\n")
        if last_end >= 0:
            cut = last_end + 2
        elif chunk[:1] == b"\n" and parts and parts[-1][-1:] == b"\n":
            cut = 1  # the blank line began in the previous chunk
        else:
            if chunk:
                parts.append(chunk)
            return b""
        if parts:
            parts.append(chunk[:cut])
            complete = b"".join(parts)
            parts.clear()
        else:
            complete = chunk[:cut]
        if cut < len(chunk):
            parts.append(chunk[cut:])
        if self._hide_usage:
            for null_usage_end in _NULL_USAGE_ENDS:
                complete = complete.replace(null_usage_end, b"}\n\n")
        out: list[bytes] = []
        done = 0
        usage_at, pricing_at = complete.find(_USAGE), complete.find(_PRICING)
        while (at := _earliest(usage_at, pricing_at)) >= 0:
            start = complete.rfind(b"\n\n", done, at)
            start = done if start < 0 else start + 2
            end = complete.find(b"\n\n", at) + 2
            out += (complete[done:start], self._inspect(complete[start:end]))
            done = end
            if 0 <= usage_at < done:
                usage_at = complete.find(_USAGE, done)
            if 0 <= pricing_at < done:
                pricing_at = complete.find(_PRICING, done)
        if not out:
            return complete
        out.append(complete[done:])
        return b"".join(out)

    def _feed_event_by_event(self, chunk: bytes) -> bytes:
        """Any line ends (CR, CRLF, LF, mixed), one event at a time."""
        if self._lines is None:
            self._lines = _Lines(b"".join(self._parts))
            self._parts = []
        return b"".join(self._inspect(event) for event in self._lines.feed(chunk))

    def finish(self) -> bytes:
        """A last event that never got its blank line is forwarded as the upstream sent it."""
        if self._lines is not None:
            rest = self._lines.rest()
        else:
            rest, self._parts = b"".join(self._parts), []
        return self._inspect(rest) if rest else b""

    def _inspect(self, event: bytes) -> bytes:
        if _USAGE not in event and _PRICING not in event:
            return event
        # Most events of a stream that asked for usage end in `"usage": null}`: nothing to read,
        # and when hiding, the key is cut from the end without parsing the JSON.
        body = event.rstrip(b"\r\n")
        for suffix in _NULL_USAGE_SUFFIXES:
            if body.endswith(suffix) and _PRICING not in body:
                if not self._hide_usage:
                    return event
                return body[: -len(suffix)] + b"}" + event[len(body) :]
        payload, data_line = _payload(event)
        self._reader.read(payload)
        if not self._hide_usage or not isinstance(payload, dict) or "usage" not in payload:
            return event
        if payload.get("choices"):
            return _without_usage(event, data_line, payload)
        return b""  # the usage-only event the gateway asked for


def _earliest(a: int, b: int) -> int:
    """The first of two `find` results, -1 if neither found anything."""
    return a if b < 0 or 0 <= a < b else b


class _Lines:
    """Events split at their blank line, whatever ends the lines, remembering where the scan
    stopped: each chunk is scanned once (and a `\\r` at the very end, which may be the first
    half of `\\r\\n`, once more with the next byte)."""

    __slots__ = ("_buffer", "_line_start", "_scanned")

    def __init__(self, pending: bytes) -> None:
        self._buffer = bytearray(pending)
        """The partial event; it starts at 0."""
        self._line_start = 0
        self._scanned = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += chunk
        events: list[bytes] = []
        event_start, line_start, scanned = 0, self._line_start, len(buffer)
        for match in _LINE_END.finditer(buffer, self._scanned):
            if match.end() == len(buffer) and match.group() == b"\r":
                scanned = match.start()  # CR or CRLF: the next byte tells
                break
            if match.start() == line_start and match.start() > event_start:
                events.append(bytes(buffer[event_start : match.end()]))
                event_start = match.end()
            line_start = match.end()
        del buffer[:event_start]  # a bytearray drops its head in place
        self._line_start, self._scanned = line_start - event_start, scanned - event_start
        return events

    def rest(self) -> bytes:
        rest = bytes(self._buffer)
        self._buffer.clear()
        self._line_start = self._scanned = 0
        return rest


def _payload(event: bytes) -> tuple[Any, bytes | None]:
    """The JSON in an event's `data:` field, and that field's line when it is a single line."""
    lines = [line for line in _LINE_END.split(event) if line.startswith(b"data:")]
    data = b"\n".join(line[5:].removeprefix(b" ") for line in lines)
    if not data or data == b"[DONE]":
        return None, None
    return json_value(data), lines[0] if len(lines) == 1 else None


def _without_usage(event: bytes, data_line: bytes | None, payload: dict[str, Any]) -> bytes:
    """The event without its top-level `usage`, re-encoded (`EventStream._inspect` has already
    cut the usual trailing `"usage": null` without parsing)."""
    if data_line is None:
        return event
    rest = {k: v for k, v in payload.items() if k != "usage"}
    encoded = json.dumps(rest, ensure_ascii=False, separators=(",", ":")).encode()
    return event.replace(data_line, b"data: " + encoded, 1)
