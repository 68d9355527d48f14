"""Decoding a JSON body in slices gives exactly what `json.loads` gives, and yields between
slices of a large one; a form's fields are read strictly, and any other body is a `FormError`."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.bodies import FormError, Slices, decode_in_slices, form_fields


def run(slices: Slices) -> tuple[Any, int]:
    """The decoded value and how many times the decoder yielded."""
    turns = 0
    while True:
        try:
            next(slices)
        except StopIteration as done:
            return done.value, turns
        turns += 1


DOCUMENTS = [
    b"{}",
    b" \n{ } ",
    b'{"a": [], "b": [ ], "c": [1, [2, [3]], {"d": [4]}], "e": "\\u00e9\\"", "f": null}',
    b'{"model": "m", "model": "last one wins"}',
    b'{"n": 1e400, "m": -0.0, "t": true, "x": NaN}',
    '{"é": "ü"}'.encode(),
    '{"é": "ü"}'.encode("utf-16"),
    '{"é": "ü"}'.encode("utf-32-le"),
    b"\xef\xbb\xbf{}",
    b'{"lone": "\xed\xa0\x80"}',  # a UTF-8-encoded lone surrogate, which json.loads takes
    b"[1, 2]",
    b'"just a string"',
]


@pytest.mark.parametrize("body", DOCUMENTS)
def test_decodes_as_json_loads_does(body: bytes) -> None:
    value, _ = run(decode_in_slices(body, slice_chars=1))
    assert json.dumps(value) == json.dumps(json.loads(body))


MALFORMED = [
    b"",
    b"{",
    b'{"a"}',
    b'{"a": 1,}',
    b'{"a": 1 "b": 2}',
    b'{"a": [1,]}',
    b'{"a": [1 2]}',
    b'{"a": 1} x',
    b"{'a': 1}",
    b'{"a": tru}',
    b'{"a": "\xff"}',
    b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
]


@pytest.mark.parametrize("body", MALFORMED)
def test_refuses_what_json_loads_refuses(body: bytes) -> None:
    with pytest.raises((ValueError, RecursionError)) as expected:
        json.loads(body)
    with pytest.raises(expected.type):
        run(decode_in_slices(body, slice_chars=1))


def test_a_large_body_is_decoded_a_slice_at_a_time() -> None:
    messages = [{"role": "user", "content": "x" * 1000} for _ in range(1000)]
    body = json.dumps({"model": "m", "stream": True, "messages": messages}).encode()
    value, turns = run(decode_in_slices(body, slice_chars=64 * 1024))
    assert value == json.loads(body)
    assert len(body) // (64 * 1024) - 1 <= turns <= len(body) // (64 * 1024) + 1


# --- properties ---------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    """A JSON document as a client might write it, or one damaged on the way."""
    value = draw(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=5) | JSON_VALUES)
    spaced = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]))
    text = json.dumps(value, separators=spaced, indent=draw(st.none() | st.just(1)))
    body = text.encode(draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "utf-32-le"])))
    damage = draw(st.sampled_from(["none", "cut", "insert"]))
    at = draw(st.integers(0, len(body)))
    if damage == "cut":
        return body[:at]
    if damage == "insert":
        return body[:at] + draw(st.binary(min_size=1, max_size=2)) + body[at:]
    return body


def outcome(decode: Any) -> tuple[str, str]:
    """What decoding did, comparably: the value as JSON text, or the error's type and message."""
    try:
        return "value", json.dumps(decode())
    except (ValueError, RecursionError) as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=500)
@given(body=json_bodies() | st.binary(max_size=40), slice_chars=st.integers(1, 64))
def test_decoding_in_slices_is_json_loads_whatever_the_body(body: bytes, slice_chars: int) -> None:
    sliced = outcome(lambda: run(decode_in_slices(body, slice_chars))[0])
    assert sliced == outcome(lambda: json.loads(body))


NAMES = frozenset({"model", "stream"})
FIELD_NAMES = st.sampled_from(["model", "stream", "file", "prompt", "Model", "STREAM"])
BOUNDARIES = st.text(alphabet="abcXYZ019'()+_,-./:=? ", min_size=1, max_size=70).filter(
    lambda b: not b.endswith(" ")  # RFC 2046: a boundary does not end in a space
)


def expected_fields(fields: list[tuple[str, str]]) -> dict[str, str] | None:
    """What a strict reader finds: each field of `NAMES` once, spelled in lower case, else
    `None` (a `FormError`)."""
    found: dict[str, str] = {}
    for name, value in fields:
        if name.lower() in NAMES:
            if name not in NAMES or name in found:
                return None
            found[name] = value
    return found


@st.composite
def multipart_forms(draw: st.DrawFn) -> tuple[str, bytes, list[tuple[str, str]]]:
    """A well-formed multipart/form-data body, its content type and its text fields; file
    parts of any bytes among them."""
    boundary = draw(BOUNDARIES)
    fields = draw(st.lists(st.tuples(FIELD_NAMES, st.text(max_size=12)), max_size=4))
    files = draw(st.lists(st.binary(max_size=12), max_size=2))
    parts = [
        (f'Content-Disposition: form-data; name="{name}"', value.encode()) for name, value in fields
    ]
    parts += [
        (
            'Content-Disposition: form-data; name="file"; filename="a.mp3"\r\nContent-Type: audio/mpeg',
            data,
        )
        for data in files
    ]
    parts = draw(st.permutations(parts))
    delimiter = b"--" + boundary.encode()
    for _, content in parts:
        assume(b"\r\n" + delimiter not in b"\r\n" + content)
    body = b"".join(
        delimiter + b"\r\n" + head.encode() + b"\r\n\r\n" + content + b"\r\n"
        for head, content in parts
    )
    body += delimiter + b"--\r\n"
    quoted = draw(st.booleans())
    content_type = (
        f'multipart/form-data; boundary="{boundary}"'
        if quoted
        else f"multipart/form-data; boundary={boundary}"
    )
    assume(quoted or not set(boundary) & set("'()+,/:=? "))  # unquoted, a boundary is a token
    return content_type, body, fields  # the file parts are never one of NAMES


@settings(max_examples=300)
@given(form=multipart_forms())
def test_a_well_formed_multipart_body_gives_its_fields(
    form: tuple[str, bytes, list[tuple[str, str]]],
) -> None:
    content_type, body, fields = form
    expected = expected_fields(fields)
    if expected is None:
        with pytest.raises(FormError):
            form_fields(content_type, body, NAMES)
    else:
        assert form_fields(content_type, body, NAMES) == expected


@settings(max_examples=300)
@given(
    fields=st.lists(st.tuples(FIELD_NAMES | st.text(max_size=4), st.text(max_size=8)), max_size=5)
)
def test_an_urlencoded_body_gives_its_fields(fields: list[tuple[str, str]]) -> None:
    body = urlencode(fields).encode()
    expected = expected_fields(fields)
    if expected is None:
        with pytest.raises(FormError):
            form_fields("application/x-www-form-urlencoded", body, NAMES)
    else:
        assert form_fields("application/x-www-form-urlencoded", body, NAMES) == expected


CONTENT_TYPES = st.sampled_from(
    [
        "multipart/form-data; boundary=b",
        "multipart/form-data; boundary=",
        'multipart/form-data; boundary="a b"',
        "multipart/form-data",
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=latin-1",
        "application/json",
        "",
    ]
) | st.text(max_size=40)


@st.composite
def damaged_multipart(draw: st.DrawFn) -> bytes:
    _, body, _ = draw(multipart_forms())
    at = draw(st.integers(0, len(body)))
    return body[:at] + draw(st.binary(max_size=4)) + body[at + draw(st.integers(0, 4)) :]


@settings(max_examples=500)
@given(content_type=CONTENT_TYPES, body=st.binary(max_size=60) | damaged_multipart())
def test_any_body_gives_fields_or_a_form_error(content_type: str, body: bytes) -> None:
    try:
        found = form_fields(content_type, body, NAMES)
    except FormError:
        return
    assert set(found) <= NAMES and all(isinstance(v, str) for v in found.values())
