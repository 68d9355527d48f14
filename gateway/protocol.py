"""The OpenAI wire format on the way in: which endpoint, which model, streaming or not.

Parses only what auth, policy and metering need, and turns every malformed body into a 400 the
client can read, never a 500. Pure: bytes in, values out.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from gateway import bodies
from gateway.errors import InvalidRequest

MODEL_ENDPOINTS = frozenset({"chat/completions", "completions", "embeddings", "responses"})
MODEL_REQUIRED = frozenset({"chat/completions", "completions", "embeddings"})
# Where a stream reports usage only when asked with `stream_options.include_usage`; the
# Responses API always ends its stream with `response.completed`, usage included.
STREAM_USAGE_ON_REQUEST = frozenset({"chat/completions", "completions"})


@dataclass(frozen=True, slots=True)
class Call:
    """What one proxied request asks for."""

    endpoint: str
    model: str | None = None
    stream: bool = False
    payload: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def asks_stream_usage(self) -> bool:
        """The client itself asked for the usage event (`stream_options.include_usage`)."""
        options = self.payload.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True

    @property
    def stream_usage_injectable(self) -> bool:
        """A stream that reports usage only if asked, whose client did not ask (and did not
        send a malformed `stream_options`, which NanoGPT should reject as it is)."""
        options = self.payload.get("stream_options")
        return (
            self.stream
            and self.endpoint in STREAM_USAGE_ON_REQUEST
            and (options is None or isinstance(options, dict))
            and not self.asks_stream_usage
        )


def endpoint_of(subpath: str) -> str:
    """`chat/completions` from the path below `/v1/`, refusing dot segments: `/v1/../x` must not
    reach NanoGPT routes outside `/v1`, once the upstream client normalises the URL."""
    segments = subpath.split("/")
    if any(unquote(s) in (".", "..") for s in segments):
        raise InvalidRequest("The request path must not contain '.' or '..' segments.")
    return subpath.strip("/")


def is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def parse_call(endpoint: str, method: str, content_type: str, body: bytes) -> Call:
    """Read `model` and `stream` from a request body that carries JSON."""
    if not _carries_json(endpoint, method, content_type):
        return Call(endpoint)
    return _call(endpoint, _json_object(body))


def parse_call_in_slices(
    endpoint: str, method: str, content_type: str, body: bytes
) -> Generator[None, None, Call]:
    """`parse_call`, yielding between slices of a large body (`bodies.decode_in_slices`)."""
    if not _carries_json(endpoint, method, content_type):
        return Call(endpoint)
    _require_content(body)
    try:
        payload = yield from bodies.decode_in_slices(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _not_json(exc) from None
    return _call(endpoint, _object(payload))


def _carries_json(endpoint: str, method: str, content_type: str) -> bool:
    return method == "POST" and (endpoint in MODEL_ENDPOINTS or is_json(content_type))


def _call(endpoint: str, payload: dict[str, Any]) -> Call:
    model = payload.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise InvalidRequest("'model' must be a non-empty string.", param="model")
    if model is None and endpoint in MODEL_REQUIRED:
        raise InvalidRequest("You must provide a model parameter.", param="model")
    stream = payload.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise InvalidRequest("'stream' must be true or false.", param="stream")
    return Call(endpoint, model, bool(stream), payload)


_INCLUDE_USAGE = b'"stream_options":{"include_usage":true},'


def with_stream_usage(call: Call, body: bytes) -> bytes:
    """The request body, asking for the final usage event of a stream.

    When the client sent no `stream_options` (the usual case) the key is spliced in after the
    opening brace, so a 1 MB context is copied once, not decoded and re-encoded; otherwise the
    payload is re-encoded as compact UTF-8 (never `\\u00e9` for `é`)."""
    options = call.payload.get("stream_options")
    start = len(body) - len(body.lstrip())
    if options is None and body[start : start + 1] == b"{":
        rest = body[start + 1 :]
        splice = _INCLUDE_USAGE if rest.lstrip()[:1] != b"}" else _INCLUDE_USAGE[:-1]
        return body[: start + 1] + splice + rest
    payload = {**call.payload, "stream_options": {**(options or {}), "include_usage": True}}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _json_object(body: bytes) -> dict[str, Any]:
    _require_content(body)
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _not_json(exc) from None
    return _object(payload)


def _require_content(body: bytes) -> None:
    if not body.strip():
        raise InvalidRequest(
            "The request body is empty; expected a JSON object.", code="invalid_json"
        )


def _not_json(exc: Exception) -> InvalidRequest:
    return InvalidRequest(f"The request body is not valid JSON: {exc}.", code="invalid_json")


def _object(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return payload
