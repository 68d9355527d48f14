"""Keys: both header forms, the issued format, and who a key belongs to (401 with the reason
for a missing, unknown, expired, disabled, revoked or rotated-out key; 403 for a key used on
the wrong API)."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.errors import GatewayError, InvalidApiKey, PermissionDenied
from gateway.keys import (
    KeyRing,
    hash_key,
    issued_key,
    new_public_id,
    new_secret,
    presented_key,
    split_key,
)
from gateway.types import ANONYMOUS, Member, StoredKey

ALICE = Member(name="alice", key_sha256=hash_key("sk-alice"))
BOB = Member(name="bob", key_sha256=hash_key("sk-bob"))
NOW = 1_800_000_000.0
CAROL_KEY = issued_key("c0ffee0c0ffe", "S" * 43)
CAROL = StoredKey(
    public_id="c0ffee0c0ffe", name="carol", secret_sha256=hash_key(CAROL_KEY), created_at=NOW
)
CAROL_MEMBER = Member(name="carol", key_sha256=CAROL.secret_sha256)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def ring_with(carol: StoredKey = CAROL, **options: str) -> KeyRing:
    return KeyRing([ALICE, BOB], stored=[(carol, CAROL_MEMBER)], **options)  # type: ignore[arg-type]


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


def test_an_issued_key_splits_on_its_first_two_dashes() -> None:
    public_id, secret = new_public_id(), new_secret()
    key = issued_key(public_id, secret)
    assert split_key(key) == (public_id, secret)
    assert len(public_id) == 12 and public_id.isalnum() and public_id.lower() == public_id
    assert len(secret) == 43  # 43 base62 characters: 256 bits, at least the 192 asked for
    assert len({new_secret() for _ in range(100)}) == 100
    assert split_key("sk-alice") is None
    assert split_key(f"ngw-{public_id.upper()}-{secret}") is None
    assert split_key(f"ngw-{public_id}-{secret}-x") is None


def test_authenticate_finds_the_member() -> None:
    ring = ring_with()
    assert ring.authenticate(bearer("sk-bob"), NOW).member is BOB
    assert ring.authenticate({"x-api-key": "sk-alice"}, NOW).member is ALICE
    holder = ring.authenticate(bearer(CAROL_KEY), NOW)
    assert holder.member is CAROL_MEMBER and holder.stored is CAROL


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer sk-mallory"},
        {"x-api-key": ""},
        bearer(issued_key("c0ffee0c0ffe", "T" * 43)),  # a stored key's id, another secret
        bearer(issued_key("000000000000", "S" * 43)),  # a secret, an unknown id
    ],
)
def test_unknown_or_missing_key_is_401(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidApiKey) as excinfo:
        ring_with().authenticate(headers, NOW)
    assert excinfo.value.status_code == 401 and excinfo.value.code == "invalid_api_key"


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"expires_at": NOW}, "expired at 2027-01-15T08:00:00Z"),
        ({"revoked_at": NOW - 60}, "was revoked at 2027-01-15T07:59:00Z"),
        ({"disabled": True}, "is disabled"),
        ({"revoked_at": NOW - 60, "disabled": True}, "was revoked"),
    ],
)
def test_a_key_that_may_not_be_used_says_why(changes: dict[str, object], said: str) -> None:
    carol = dataclasses.replace(CAROL, **changes)  # type: ignore[arg-type]
    with pytest.raises(InvalidApiKey) as excinfo:
        ring_with(carol).authenticate(bearer(CAROL_KEY), NOW)
    message = excinfo.value.message
    assert said in message and "ngw-c0ffee0c0ffe-…" in message and "SSSS" not in message


def test_a_key_works_until_it_expires() -> None:
    carol = dataclasses.replace(CAROL, expires_at=NOW + 1)
    assert ring_with(carol).authenticate(bearer(CAROL_KEY), NOW).member is CAROL_MEMBER


def test_a_rotated_secret_works_until_its_grace_ends() -> None:
    new_key = issued_key("c0ffee0c0ffe", "N" * 43)
    carol = dataclasses.replace(
        CAROL,
        secret_sha256=hash_key(new_key),
        previous_sha256=CAROL.secret_sha256,
        previous_valid_until=NOW + 3600,
    )
    ring = ring_with(carol)
    assert ring.authenticate(bearer(CAROL_KEY), NOW + 3599).member is CAROL_MEMBER
    assert ring.authenticate(bearer(new_key), NOW + 3600).member is CAROL_MEMBER
    with pytest.raises(InvalidApiKey, match="was rotated"):
        ring.authenticate(bearer(CAROL_KEY), NOW + 3600)


def test_admin_keys_call_only_the_admin_api() -> None:
    carol = dataclasses.replace(CAROL, role="admin")
    ring = ring_with(carol)
    with pytest.raises(PermissionDenied) as excinfo:
        ring.authenticate(bearer(CAROL_KEY), NOW)
    assert excinfo.value.code == "admin_key"
    assert ring.authenticate_admin(bearer(CAROL_KEY), NOW) == "carol"
    assert ring.admin_api


def test_the_admin_token_is_an_admin_credential_and_members_are_not() -> None:
    ring = ring_with(admin_token_sha256=hash_key("a-long-admin-token"))
    assert ring.admin_api
    assert ring.authenticate_admin(bearer("a-long-admin-token"), NOW) == "admin"
    for key in ("sk-alice", CAROL_KEY):
        with pytest.raises(PermissionDenied):
            ring.authenticate_admin(bearer(key), NOW)
    wrong: list[tuple[dict[str, str], type[GatewayError]]] = [
        ({}, InvalidApiKey),
        (bearer("nope"), InvalidApiKey),
    ]
    for headers, error in wrong:
        with pytest.raises(error):
            ring.authenticate_admin(headers, NOW)
    with pytest.raises(InvalidApiKey):
        ring.authenticate(bearer("a-long-admin-token"), NOW)


def test_without_an_admin_credential_the_admin_api_is_off() -> None:
    assert not ring_with().admin_api
    revoked_admin = dataclasses.replace(CAROL, role="admin", revoked_at=NOW)
    assert not ring_with(revoked_admin).admin_api


def test_no_keys_mode_is_anonymous() -> None:
    assert KeyRing([], required=False).authenticate({}, NOW).member is ANONYMOUS
    assert ANONYMOUS.name == "anonymous" and not ANONYMOUS.admin
