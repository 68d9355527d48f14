"""Token usage read from responses as they pass through, without holding the stream back. Pure.

A `BodyWatcher` sees every chunk of a response body on its way to the client and returns what
to forward. `EventStream` splits SSE into whole events the moment each one's blank line arrives
(only a partial event waits, for its own end) and can hide the usage-only event the gateway
asked for on a client's behalf; `JsonBody` keeps a copy of a JSON answer to read its `usage`
at the end. Both know the usage shapes of chat/completions, completions, embeddings and the
Responses API.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

from gateway.types import Usage


class BodyWatcher(Protocol):
    usage: Usage | None

    def feed(self, chunk: bytes) -> bytes:
        """What of the body so far can go to the client now."""
        ...

    def finish(self) -> bytes:
        """What is left once the upstream body has ended."""
        ...


def usage_of(payload: Any) -> Usage | None:
    """The usage in a response object, a stream chunk or a Responses stream event, if any.

    Chat/completions and embeddings say `prompt_tokens`/`completion_tokens`; the Responses API
    says `input_tokens`/`output_tokens` and, when streaming, nests them in `response`.
    """
    if not isinstance(payload, dict):
        return None
    usage = payload.get("usage")
    if usage is None and isinstance(payload.get("response"), dict):
        usage = payload["response"].get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage, "prompt_tokens", "input_tokens")
    completion = _count(usage, "completion_tokens", "output_tokens")
    if prompt is None and completion is None:
        return None
    prompt_details = _details(usage, "prompt_tokens_details", "input_tokens_details")
    completion_details = _details(usage, "completion_tokens_details", "output_tokens_details")
    return Usage(
        prompt_tokens=prompt or 0,
        completion_tokens=completion or 0,
        cached_prompt_tokens=_count(prompt_details, "cached_tokens") or 0,
        reasoning_tokens=_count(completion_details, "reasoning_tokens") or 0,
    )


def _count(data: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = data.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _details(usage: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        if isinstance(details := usage.get(name), dict):
            return details
    return {}


class Passthrough:
    """For bodies that carry no usage: forwards every chunk untouched."""

    usage: Usage | None = None

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def finish(self) -> bytes:
        return b""


class JsonBody:
    """Forwards a JSON answer chunk by chunk and reads its `usage` once it is whole.

    A copy is kept only up to `limit` bytes: an answer larger than that is relayed all the
    same, and counted as unmetered rather than held in memory.
    """

    def __init__(self, limit: int = 16 * 1024 * 1024) -> None:
        self.usage: Usage | None = None
        self._parts: list[bytes] | None = []
        self._size = 0
        self._limit = limit

    def feed(self, chunk: bytes) -> bytes:
        if self._parts is not None:
            self._size += len(chunk)
            if self._size > self._limit:
                self._parts = None
            else:
                self._parts.append(chunk)
        return chunk

    def finish(self) -> bytes:
        if self._parts:
            self.usage = usage_of(_json(b"".join(self._parts)))
        return b""


_LINE_END = re.compile(rb"\r\n|\r|\n")
_NULL_USAGE_SUFFIXES = (b',"usage":null}', b', "usage": null}')
_NULL_USAGE_ENDS = tuple(suffix + b"\n\n" for suffix in _NULL_USAGE_SUFFIXES)


class EventStream:
    """Server-sent events, forwarded whole as each one ends, watched for usage.

    With `hide_usage` (the gateway added `stream_options.include_usage` for a client that did
    not ask), the usage-only event (no choices) is dropped and `"usage": null` is removed
    from the others, so the client sees what it would have seen without the gateway. An event
    whose usage rides along with choices is forwarded as it is.
    """

    def __init__(self, *, hide_usage: bool = False) -> None:
        self.usage: Usage | None = None
        self._hide_usage = hide_usage
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk if self._pending else chunk
        if b"\r" in data:
            return self._feed_event_by_event(data)
        # The usual case, lines ending in LF alone, done a chunk at a time rather than an event
        # at a time: every complete event at once, `"usage": null` cut from all of them with
        # one replace, and only the events that still name usage looked at one by one.
        last_end = data.rfind(b"\n\n")
        if last_end < 0:
            self._pending = data
            return b""
        complete, self._pending = data[: last_end + 2], data[last_end + 2 :]
        if self._hide_usage:
            for null_usage_end in _NULL_USAGE_ENDS:
                complete = complete.replace(null_usage_end, b"}\n\n")
        out: list[bytes] = []
        done = 0
        while (at := complete.find(b'"usage"', done)) >= 0:
            start = complete.rfind(b"\n\n", done, at)
            start = done if start < 0 else start + 2
            end = complete.find(b"\n\n", at) + 2
            out += (complete[done:start], self._inspect(complete[start:end]))
            done = end
        if not out:
            return complete
        out.append(complete[done:])
        return b"".join(out)

    def _feed_event_by_event(self, data: bytes) -> bytes:
        """Any line ends (CR, CRLF, LF, mixed), one event at a time."""
        out: list[bytes] = []
        start = 0
        while (end := _event_end(data, start)) is not None:
            if event := self._inspect(data[start:end]):
                out.append(event)
            start = end
        self._pending = data[start:]
        return b"".join(out)

    def finish(self) -> bytes:
        """A last event that never got its blank line is forwarded as the upstream sent it."""
        rest, self._pending = self._pending, b""
        return self._inspect(rest) if rest else b""

    def _inspect(self, event: bytes) -> bytes:
        if b'"usage"' not in event:
            return event
        # Most events of a stream that asked for usage end in `"usage": null}`: nothing to read,
        # and when hiding, the key is cut from the end without parsing the JSON.
        body = event.rstrip(b"\r\n")
        for suffix in _NULL_USAGE_SUFFIXES:
            if body.endswith(suffix):
                if not self._hide_usage:
                    return event
                return body[: -len(suffix)] + b"}" + event[len(body) :]
        payload, data_line = _payload(event)
        usage = usage_of(payload)
        if usage is not None:
            self.usage = usage
        if not self._hide_usage or not isinstance(payload, dict) or "usage" not in payload:
            return event
        if usage is not None:
            return event if payload.get("choices") else b""
        return _without_null_usage(event, data_line, payload)


def _event_end(data: bytes, start: int) -> int | None:
    """Where the event starting at `start` ends: just past its first empty line. A `\\r` at the
    very end may be the first half of `\\r\\n`, so it waits for the next byte."""
    previous_end = start
    for match in _LINE_END.finditer(data, start):
        if match.end() == len(data) and match.group() == b"\r":
            return None
        if match.start() == previous_end and match.start() > start:
            return match.end()
        previous_end = match.end()
    return None


def _payload(event: bytes) -> tuple[Any, bytes | None]:
    """The JSON in an event's `data:` field, and that field's line when it is a single line."""
    lines = [line for line in _LINE_END.split(event) if line.startswith(b"data:")]
    data = b"\n".join(line[5:].removeprefix(b" ") for line in lines)
    if not data or data == b"[DONE]":
        return None, None
    return _json(data), lines[0] if len(lines) == 1 else None


def _json(data: bytes) -> Any:
    """The JSON value, or `None` for anything that is not JSON: usage is read where it can be."""
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None


def _without_null_usage(event: bytes, data_line: bytes | None, payload: dict[str, Any]) -> bytes:
    """The event without its top-level `"usage": null`, re-encoded (`EventStream._inspect`
    has already cut the usual trailing key without parsing)."""
    if data_line is None:
        return event
    rest = {k: v for k, v in payload.items() if k != "usage"}
    return event.replace(data_line, b"data: " + json.dumps(rest).encode(), 1)
