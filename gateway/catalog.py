"""NanoGPT's read-only account data: the model catalog and the balance.

The catalog is parsed leniently, cached for a TTL and refreshed by one fetch at a time.
Requests never wait on a refresh while a previous copy exists (stale-while-revalidate), a failed
refresh (an empty or drastically shrunken text catalog included) keeps the last good copy, and
with no copy at all fetches are spaced by `retry_seconds` so a down upstream is not stampeded.
The balance is polled on an interval. Fetches are injected; this module knows no HTTP library.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cachetools import TTLCache

from gateway.errors import CatalogUnavailable, GatewayError, UpstreamError, UpstreamTimeout
from gateway.types import ModelInfo, ModelKind

logger = logging.getLogger("gateway.catalog")

SOURCE_PATHS = {
    "canonical": "/v1/models",
    "subscription": "/subscription/v1/models",
    "paid": "/paid/v1/models",
    "personalized": "/personalized/v1/models",
}
MEDIA_PATHS: dict[ModelKind, str] = {
    "embedding": "/v1/embedding-models",
    "image": "/v1/image-models",
    "audio": "/v1/audio-models",
    "moderation": "/v1/moderation-models",
}
"""Catalogs besides the text one, each optional: a failed fetch keeps that catalog's last copy."""

_DETAILED = {"detailed": "true"}
FETCH_DEADLINE_SECONDS = 30.0
"""How long one catalog may take to arrive, however it trickles in: the read timeout bounds
only the gap between two reads, and requests wait on the first load."""
FetchJson = Callable[[str, Mapping[str, str]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One fetched catalog: text models in NanoGPT's order, and every model by kind and id."""

    text: tuple[ModelInfo, ...]
    by_kind: Mapping[ModelKind, Mapping[str, ModelInfo]]
    fetched_at: float = field(default_factory=time.time)

    @classmethod
    def of(cls, models: Iterable[ModelInfo]) -> Snapshot:
        models = tuple(models)
        by_kind: dict[ModelKind, dict[str, ModelInfo]] = {}
        for model in models:
            by_kind.setdefault(model.kind, {})[model.id] = model
        return cls(text=tuple(m for m in models if m.kind == "text"), by_kind=by_kind)

    def find(self, model_id: str, kind: ModelKind) -> ModelInfo | None:
        return self.by_kind.get(kind, {}).get(model_id)

    def models(self) -> Iterator[ModelInfo]:
        for catalog in self.by_kind.values():
            yield from catalog.values()


def parse_models(
    payload: Any, *, kind: ModelKind = "text", subscription: bool | None = None
) -> tuple[ModelInfo, ...]:
    """Models from a `{"object": "list", "data": [...]}` payload, tolerating the catalog's real
    variety: missing or null fields, extra fields, prices as strings, `pricing` absent."""
    items = payload.get("data") if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        raise ValueError("expected {'object': 'list', 'data': [...]} from the models endpoint")
    models: dict[str, ModelInfo] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            continue
        model_id = item["id"]
        pricing = item.get("pricing")
        if not isinstance(pricing, dict):
            pricing = {}
        if kind == "embedding" and "per_million_tokens" in pricing:  # priced per input token
            pricing = {"prompt": pricing["per_million_tokens"], "completion": 0}
        owned_by = item.get("owned_by")
        models.setdefault(
            model_id,
            ModelInfo(
                id=model_id,
                kind=kind,
                created=_int(item.get("created")),
                owned_by=owned_by if isinstance(owned_by, str) and owned_by else _owner(model_id),
                prompt_usd_per_mtok=_price(pricing.get("prompt")),
                completion_usd_per_mtok=_price(pricing.get("completion")),
                max_output_tokens=_count(item.get("max_output_tokens")),
                name=_text(item.get("name")),
                context_length=_count(item.get("context_length")),
                capabilities=_capabilities(item.get("capabilities")),
                distillation_status=_distillation(item.get("distillationPolicy")),
                subscription=subscription,
                detailed=item,
            ),
        )
    return tuple(models.values())


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _count(value: Any) -> int | None:
    return value if type(value) is int and value > 0 else None


def _owner(model_id: str) -> str:
    return model_id.split("/", 1)[0] if "/" in model_id else "nanogpt"


def _price(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        price = float(value)
    except (TypeError, ValueError):
        return None
    return price if price >= 0 and price != float("inf") else None


def _capabilities(value: Any) -> frozenset[str] | None:
    if isinstance(value, dict):
        return frozenset(k for k, v in value.items() if v is True)
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return None


def _distillation(value: Any) -> str | None:
    status = value.get("status") if isinstance(value, dict) else None
    return status if isinstance(status, str) else None


class Catalog:
    """The cached catalog of one `catalog.source`."""

    def __init__(
        self,
        fetch_json: FetchJson,
        *,
        source: str = "canonical",
        ttl_seconds: float = 300.0,
        retry_seconds: float = 5.0,
        fetch_deadline_seconds: float = FETCH_DEADLINE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        on_refresh: Callable[[Snapshot | None], None] | None = None,
    ) -> None:
        self._fetch_json = fetch_json
        self._deadline = fetch_deadline_seconds
        self._on_refresh = on_refresh
        self._source = source
        self._clock = clock
        self._retry_seconds = retry_seconds
        self._fresh: TTLCache[str, Snapshot] = TTLCache(maxsize=1, ttl=ttl_seconds, timer=clock)
        self._last_good: Snapshot | None = None
        self._refreshing: asyncio.Task[Snapshot] | None = None
        self._failed_at: float | None = None
        self.last_error: str | None = None

    @property
    def snapshot(self) -> Snapshot | None:
        """The last good catalog, however old; `None` until one has loaded."""
        return self._last_good

    async def get(self) -> Snapshot:
        """A catalog now: fresh, or the last good one while a single refresh runs behind it."""
        if (fresh := self._fresh.get("catalog")) is not None:
            return fresh
        task = self._start_refresh()
        if self._last_good is not None:
            return self._last_good
        if task is None:
            raise CatalogUnavailable(self._unavailable_message())
        try:
            # Shielded: one waiter giving up must not cancel the fetch the others wait on.
            return await asyncio.shield(task)
        except GatewayError:
            raise CatalogUnavailable(self._unavailable_message()) from None

    async def refresh(self) -> Snapshot | None:
        """Fetch now (joining a fetch already under way); `None` if it failed."""
        try:
            return await asyncio.shield(self._refresh_task())
        except GatewayError:
            return None

    def _start_refresh(self) -> asyncio.Task[Snapshot] | None:
        """The running fetch, or a new one unless the last failure is within the retry floor."""
        recently_failed = (
            self._failed_at is not None and self._clock() - self._failed_at < self._retry_seconds
        )
        if self._refreshing is None and recently_failed:
            return None
        return self._refresh_task()

    def _refresh_task(self) -> asyncio.Task[Snapshot]:
        """The single fetch under way, started if there is none."""
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._refresh())
            self._refreshing.add_done_callback(_consume_exception)
        return self._refreshing

    async def _refresh(self) -> Snapshot:
        try:
            snapshot = await self._fetch()
        except Exception as exc:
            self._failed_at = self._clock()
            self.last_error = exc.message if isinstance(exc, GatewayError) else str(exc)
            if isinstance(exc, UpstreamError):
                logger.info("catalog fetch: %s", exc.detail)
            if self._last_good is not None:
                age = time.time() - self._last_good.fetched_at
                logger.warning(
                    "catalog refresh failed (%s); still serving the catalog from %.0fs ago",
                    self.last_error,
                    age,
                )
            else:
                logger.warning("catalog load failed (%s); no catalog yet", self.last_error)
            self._notify(None)
            raise CatalogUnavailable(self.last_error) from exc
        else:
            self._fresh["catalog"] = self._last_good = snapshot
            self._failed_at = self.last_error = None
            logger.info("catalog loaded: %d models from %s", len(snapshot.text), self._source)
            self._notify(snapshot)
            return snapshot
        finally:
            self._refreshing = None

    async def _fetch(self) -> Snapshot:
        subscription = True if self._source == "subscription" else None
        text, *media = await asyncio.gather(
            self._get(SOURCE_PATHS[self._source]),
            *(self._media(kind) for kind in MEDIA_PATHS),
        )
        models = parse_models(text, subscription=subscription)
        return self._plausible(Snapshot.of(itertools.chain(models, *media)))

    def _plausible(self, snapshot: Snapshot) -> Snapshot:
        """The snapshot, unless its text catalog is empty or under half the last good one: one
        such answer from NanoGPT is a hiccup rather than news, and taken as it is, it would
        turn every call into a 404. (A gateway with no models serves nothing, so an empty
        first load is a failure too.)"""
        fetched = len(snapshot.text)
        if not fetched:
            raise ValueError("NanoGPT sent an empty text model catalog")
        last = len(self._last_good.text) if self._last_good is not None else 0
        if fetched * 2 < last:
            raise ValueError(f"NanoGPT's text model catalog shrank from {last} to {fetched} models")
        return snapshot

    async def _get(self, path: str) -> Any:
        try:
            async with asyncio.timeout(self._deadline):
                return await self._fetch_json(path, _DETAILED)
        except TimeoutError:
            raise UpstreamTimeout(
                f"NanoGPT did not send {path} within {self._deadline:g}s"
            ) from None

    async def _media(self, kind: ModelKind) -> tuple[ModelInfo, ...]:
        """One optional catalog: the text catalog alone is useful, so a failure here keeps
        this kind's last good copy and is logged."""
        try:
            return parse_models(await self._get(MEDIA_PATHS[kind]), kind=kind)
        except Exception as exc:
            logger.warning("%s models not loaded: %s", kind, exc)
            previous = self._last_good.by_kind.get(kind, {}) if self._last_good else {}
            return tuple(previous.values())

    def _notify(self, snapshot: Snapshot | None) -> None:
        if self._on_refresh is not None:
            self._on_refresh(snapshot)

    def _unavailable_message(self) -> str:
        reason = f": {self.last_error}" if self.last_error else ""
        return f"The model catalog could not be loaded from NanoGPT yet{reason}"


def _consume_exception(task: asyncio.Task[Snapshot]) -> None:
    if not task.cancelled():
        task.exception()
