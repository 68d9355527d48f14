"""The OpenAI wire format on the way in: which endpoint, which model, streaming or not.

Parses only what auth, policy and metering need, and turns every malformed body into a 400 the
client can read, never a 500. Pure: bytes in, values out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

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
    if method != "POST" or not (endpoint in MODEL_ENDPOINTS or is_json(content_type)):
        return Call(endpoint)
    payload = _json_object(body)
    model = payload.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise InvalidRequest("'model' must be a non-empty string.", param="model")
    if model is None and endpoint in MODEL_REQUIRED:
        raise InvalidRequest("You must provide a model parameter.", param="model")
    stream = payload.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise InvalidRequest("'stream' must be true or false.", param="stream")
    return Call(endpoint, model, bool(stream), payload)


def with_stream_usage(call: Call) -> bytes:
    """The request body re-encoded to ask for the final usage event of a stream."""
    options = call.payload.get("stream_options") or {}
    return json.dumps(
        {**call.payload, "stream_options": {**options, "include_usage": True}}
    ).encode()


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise InvalidRequest(
            "The request body is empty; expected a JSON object.", code="invalid_json"
        )
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON: {exc}.",
            code="invalid_json",
        ) from None
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return payload
