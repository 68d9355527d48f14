"""The wire format on the way in: which model a call names, whether it streams, and asking a
stream for its usage.

Parses only what auth, policy and metering need, and turns every malformed body into a 400 the
client can read, never a 500. Pure: bytes in, values out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway import bodies
from gateway.endpoints import Endpoint
from gateway.errors import InvalidRequest

BILLING_FIELDS = ("billing_mode", "billingMode", "provider")
"""Form fields NanoGPT reads as billing overrides ("Body (all endpoints)"), so the billing check
sees them in a form as in JSON."""
FORM_FIELDS = frozenset({"model", "stream", *BILLING_FIELDS})


@dataclass(frozen=True, slots=True)
class Call:
    """What one proxied request asks for."""

    endpoint: Endpoint
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
            and self.endpoint.stream_usage_on_request
            and (options is None or isinstance(options, dict))
            and not self.asks_stream_usage
        )


def parse_call(endpoint: Endpoint, content_type: str, body: bytes) -> Call:
    """Read `model` and `stream` from a request to an endpoint that names its model, from a
    form if the body is one, else from JSON whatever the content type says."""
    if not endpoint.names_model:
        return Call(endpoint)
    if bodies.is_form(content_type):
        return _form_call(endpoint, content_type, body)
    return _call(endpoint, _json_object(body))


def parse_call_in_slices(
    endpoint: Endpoint, content_type: str, body: bytes
) -> Generator[None, None, Call]:
    """`parse_call`, yielding between slices of a large JSON body (`bodies.decode_in_slices`)."""
    if not endpoint.names_model or bodies.is_form(content_type):
        return parse_call(endpoint, content_type, body)
    _require_content(body)
    try:
        payload = yield from bodies.decode_in_slices(body)
    except (ValueError, RecursionError) as exc:  # ValueError: also a 4301-digit integer
        raise _not_json(exc) from None
    return _call(endpoint, _object(payload))


def _form_call(endpoint: Endpoint, content_type: str, body: bytes) -> Call:
    try:
        fields = bodies.form_fields(content_type, body, FORM_FIELDS)
    except bodies.FormError as exc:
        raise InvalidRequest(f"The request's form cannot be read: {exc}.") from None
    stream = fields.get("stream", "false").strip().lower()
    if stream not in ("true", "false"):
        raise InvalidRequest("'stream' must be true or false.", param="stream")
    billing = {name: fields[name] for name in BILLING_FIELDS if name in fields}
    return _checked(endpoint, fields.get("model"), stream == "true", billing)


def _call(endpoint: Endpoint, payload: dict[str, Any]) -> Call:
    stream = payload.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise InvalidRequest("'stream' must be true or false.", param="stream")
    return _checked(endpoint, payload.get("model"), bool(stream), payload)


def _checked(endpoint: Endpoint, model: Any, stream: bool, payload: dict[str, Any]) -> Call:
    if model is not None and (not isinstance(model, str) or not model):
        raise InvalidRequest("'model' must be a non-empty string.", param="model")
    if model is None and endpoint.model_required:
        raise InvalidRequest("You must provide a model parameter.", param="model")
    return Call(endpoint, model, stream, payload)


_INCLUDE_USAGE = b'"stream_options":{"include_usage":true},'


def with_stream_usage(call: Call, body: bytes) -> bytes:
    """The request body, asking for the final usage event of a stream.

    When the client sent no `stream_options` (the usual case) the key is spliced in after the
    opening brace, so a 1 MB context is copied once, not decoded and re-encoded; otherwise the
    payload is re-encoded as compact UTF-8 (never `\\u00e9` for `é`)."""
    options = call.payload.get("stream_options")
    brace = _skip_whitespace(body, 0)
    if options is None and body[brace : brace + 1] == b"{":  # never `{}`: it says "stream"
        return b"".join((body[: brace + 1], _INCLUDE_USAGE, memoryview(body)[brace + 1 :]))
    payload = {**call.payload, "stream_options": {**(options or {}), "include_usage": True}}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _json_object(body: bytes) -> dict[str, Any]:
    _require_content(body)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # ValueError: also a 4301-digit integer
        raise _not_json(exc) from None
    return _object(payload)


_WHITESPACE = re.compile(rb"[ \t\r\n]*")


def _skip_whitespace(body: bytes, at: int) -> int:
    match = _WHITESPACE.match(body, at)
    assert match is not None  # `*` matches the empty string
    return match.end()


def _require_content(body: bytes) -> None:
    if not body or body.isspace():  # without copying a large body, as strip() would
        raise InvalidRequest(
            "The request body is empty; expected a JSON object.", code="invalid_json"
        )


def _not_json(exc: Exception) -> InvalidRequest:
    return InvalidRequest(f"The request body is not valid JSON: {exc}.", code="invalid_json")


def _object(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return payload
