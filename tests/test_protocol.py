"""Request parsing: what policy needs, and a 400 (never a 500) for anything malformed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.endpoints import ENDPOINTS, Endpoint
from gateway.errors import GatewayError, InvalidRequest
from gateway.protocol import Call, parse_call, parse_call_in_slices, with_stream_usage
from tests.test_bodies import JSON_VALUES, damaged_multipart, json_bodies, multipart_forms

JSON = "application/json"


def at(name: str) -> Endpoint:
    """The table's `POST` entry named `name`."""
    return next(e for e in ENDPOINTS if e.name == name and "POST" in e.methods)


def test_reads_model_and_stream() -> None:
    body = json.dumps({"model": "openai/gpt-5.2", "stream": True, "messages": []}).encode()
    assert parse_call(at("chat/completions"), JSON, body) == Call(
        at("chat/completions"), "openai/gpt-5.2", True
    )


@pytest.mark.parametrize(
    "content_type", [JSON, "application/json; charset=utf-8", "text/plain", "", "image/png"]
)
def test_a_json_body_is_read_whatever_its_content_type_says(content_type: str) -> None:
    body = b'{"model": "x/y", "prompt": "a cat"}'
    assert parse_call(at("images/generations"), content_type, body).model == "x/y"


def test_endpoints_that_name_no_model_are_not_parsed() -> None:
    assert parse_call(at("characters"), JSON, b"{").model is None


def multipart(*parts: tuple[str, bytes], boundary: str = "b0undary") -> tuple[str, bytes]:
    body = b"".join(
        f"--{boundary}\r\n{headers}\r\n\r\n".encode() + content + b"\r\n"
        for headers, content in parts
    )
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


AUDIO = b"ID3\x00\r\n--b0und\xff" * 1000  # binary that nearly looks like a boundary


def test_the_model_of_a_multipart_form_is_read() -> None:
    content_type, body = multipart(
        ('Content-Disposition: form-data; name="file"; filename="a.mp3"', AUDIO),
        ('Content-Disposition: form-data; name="model"', b"openai/whisper-1"),
        ('Content-Disposition: form-data; name="stream"', b"true"),
    )
    call = parse_call(at("audio/transcriptions"), content_type, body)
    assert (call.model, call.stream) == ("openai/whisper-1", True)
    quoted = 'multipart/form-data; boundary="b0undary"'
    assert parse_call(at("audio/transcriptions"), quoted, body).model == "openai/whisper-1"


def test_the_model_of_an_urlencoded_form_is_read() -> None:
    content_type = "application/x-www-form-urlencoded"
    body = b"prompt=a+cat&model=black-forest-labs%2Fflux"
    assert parse_call(at("images/edits"), content_type, body).model == "black-forest-labs/flux"


def test_a_form_without_a_model_is_refused_where_one_is_required() -> None:
    content_type, body = multipart(('Content-Disposition: form-data; name="file"', AUDIO))
    with pytest.raises(InvalidRequest) as refused:
        parse_call(at("audio/transcriptions"), content_type, body)
    assert refused.value.param == "model"
    assert parse_call(at("images/edits"), content_type, body).model is None  # optional


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        (
            *multipart(
                ('Content-Disposition: form-data; name="model"', b"a"),
                ('Content-Disposition: form-data; name="model"', b"b"),
            ),
            "given twice",
        ),
        (*multipart(('Content-Disposition: form-data; name="Model"', b"a")), "spelled"),
        ("multipart/form-data", b"--x\r\n", "boundary parameter"),
        ("multipart/form-data; boundary=zz", b"--x\r\n\r\nhi", "does not contain"),
        (
            "multipart/form-data; boundary=x",
            b'--x\nContent-Disposition: form-data; name="model"\n\na\n--x--',
            "CRLF",
        ),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="model"\r\n\r\na',
            "cut off",
        ),
        (
            *multipart(
                (
                    'Content-Disposition: form-data; name="model"\r\n'
                    "Content-Transfer-Encoding: base64",
                    b"YQ==",
                )
            ),
            "transfer-encoded",
        ),
        ("application/x-www-form-urlencoded", b"model=a&model=b", "given twice"),
        ("application/x-www-form-urlencoded", b"model=a&stream=maybe", "'stream' must be"),
        ("application/x-www-form-urlencoded", b"model=%ff", "not UTF-8"),
        (*multipart(('Content-Disposition: form-data; name="model"', b"\xff")), "not UTF-8"),
    ],
)
def test_ambiguous_forms_are_400(content_type: str, body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_call(at("audio/transcriptions"), content_type, body)
    assert refused.value.status_code == 400 and message in refused.value.message


@pytest.mark.parametrize(
    ("endpoint", "content_type", "body", "message"),
    [
        ("chat/completions", JSON, b"", "empty"),
        ("chat/completions", "text/plain", b"not json", "not valid JSON"),
        ("embeddings", JSON, b'["a list"]', "must be a JSON object"),
        ("responses", JSON, b"\xff\xfe\x00", "not valid JSON"),
        ("completions", JSON, b"[" * 100_000, "not valid JSON"),
        (
            "chat/completions",
            JSON,
            b'{"n": ' + b"9" * 5000 + b"}",
            "not valid JSON",
        ),  # > 4300 digits
        ("chat/completions", JSON, b'{"model": 5}', "'model' must be a non-empty string"),
        ("chat/completions", JSON, b'{"model": ""}', "'model' must be a non-empty string"),
        ("chat/completions", JSON, b'{"messages": []}', "You must provide a model"),
        ("chat/completions", JSON, b'{"model": "m", "stream": "yes"}', "'stream' must be"),
        ("images/generations", "text/plain", b"{", "not valid JSON"),
    ],
)
def test_bad_bodies_are_400(endpoint: str, content_type: str, body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        parse_call(at(endpoint), content_type, body)
    assert excinfo.value.status_code == 400 and message in excinfo.value.message


def test_responses_may_name_a_character_instead_of_a_model() -> None:
    body = b'{"character_id": "helpful-guide", "input": "hi"}'
    assert parse_call(at("responses"), JSON, body) == Call(at("responses"), None, False)


def call(endpoint: str = "chat/completions", **payload: object) -> Call:
    body = json.dumps({"model": "x/y", **payload}).encode()
    return parse_call(at(endpoint), JSON, body)


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
    original = parse_call(at("chat/completions"), JSON, body)
    injected = with_stream_usage(original, body)
    expected = {**original.payload, "stream_options": {"include_usage": True}}
    assert json.loads(injected) == expected
    if body.lstrip().startswith(b"{"):  # spliced: everything the client sent is still there
        assert injected.replace(b'"stream_options":{"include_usage":true},', b"") == body


# --- properties: any body -----------------------------------------------------------------------

MODEL_ENDPOINTS = [e for e in ENDPOINTS if e.names_model]


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """A content type and body: JSON whose `model` and `stream` may be anything, a form, or
    arbitrary bytes, each under any of the content types clients send."""
    fields = st.fixed_dictionaries(
        {}, optional={"model": JSON_VALUES | st.text(max_size=8), "stream": JSON_VALUES}
    )
    body = draw(
        fields.map(lambda d: json.dumps(d).encode())
        | json_bodies()
        | multipart_forms().map(lambda form: form[1])
        | damaged_multipart()
        | st.lists(
            st.tuples(st.sampled_from(["model", "stream", "Model"]), st.text(max_size=6))
        ).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs).encode())
        | st.binary(max_size=40)
    )
    content_type = draw(
        st.sampled_from(
            [
                JSON,
                "text/plain",
                "",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=b",
                "multipart/form-data",
                "Multipart/Form-Data ; boundary=x",
            ]
        )
        | multipart_forms().map(lambda form: form[0])
        | st.text(max_size=30)
    )
    return content_type, body


def parsed(parse: Any) -> Call | tuple[type[GatewayError], int, str]:
    """The call, or the refusal: always the gateway's own 4xx, never another exception."""
    try:
        call: Call = parse()
    except GatewayError as refusal:
        assert 400 <= refusal.status_code < 500, refusal
        return type(refusal), refusal.status_code, refusal.message
    assert call.model is None or (isinstance(call.model, str) and call.model)
    assert isinstance(call.stream, bool)
    return call


def in_slices(endpoint: Endpoint, content_type: str, body: bytes) -> Call:
    slices = parse_call_in_slices(endpoint, content_type, body)
    while True:
        try:
            next(slices)
        except StopIteration as done:
            result: Call = done.value
            return result


@settings(max_examples=500)
@given(endpoint=st.sampled_from(MODEL_ENDPOINTS), request=requests())
def test_any_body_is_a_call_or_a_4xx_and_the_same_in_slices(
    endpoint: Endpoint, request: tuple[str, bytes]
) -> None:
    content_type, body = request
    whole = parsed(lambda: parse_call(endpoint, content_type, body))
    # a body above pipeline.LARGE_BODY_BYTES is parsed in slices: the verdict must not change
    assert parsed(lambda: in_slices(endpoint, content_type, body)) == whole
    if isinstance(whole, Call) and whole.model is None:
        assert not endpoint.model_required
