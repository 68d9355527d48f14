"""Decoding a JSON body in slices gives exactly what `json.loads` gives, and yields between
slices of a large one."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.bodies import Slices, decode_in_slices


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
