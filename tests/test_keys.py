"""Member keys: both header forms, constant-time lookup, and no key means 401."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidApiKey
from gateway.keys import KeyRing, hash_key, presented_key
from gateway.types import ANONYMOUS, Member

ALICE = Member(name="alice", key_sha256=hash_key("sk-alice"))
BOB = Member(name="bob", key_sha256=hash_key("sk-bob"))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"authorization": "Bearer sk-alice"}, "sk-alice"),
        ({"authorization": "bearer  sk-alice "}, "sk-alice"),
        ({"x-api-key": "sk-alice"}, "sk-alice"),
        ({"authorization": "Basic abc", "x-api-key": "sk-alice"}, "sk-alice"),
        ({"authorization": "Bearer "}, None),
        ({}, None),
    ],
)
def test_presented_key(headers: dict[str, str], expected: str | None) -> None:
    assert presented_key(headers) == expected


def test_authenticate_finds_the_member() -> None:
    ring = KeyRing([ALICE, BOB])
    assert ring.authenticate({"authorization": "Bearer sk-bob"}) is BOB
    assert ring.authenticate({"x-api-key": "sk-alice"}) is ALICE


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer sk-mallory"}, {"x-api-key": ""}])
def test_unknown_or_missing_key_is_401(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidApiKey) as excinfo:
        KeyRing([ALICE]).authenticate(headers)
    assert excinfo.value.status_code == 401 and excinfo.value.code == "invalid_api_key"


def test_no_keys_mode_is_anonymous() -> None:
    assert KeyRing([], required=False).authenticate({}) is ANONYMOUS
    assert ANONYMOUS.name == "anonymous" and not ANONYMOUS.admin
