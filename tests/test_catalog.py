"""The catalog cache: one fetch for many callers, the last good copy on failure, no stampede."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from gateway.catalog import Catalog, parse_models
from gateway.errors import CatalogUnavailable, UpstreamError
from tests.conftest import catalog_payload

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Upstream:
    """A catalog endpoint whose answers the test releases one at a time."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.media_calls: list[str] = []
        self.media_failures: set[str] = set()
        self.release = asyncio.Event()
        self.release.set()
        self.fail: Exception | None = None
        self.payload: Any = catalog_payload()

    async def fetch_json(self, path: str, params: Mapping[str, str]) -> Any:
        if path.endswith("-models"):
            self.media_calls.append(path)
            kind = path.removeprefix("/v1/").removesuffix("-models")
            if kind in self.media_failures:
                raise UpstreamError(f"{kind} catalog down")
            return {"data": [{"id": f"{kind}-model-1"}]}
        self.calls.append(path)
        assert params == {"detailed": "true"}
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return self.payload


def with_new_model() -> dict[str, Any]:
    """The fixture catalog with a model added in front."""
    return {"data": [{"id": "new/model"}, *catalog_payload()["data"]]}


def make(upstream: Upstream, clock: Clock, **options: Any) -> Catalog:
    return Catalog(upstream.fetch_json, ttl_seconds=300, retry_seconds=5, clock=clock, **options)


def test_parse_tolerates_the_catalogs_variety() -> None:
    models = {m.id: m for m in parse_models(catalog_payload())}
    assert len(models) == 7  # entries without an id, and non-objects, are skipped
    glm = models["zai-org/glm-4.7"]
    assert (glm.created, glm.owned_by, glm.prompt_usd_per_mtok, glm.capabilities) == (
        0,
        "zai-org",
        None,
        None,
    )
    qwen = models["qwen/qwen3-coder-next"]
    assert (qwen.prompt_usd_per_mtok, qwen.completion_usd_per_mtok) == (0.30, 1.20)
    assert qwen.capabilities == frozenset({"tool_calling", "structured_output"})
    assert qwen.detailed["a_future_field"] == {"nested": [1, 2, 3]}
    assert models["deepseek/deepseek-chat-v3-0324"].prompt_usd_per_mtok == 2500  # as given
    assert models["anthropic/claude-opus-4.6"].distillation_status is None
    assert models["openai/gpt-5.2"].basic() == {
        "id": "openai/gpt-5.2",
        "object": "model",
        "created": 1704067200,
        "owned_by": "openai",
        "name": "GPT-5.2",  # for Open WebUI's picker
        "context_length": 128000,  # for aider's and Codex's context checks
    }
    assert set(models["zai-org/glm-4.7"].basic()) == {"id", "object", "created", "owned_by"}
    assert parse_models([{"id": "bare"}])[0].id == "bare"
    with pytest.raises(ValueError, match="expected"):
        parse_models({"models": ["a", "b"]})


@pytest.mark.parametrize("source", ["canonical", "subscription", "paid", "personalized"])
async def test_source_chooses_the_endpoint(source: str) -> None:
    upstream = Upstream()
    snapshot = await make(upstream, Clock(), source=source).get()
    expected = {
        "canonical": "/v1/models",
        "subscription": "/subscription/v1/models",
        "paid": "/paid/v1/models",
        "personalized": "/personalized/v1/models",
    }[source]
    assert upstream.calls == [expected]
    assert all(
        m.subscription is (True if source == "subscription" else None) for m in snapshot.text
    )
    assert sorted(upstream.media_calls) == [
        "/v1/audio-models",
        "/v1/embedding-models",
        "/v1/image-models",
        "/v1/moderation-models",
    ]
    for kind in ("embedding", "image", "audio", "moderation"):
        model = snapshot.find(f"{kind}-model-1", kind)
        assert model is not None and model.kind == kind
        assert snapshot.find(f"{kind}-model-1", "text") is None
    assert "embedding-model-1" not in {m.id for m in snapshot.text}


async def test_a_media_catalog_that_fails_keeps_its_last_copy() -> None:
    upstream, clock = Upstream(), Clock()
    catalog = make(upstream, clock)
    first = await catalog.get()
    upstream.media_failures = {"image"}
    upstream.payload = with_new_model()
    clock.now += 301
    second = await catalog.refresh()
    assert second is not None and second is not first
    assert second.text[0].id == "new/model" and len(second.text) == 8
    assert second.find("image-model-1", "image") is not None
    assert second.find("audio-model-1", "audio") is not None


def test_embedding_prices_per_million_tokens_are_prompt_prices() -> None:
    payload = {"data": [{"id": "e", "pricing": {"per_million_tokens": 0.02, "currency": "USD"}}]}
    (model,) = parse_models(payload, kind="embedding")
    assert (model.prompt_usd_per_mtok, model.completion_usd_per_mtok) == (0.02, 0.0)
    (image,) = parse_models(
        {"data": [{"id": "i", "pricing": {"per_image": {"1024x1024": 0.05}}}]}, kind="image"
    )
    assert image.prompt_usd_per_mtok is None


async def test_fifty_cold_callers_share_one_fetch() -> None:
    upstream, clock = Upstream(), Clock()
    catalog = make(upstream, clock)
    upstream.release.clear()
    results: list[Any] = []
    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(lambda: _append(results, catalog.get()))
        await _until(lambda: len(upstream.calls) == 1)
        upstream.release.set()
    assert len(upstream.calls) == 1
    assert len(results) == 50 and all(r is results[0] for r in results)


async def test_fifty_callers_on_an_expired_catalog_share_one_fetch() -> None:
    upstream, clock = Upstream(), Clock()
    catalog = make(upstream, clock)
    first = await catalog.get()
    clock.now += 301
    upstream.release.clear()
    upstream.payload = with_new_model()
    results = await asyncio.gather(*(catalog.get() for _ in range(50)))
    assert all(r is first for r in results)  # nobody waits: the stale copy is served
    assert len(upstream.calls) == 2
    upstream.release.set()
    await _until(lambda: catalog.snapshot is not first)
    assert (await catalog.get()).text[0].id == "new/model"
    assert len(upstream.calls) == 2


async def test_failed_refresh_keeps_the_last_good_catalog(caplog: pytest.LogCaptureFixture) -> None:
    upstream, clock = Upstream(), Clock()
    catalog = make(upstream, clock)
    good = await catalog.get()
    clock.now += 301
    upstream.fail = UpstreamError("Could not reach NanoGPT (ConnectError)")
    with caplog.at_level(logging.WARNING, logger="gateway.catalog"):
        assert await catalog.get() is good
        await _until(lambda: catalog.last_error is not None)
    assert "catalog refresh failed (Could not reach NanoGPT (ConnectError))" in caplog.text
    for _ in range(20):  # within retry_seconds no new fetch is started
        assert await catalog.get() is good
    assert len(upstream.calls) == 2
    clock.now += 5
    upstream.fail = None
    assert await catalog.get() is good
    await _until(lambda: catalog.snapshot is not good)
    assert len(upstream.calls) == 3


async def test_no_catalog_is_503_and_retries_are_spaced() -> None:
    upstream, clock = Upstream(), Clock()
    catalog = make(upstream, clock)
    upstream.fail = UpstreamError("NanoGPT answered GET /v1/models with HTTP 500")
    results = await asyncio.gather(*(catalog.get() for _ in range(50)), return_exceptions=True)
    refusals = [r for r in results if isinstance(r, CatalogUnavailable)]
    assert len(refusals) == len(results)
    assert "HTTP 500" in refusals[0].message
    assert len(upstream.calls) == 1
    for _ in range(10):
        with pytest.raises(CatalogUnavailable):
            await catalog.get()
    assert len(upstream.calls) == 1
    clock.now += 5
    upstream.fail = None
    assert (await catalog.get()).text
    assert len(upstream.calls) == 2


async def test_a_catalog_that_is_not_a_list_is_a_failure_not_a_crash() -> None:
    upstream = Upstream()
    upstream.payload = {"error": "maintenance"}
    with pytest.raises(CatalogUnavailable, match="expected"):
        await make(upstream, Clock()).get()


async def test_embedding_models_are_optional() -> None:
    upstream = Upstream()

    async def no_embeddings(path: str, params: Mapping[str, str]) -> Any:
        if path.endswith("embedding-models"):
            raise UpstreamError("HTTP 404")
        return await upstream.fetch_json(path, params)

    snapshot = await Catalog(no_embeddings, clock=Clock()).get()
    assert len(snapshot.text) == 7


async def _append(results: list[Any], awaitable: Any) -> None:
    results.append(await awaitable)


async def _until(condition: Any) -> None:
    with anyio.fail_after(5):
        while not condition():
            await asyncio.sleep(0)


async def test_an_empty_or_shrunken_catalog_keeps_the_last_good_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream, clock = Upstream(), Clock()
    refreshes: list[object] = []
    catalog = make(upstream, clock, on_refresh=refreshes.append)
    good = await catalog.get()
    assert len(good.text) == 7
    three = {"data": [{"id": f"m{i}"} for i in range(3)]}  # under half of 7
    for payload, reason in [({"data": []}, "empty"), (three, "shrank from 7 to 3 models")]:
        upstream.payload = payload
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="gateway.catalog"):
            assert await catalog.refresh() is None
        assert catalog.snapshot is good and await catalog.get() is good
        (warning,) = caplog.records  # once per refresh
        assert "catalog refresh failed" in warning.getMessage()
        assert reason in warning.getMessage()
    assert refreshes == [good, None, None]  # counted as failed refreshes
    upstream.payload = {"data": [{"id": f"m{i}"} for i in range(4)]}  # half is still news
    smaller = await catalog.refresh()
    assert smaller is not None and [m.id for m in smaller.text] == ["m0", "m1", "m2", "m3"]


async def test_an_empty_first_catalog_is_no_catalog() -> None:
    upstream = Upstream()
    upstream.payload = {"object": "list", "data": []}
    with pytest.raises(CatalogUnavailable, match="empty text model catalog"):
        await make(upstream, Clock()).get()


async def test_a_catalog_that_never_finishes_arriving_is_a_failed_fetch() -> None:
    upstream, clock = Upstream(), Clock()
    catalog = make(upstream, clock, fetch_deadline_seconds=0.01)
    upstream.release.clear()  # the text catalog trickles in for ever
    with anyio.fail_after(5), pytest.raises(CatalogUnavailable, match=r"within 0\.01s"):
        await catalog.get()
    upstream.release.set()
    clock.now += 5
    good = await catalog.get()
    upstream.release.clear()
    clock.now += 301
    with anyio.fail_after(5):
        assert await catalog.get() is good  # stale while the refresh runs
        assert await catalog.refresh() is None
    assert catalog.snapshot is good and "within 0.01s" in (catalog.last_error or "")


async def test_a_media_catalog_that_never_finishes_keeps_its_last_copy() -> None:
    hanging: set[str] = set()
    upstream = Upstream()

    async def fetch_json(path: str, params: Mapping[str, str]) -> Any:
        if path in hanging:
            await asyncio.Event().wait()
        return await upstream.fetch_json(path, params)

    clock = Clock()
    catalog = Catalog(fetch_json, clock=clock, fetch_deadline_seconds=0.01)
    await catalog.get()
    hanging.add("/v1/image-models")
    clock.now += 301
    with anyio.fail_after(5):
        snapshot = await catalog.refresh()
    assert snapshot is not None and snapshot.find("image-model-1", "image") is not None
