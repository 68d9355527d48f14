"""Request parsing: what policy needs, and a 400 (never a 500) for anything malformed."""

from __future__ import annotations

import json

import pytest

from gateway.errors import InvalidRequest
from gateway.protocol import Call, endpoint_of, parse_call, with_stream_usage

JSON = "application/json"


def test_reads_model_and_stream() -> None:
    body = json.dumps({"model": "openai/gpt-5.2", "stream": True, "messages": []}).encode()
    assert parse_call("chat/completions", "POST", JSON, body) == Call(
        "chat/completions", "openai/gpt-5.2", True
    )


def test_any_json_post_with_a_model_is_checked() -> None:
    body = b'{"model": "x/y", "input": "hi"}'
    assert (
        parse_call("audio/speech", "POST", "application/json; charset=utf-8", body).model == "x/y"
    )
    assert parse_call("audio/speech", "POST", "multipart/form-data", b"--x").model is None
    assert parse_call("models", "GET", JSON, b"").model is None


@pytest.mark.parametrize(
    ("endpoint", "content_type", "body", "message"),
    [
        ("chat/completions", JSON, b"", "empty"),
        ("chat/completions", "text/plain", b"not json", "not valid JSON"),
        ("embeddings", JSON, b'["a list"]', "must be a JSON object"),
        ("responses", JSON, b"\xff\xfe\x00", "not valid JSON"),
        ("completions", JSON, b"[" * 100_000, "not valid JSON"),
        ("chat/completions", JSON, b'{"model": 5}', "'model' must be a non-empty string"),
        ("chat/completions", JSON, b'{"model": ""}', "'model' must be a non-empty string"),
        ("chat/completions", JSON, b'{"messages": []}', "You must provide a model"),
        ("chat/completions", JSON, b'{"model": "m", "stream": "yes"}', "'stream' must be"),
        ("characters", "application/vnd.api+json", b"{", "not valid JSON"),
    ],
)
def test_bad_bodies_are_400(endpoint: str, content_type: str, body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        parse_call(endpoint, "POST", content_type, body)
    assert excinfo.value.status_code == 400 and message in excinfo.value.message


def test_responses_may_name_a_character_instead_of_a_model() -> None:
    body = b'{"character_id": "helpful-guide", "input": "hi"}'
    assert parse_call("responses", "POST", JSON, body) == Call("responses", None, False)


@pytest.mark.parametrize(
    "path", ["../check-balance", "chat/./completions", "x/%2e%2e/receive-nano"]
)
def test_dot_segments_are_refused(path: str) -> None:
    with pytest.raises(InvalidRequest):
        endpoint_of(path)


def test_endpoint_of() -> None:
    assert endpoint_of("chat/completions/") == "chat/completions"
    assert endpoint_of("models/openai%2Fgpt-5.2") == "models/openai%2Fgpt-5.2"


def call(endpoint: str = "chat/completions", **payload: object) -> Call:
    body = json.dumps({"model": "x/y", **payload}).encode()
    return parse_call(endpoint, "POST", JSON, body)


@pytest.mark.parametrize(
    ("endpoint", "payload", "injectable"),
    [
        ("chat/completions", {"stream": True}, True),
        ("completions", {"stream": True, "stream_options": {}}, True),
        ("chat/completions", {"stream": True, "stream_options": {"include_usage": False}}, True),
        ("chat/completions", {"stream": True, "stream_options": {"include_usage": True}}, False),
        ("chat/completions", {"stream": True, "stream_options": "yes"}, False),
        ("chat/completions", {"stream": False}, False),
        ("responses", {"stream": True}, False),  # its stream always ends with usage
        ("embeddings", {}, False),
    ],
)
def test_which_streams_get_usage_asked_for(
    endpoint: str, payload: dict[str, object], injectable: bool
) -> None:
    assert call(endpoint, **payload).stream_usage_injectable is injectable


def test_stream_usage_is_asked_for_and_everything_else_kept() -> None:
    original = call(stream=True, messages=[{"role": "user", "content": "é"}], stream_options={})
    body = json.dumps(original.payload).encode()
    injected = with_stream_usage(original, body)
    assert json.loads(injected) == {**original.payload, "stream_options": {"include_usage": True}}
    assert "é".encode() in injected  # UTF-8, not an ASCII escape three times the size
    assert call(stream=True, stream_options={"include_usage": True}).asks_stream_usage


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "m", "stream": true, "messages": [{"content": "\\u00e9 \xc3\xa9"}]}',
        b'  \n {"model":"m","stream":true}',
        b"\xef\xbb\xbf" + b'{"model": "m", "stream": true}',  # a UTF-8 BOM
        json.dumps({"model": "m", "stream": True}).encode("utf-16"),
    ],
)
def test_stream_usage_is_spliced_into_the_bytes_the_client_sent(body: bytes) -> None:
    original = parse_call("chat/completions", "POST", JSON, body)
    injected = with_stream_usage(original, body)
    expected = {**original.payload, "stream_options": {"include_usage": True}}
    assert json.loads(injected) == expected
    if body.lstrip().startswith(b"{"):  # spliced: everything the client sent is still there
        assert injected.replace(b'"stream_options":{"include_usage":true},', b"") == body
