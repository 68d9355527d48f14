"""Member keys: which member, if any, a request's `Authorization` or `x-api-key` belongs to.

Only SHA-256 digests are held, and every digest is compared in constant time, so neither memory
nor timing gives a key away. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from gateway.errors import InvalidApiKey
from gateway.types import ANONYMOUS, Member


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of a member key: all the gateway ever stores of it."""
    return hashlib.sha256(key.encode()).hexdigest()


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a client sent, as OpenAI SDKs (`Authorization: Bearer`) or NanoGPT's own
    `x-api-key` send it."""
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    api_key = headers.get("x-api-key", "").strip()
    return api_key or None


class KeyRing:
    """The configured members, looked up by key. With no members (`auth.mode = "none"`),
    everyone is `anonymous`."""

    def __init__(
        self, members: Sequence[Member], *, required: bool = True, anonymous: Member = ANONYMOUS
    ) -> None:
        self._digests = tuple((bytes.fromhex(m.key_sha256), m) for m in members)
        self._required = required
        self._anonymous = anonymous

    def authenticate(self, headers: Mapping[str, str]) -> Member:
        if not self._required:
            return self._anonymous
        key = presented_key(headers)
        if key is None:
            raise InvalidApiKey(
                "Missing API key: send your member key as 'Authorization: Bearer <key>'."
            )
        digest = bytes.fromhex(hash_key(key))
        found = None
        for candidate, member in self._digests:  # no early exit: same work for every key
            if hmac.compare_digest(candidate, digest):
                found = member
        if found is None:
            raise InvalidApiKey("Incorrect API key provided: this key is not a member key.")
        return found
