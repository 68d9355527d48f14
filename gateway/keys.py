"""Keys: their format, their digest, and the ring that says whose key a request carries.

Member keys from the config may be any string; keys the store issues read
`ngw-<public id>-<secret>` and are found by their public id, not by trying every digest, so
authentication costs the same for 10 keys as for 10,000. Only SHA-256 digests are held, and
digests are compared in constant time. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.errors import InvalidApiKey, PermissionDenied
from gateway.types import ANONYMOUS, Member, StoredKey

KEY_PREFIX = "ngw"
PUBLIC_ID_LENGTH = 12
SECRET_LENGTH = 43
"""Base62 characters: 43 * log2(62) = 256 random bits."""
_BASE62 = string.digits + string.ascii_letters
_STORED_KEY = re.compile(rf"{KEY_PREFIX}-([a-z0-9]{{{PUBLIC_ID_LENGTH}}})-([0-9A-Za-z]+)")


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of a key: all the gateway ever stores of it."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_public_id() -> str:
    alphabet = string.digits + string.ascii_lowercase
    return "".join(secrets.choice(alphabet) for _ in range(PUBLIC_ID_LENGTH))


def new_secret() -> str:
    return "".join(secrets.choice(_BASE62) for _ in range(SECRET_LENGTH))


def issued_key(public_id: str, secret: str) -> str:
    """The key a member is given: it splits on its first two dashes."""
    return f"{KEY_PREFIX}-{public_id}-{secret}"


def split_key(key: str) -> tuple[str, str] | None:
    """(public id, secret) of a key in the store's format, else `None`."""
    match = _STORED_KEY.fullmatch(key)
    return (match[1], match[2]) if match else None


def shown(public_id: str) -> str:
    """How a stored key is named in messages and listings: its public part only."""
    return f"{KEY_PREFIX}-{public_id}-…"


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a client sent, as OpenAI SDKs (`Authorization: Bearer`) or NanoGPT's own
    `x-api-key` send it."""
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    api_key = headers.get("x-api-key", "").strip()
    return api_key or None


@dataclass(frozen=True, slots=True)
class Holder:
    """Who a key belongs to: the member it acts as and, for a stored key, its entry."""

    member: Member
    stored: StoredKey | None = None


class KeyRing:
    """Config members (by digest) and stored keys (by public id), with their members. With
    `required = False` (`auth.mode = "none"`), everyone is `anonymous`. `admin_token_sha256`
    is the config's admin-API credential, if any."""

    def __init__(
        self,
        members: Sequence[Member],
        *,
        stored: Sequence[tuple[StoredKey, Member]] = (),
        required: bool = True,
        anonymous: Member = ANONYMOUS,
        admin_token_sha256: str | None = None,
    ) -> None:
        self._by_digest = {m.key_sha256: m for m in members}
        self._by_id = {key.public_id: (key, member) for key, member in stored}
        self._required = required
        self._anonymous = anonymous
        self._admin_token = admin_token_sha256
        self.admin_api = admin_token_sha256 is not None or any(
            key.role == "admin" and key.revoked_at is None for key, _ in stored
        )
        """Whether any admin credential exists: without one the admin API is off."""

    def authenticate(self, headers: Mapping[str, str], now: float) -> Holder:
        """The member a `/v1` request's key belongs to: 401 for a missing, unknown, expired,
        disabled or revoked key, 403 for an admin key."""
        if not self._required:
            return Holder(self._anonymous)
        holder = self._holder(_required_key(headers), now)
        if holder.stored is not None and holder.stored.role == "admin":
            raise PermissionDenied(
                f"Key {shown(holder.stored.public_id)} is an admin key: it calls only the "
                "admin API (/admin/v1), never /v1.",
                code="admin_key",
            )
        return holder

    def authenticate_admin(self, headers: Mapping[str, str], now: float) -> str:
        """The name of the admin credential an admin-API request carries (`admin` for the
        config's token): 401 for no valid key, 403 for a member's key."""
        key = _required_key(headers)
        digest = hash_key(key)
        if self._admin_token is not None and hmac.compare_digest(digest, self._admin_token):
            return "admin"
        holder = self._holder(key, now)
        if holder.stored is None or holder.stored.role != "admin":
            raise PermissionDenied(
                f"Member {holder.member.name!r} may not call the admin API: it needs an admin "
                "credential ([admin] token_env, or a key made with `keys create NAME --admin`).",
                code="admin_required",
            )
        return holder.stored.name

    def _holder(self, key: str, now: float) -> Holder:
        digest = hash_key(key)
        parts = split_key(key)
        entry = self._by_id.get(parts[0]) if parts is not None else None
        if entry is None:
            member = self._by_digest.get(digest)
            if member is None or not hmac.compare_digest(member.key_sha256, digest):
                raise InvalidApiKey("Incorrect API key provided: this key is not a member key.")
            return Holder(member)
        stored, member = entry
        _check_secret(stored, digest, now)
        return Holder(member, stored)


def _required_key(headers: Mapping[str, str]) -> str:
    key = presented_key(headers)
    if key is None:
        raise InvalidApiKey("Missing API key: send your key as 'Authorization: Bearer <key>'.")
    return key


def _check_secret(stored: StoredKey, digest: str, now: float) -> None:
    """401 unless `digest` is the key's current secret, or its previous one within the
    rotation's grace, and the key may be used at `now`; the message says why."""
    key = shown(stored.public_id)
    current = hmac.compare_digest(stored.secret_sha256, digest)
    previous = stored.previous_sha256 is not None and hmac.compare_digest(
        stored.previous_sha256, digest
    )
    if not current and not previous:
        raise InvalidApiKey("Incorrect API key provided: this key is not a member key.")
    if stored.revoked_at is not None:
        raise InvalidApiKey(f"Key {key} was revoked at {_when(stored.revoked_at)}.")
    if not current:
        until = stored.previous_valid_until or 0.0
        if now >= until:
            raise InvalidApiKey(
                f"Key {key} was rotated and this secret stopped working at {_when(until)}: "
                "use the new key."
            )
    if stored.expires_at is not None and now >= stored.expires_at:
        raise InvalidApiKey(f"Key {key} expired at {_when(stored.expires_at)}.")
    if stored.disabled:
        raise InvalidApiKey(f"Key {key} is disabled; a gateway admin can enable it again.")


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
