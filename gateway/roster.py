"""The roster: who may call the gateway right now. The config's members and the key store's
keys, as one `KeyRing` rebuilt whenever either changes: the store is not asked per request,
only for the keys changed since its change counter's last value (every `POLL_SECONDS`), and a
reload hands in the new config. Last-used times are kept in memory and written in batches, off the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from gateway.config import Settings
from gateway.keys import Holder, KeyRing
from gateway.keystore import KeyStore, KeyStoreError
from gateway.keystore.fields import member_of
from gateway.types import Member, StoredKey

logger = logging.getLogger("gateway.roster")

POLL_SECONDS = 0.5
"""How often the store's change counter is read: a revoked key is refused within this (and
the time to reload the keys)."""
LAST_USED_SECONDS = 10.0
"""How often last-used times are written, when some key was used."""


class Roster:
    """The current `KeyRing` for `settings` and the store's keys. `refresh` reads the keys
    changed since it last looked (on a thread); `close` writes the last-used times left."""

    def __init__(self, settings: Settings, store: KeyStore | None = None) -> None:
        self._settings = settings
        self._store = store
        self._stored: dict[str, StoredKey] = {}
        """Every stored key by public id, as the store last said: only what changed since
        is read again."""
        self._version: int | None = None
        self._used: dict[str, float] = {}
        self._skipped: set[str] = set()
        self._refreshing = asyncio.Lock()
        """One refresh at a time: a slow one must not install older keys after a newer one."""
        self._members: dict[str, tuple[StoredKey, Member]] = {}
        """Each stored key's member, by public id, kept while the key and the config stay
        the same: 10,000 keys are not all rebuilt when one changes."""
        self.ring = self._ring()

    def identify(self, headers: Mapping[str, str], now: float) -> Holder:
        """Whose key a `/v1` request carries: the member, and the stored key if it is one."""
        holder = self.ring.authenticate(headers, now)
        if holder.stored is not None:
            self._used[holder.stored.public_id] = now
        return holder

    def authenticate(self, headers: Mapping[str, str], now: float) -> Member:
        return self.identify(headers, now).member

    def authenticate_admin(self, headers: Mapping[str, str], now: float) -> str:
        return self.ring.authenticate_admin(headers, now)

    @property
    def stored(self) -> tuple[StoredKey, ...]:
        return tuple(self._stored.values())

    @property
    def store(self) -> KeyStore | None:
        """The key store the keys come from: the admin API changes it, then `refresh`es."""
        return self._store

    def configure(self, settings: Settings) -> None:
        """A reloaded config: its members and defaults apply to the next request."""
        self._settings = settings
        self._members.clear()
        self.ring = self._ring()

    async def refresh(self) -> bool:
        """Reload the store's keys if they changed since the last look; whether they did."""
        if self._store is None:
            return False
        store = self._store
        async with self._refreshing:
            since = self._version if self._version is not None else -1
            version, changed = await asyncio.to_thread(store.changed_since, since)
            if version == self._version:
                return False
            if version < since:  # a store that starts over (a database replaced): read it all
                version, changed = await asyncio.to_thread(store.changed_since, -1)
                self._stored.clear()
            for key in changed:
                self._stored[key.public_id] = key
            self._version = version
            self.ring = self._ring()
            return True

    async def watch(
        self,
        poll_seconds: float = POLL_SECONDS,
        last_used_seconds: float = LAST_USED_SECONDS,
    ) -> None:
        """Poll the store until cancelled, writing last-used times now and then; a store
        that cannot be read keeps the keys it last gave, and says so once."""
        failing = False
        since_written = 0.0
        while True:
            try:
                await self.refresh()
            except KeyStoreError as exc:
                if not failing:
                    logger.warning("keeping the keys last read: %s", exc)
                failing = True
            else:
                if failing:
                    logger.info("the key store can be read again")
                failing = False
            since_written += poll_seconds
            if since_written >= last_used_seconds and not failing:
                since_written = 0.0
                with contextlib.suppress(KeyStoreError):  # kept for the next try
                    await self.write_last_used()
            await asyncio.sleep(poll_seconds)

    async def write_last_used(self) -> None:
        """Write the last-used times gathered since the last write; if the store refuses
        them, they are kept for the next write (`KeyStoreError` all the same)."""
        if self._store is None or not self._used:
            return
        used, self._used = self._used, {}
        try:
            await asyncio.to_thread(self._store.touch, used)
        except KeyStoreError:
            for public_id, when in used.items():
                self._used[public_id] = max(when, self._used.get(public_id, when))
            raise

    async def close(self) -> None:
        with contextlib.suppress(KeyStoreError):
            await self.write_last_used()

    def _ring(self) -> KeyRing:
        settings = self._settings
        config_names = {m.name for m in settings.members}
        defaults, rules = settings.anonymous.limits, settings.policy
        stored = []
        for key in self._stored.values():
            if key.name in config_names and key.revoked_at is None:
                if key.name not in self._skipped:
                    self._skipped.add(key.name)
                    logger.warning(
                        "stored key %r is ignored: a config member has that name", key.name
                    )
                continue
            cached = self._members.get(key.public_id)
            if cached is None or cached[0] != key:
                cached = self._members[key.public_id] = (key, member_of(key, defaults, rules))
            stored.append(cached)
        return KeyRing(
            settings.members,
            stored=stored,
            required=settings.auth.mode == "keys",
            anonymous=settings.anonymous,
            admin_token_sha256=settings.admin_token_sha256,
        )
