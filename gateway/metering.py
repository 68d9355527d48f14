"""Metering: who spent what on which model, as Prometheus metrics and usage-ledger rows.

`Meter.start()` opens a `Tally` at the top of every request; whichever layer sees the end (a
refusal in the route, the relay at the end of a body, a disconnect) finishes it exactly once.
Finishing costs a few counter updates and one queue put: the ledger writes on its own thread.
The only module that knows prometheus_client. Label values are bounded by construction:
members are configured names, models are catalog ids, endpoints a fixed list.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from gateway import pricing
from gateway.protocol import MODEL_ENDPOINTS
from gateway.types import Member, ModelInfo, Outcome, Price, Usage, UsageRecord

logger = logging.getLogger("gateway.metering")

REQUEST_ID_HEADER = "x-gateway-request-id"
"""The ledger row's request id, on every `/v1` response: what to quote when asking about one."""
UNAUTHENTICATED = "unauthenticated"
OTHER = "other"
NO_MODEL = "none"
ENDPOINT_LABELS = MODEL_ENDPOINTS | {
    "models",
    "embedding-models",
    "moderations",
    "images/generations",
    "audio/speech",
    "audio/transcriptions",
    "characters",
}
UPSTREAM_ERROR_REASONS = ("connect", "timeout", "status_5xx", "status_4xx", "protocol")
UNMETERED_REASONS = (
    "no_usage",
    "no_price",
    "client_disconnected",
    "upstream_failed",
    "upstream_error",
    "stream_usage_unsupported",
)
# LLM calls: a cached embedding answers in 50 ms, a reasoning model may think for minutes.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300)
MAX_TEXT = 256


class Metrics:
    """The gateway's metric objects, on a registry of their own: two apps in one process (the
    tests, the demo) never share counters, and `/metrics` shows only what the gateway owns."""

    def __init__(self) -> None:
        # No `*_created` series: they double what every scrape carries and no panel reads them.
        # (A process-wide switch; this process is the gateway's.)
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        ns = "nanogpt_gateway"
        self.requests = Counter(
            "requests", "Requests handled, by outcome status.",
            ["member", "model", "endpoint", "status"], namespace=ns, registry=registry,
        )  # fmt: skip
        self.tokens = Counter(
            "tokens", "Tokens NanoGPT reported, by type (cached_prompt and reasoning are parts "
            "of prompt and completion).", ["member", "model", "type"], namespace=ns,
            registry=registry,
        )  # fmt: skip
        self.cost = Counter(
            "cost_usd", "Cost in USD at the catalog's prices when each request was made.",
            ["member", "model"], namespace=ns, registry=registry,
        )  # fmt: skip
        self.duration = Histogram(
            "request_duration_seconds", "Time from request to the end of the response.",
            ["endpoint", "model"], namespace=ns, registry=registry, buckets=DURATION_BUCKETS,
        )  # fmt: skip
        self.ttft = Histogram(
            "time_to_first_token_seconds", "Streaming only: time from request to first event.",
            ["model"], namespace=ns, registry=registry, buckets=TTFT_BUCKETS,
        )  # fmt: skip
        self.upstream_errors = Counter(
            "upstream_errors", "NanoGPT failures seen by proxied requests.", ["reason"],
            namespace=ns, registry=registry,
        )  # fmt: skip
        self.unmetered = Counter(
            "unmetered_requests", "Requests that reached NanoGPT but whose cost is not known.",
            ["reason"], namespace=ns, registry=registry,
        )  # fmt: skip
        self.inflight = Gauge(
            "inflight_requests", "Requests being handled now.", namespace=ns, registry=registry
        )
        self.catalog_models = Gauge(
            "catalog_models", "Models in the cached catalog.", ["source"], namespace=ns,
            registry=registry,
        )  # fmt: skip
        self.catalog_refreshes = Counter(
            "catalog_refreshes", "Catalog fetches from NanoGPT.", ["result"], namespace=ns,
            registry=registry,
        )  # fmt: skip
        self.balance_usd = Gauge(
            "nanogpt_balance_usd", "NanoGPT account balance in USD.", registry=registry
        )
        self.balance_nano = Gauge(
            "nanogpt_balance_nano", "NanoGPT account balance in Nano.", registry=registry
        )
        # Known label values start at 0, so rates and alerts have a series before the first event.
        for reason in UPSTREAM_ERROR_REASONS:
            self.upstream_errors.labels(reason)
        for reason in UNMETERED_REASONS:
            self.unmetered.labels(reason)
        for result in ("success", "failure"):
            self.catalog_refreshes.labels(result)

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text format of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class LedgerSink(Protocol):
    def append(self, record: UsageRecord) -> None: ...


class Tally:
    """One request as it goes: filled in by the route as it learns who and what, finished once."""

    __slots__ = (
        "_done",
        "_first_byte",
        "_meter",
        "_started",
        "end_user",
        "endpoint",
        "forwarded",
        "member",
        "model",
        "model_id",
        "request_id",
        "started_at",
        "stream",
        "stream_usage_unsupported",
        "upstream_failure",
    )

    def __init__(self, meter: Meter) -> None:
        self._meter = meter
        self._started = time.perf_counter()
        self._first_byte: float | None = None
        self._done = False
        self.started_at = time.time()
        self.request_id = os.urandom(16).hex()  # a uuid4's randomness, without the object
        self.member: Member | None = None
        self.end_user: str | None = None
        self.endpoint = OTHER
        self.model_id: str | None = None
        self.model: ModelInfo | None = None
        self.stream = False
        self.forwarded = False
        self.stream_usage_unsupported = False
        self.upstream_failure: str | None = None

    def first_byte(self) -> None:
        if self._first_byte is None:
            self._first_byte = time.perf_counter()

    def finish(self, status: int, outcome: Outcome, usage: Usage | None = None) -> None:
        """Record the request; any later call is ignored, so every layer may call it safely."""
        if self._done:
            return
        self._done = True
        now = time.perf_counter()
        ttft = None
        if self.stream and self._first_byte is not None:
            ttft = self._first_byte - self._started
        self._meter.record(self, status, outcome, usage, now - self._started, ttft)


def unmetered_reason(
    tally: Tally, outcome: Outcome, usage: Usage | None, priced: bool
) -> str | None:
    """Why a request that reached NanoGPT has no known cost, or `None` if it has one (or
    could not have had one: refusals never reached NanoGPT, `/models` costs nothing)."""
    if not tally.forwarded or tally.endpoint not in MODEL_ENDPOINTS:
        return None
    if usage is not None:
        return None if priced else "no_price"
    if outcome == "ok":
        return "stream_usage_unsupported" if tally.stream_usage_unsupported else "no_usage"
    return outcome if outcome in UNMETERED_REASONS else "upstream_failed"


def endpoint_label(endpoint: str) -> str:
    """A fixed set of endpoint names: the path is the client's to choose, the label is not."""
    if endpoint in ENDPOINT_LABELS:
        return endpoint
    head = endpoint.split("/", 1)[0]
    return head if head in ENDPOINT_LABELS else OTHER


class Meter:
    """Turns finished tallies into metrics and ledger rows, at the prices of the catalog."""

    def __init__(
        self,
        metrics: Metrics,
        ledger: LedgerSink | None = None,
        *,
        price_overrides: Mapping[str, Price] | None = None,
    ) -> None:
        self.metrics = metrics
        self._ledger = ledger
        self._overrides = price_overrides or {}
        self._models: frozenset[str] = frozenset()
        self._warned_prices: set[str] = set()
        # Children by label values, kept: labels() checks and locks on every call, and a request
        # makes up to eight. Every label is bounded, so these stay small.
        self._requests = functools.cache(metrics.requests.labels)
        self._duration = functools.cache(metrics.duration.labels)
        self._ttft = functools.cache(metrics.ttft.labels)
        self._tokens = functools.cache(metrics.tokens.labels)
        self._cost = functools.cache(metrics.cost.labels)
        self._upstream_errors = functools.cache(metrics.upstream_errors.labels)
        self._unmetered = functools.cache(metrics.unmetered.labels)

    def start(self) -> Tally:
        self.metrics.inflight.inc()
        return Tally(self)

    def record(
        self,
        tally: Tally,
        status: int,
        outcome: Outcome,
        usage: Usage | None,
        duration: float,
        ttft: float | None,
    ) -> None:
        self.metrics.inflight.dec()
        member = tally.member.name if tally.member is not None else UNAUTHENTICATED
        model = self._model_label(tally.model_id)
        endpoint = endpoint_label(tally.endpoint)
        price = pricing.price_of(tally.model, self._overrides) if tally.model else None
        cost = pricing.cost(usage, price) if usage is not None and price is not None else None

        self._requests(member, model, endpoint, str(status)).inc()
        self._duration(endpoint, model).observe(duration)
        if ttft is not None:
            self._ttft(model).observe(ttft)
        if usage is not None:
            for kind, count in _token_counts(usage):
                if count:
                    self._tokens(member, model, kind).inc(count)
        if cost:
            self._cost(member, model).inc(float(cost))
        if outcome == "upstream_error":
            self._upstream_errors("status_5xx" if status >= 500 else "status_4xx").inc()
        elif tally.upstream_failure is not None:
            self._upstream_errors(tally.upstream_failure).inc()
        unmetered = unmetered_reason(tally, outcome, usage, priced=cost is not None)
        if unmetered is not None:
            self._unmetered(unmetered).inc()

        if tally.member is not None and self._ledger is not None:
            row = _row(tally, status, outcome, usage, cost, unmetered, duration, ttft)
            try:
                self._ledger.append(row)
            except Exception:  # a closed ledger must not turn a finished answer into a crash
                logger.exception("usage of request %s not recorded in the ledger", row.request_id)

    def catalog_refreshed(self, source: str, models: Iterable[ModelInfo] | None) -> None:
        """A catalog fetch ended (`None`: it failed). Models seen here become label values."""
        if models is None:
            self.metrics.catalog_refreshes.labels("failure").inc()
            return
        models = tuple(models)
        self.metrics.catalog_refreshes.labels("success").inc()
        self.metrics.catalog_models.labels(source).set(sum(m.kind == "text" for m in models))
        self.metrics.catalog_models.labels("embedding").set(
            sum(m.kind == "embedding" for m in models)
        )
        self._models = frozenset(m.id for m in models)
        for model in pricing.implausible(models):
            if model.id not in self._warned_prices:
                self._warned_prices.add(model.id)
                logger.warning(
                    "the catalog prices %s at %s / %s USD per million tokens (prompt / "
                    "completion), which looks implausible; its costs are recorded as given",
                    model.id,
                    model.prompt_usd_per_mtok,
                    model.completion_usd_per_mtok,
                )

    def balance_polled(self, usd: float, nano: float) -> None:
        self.metrics.balance_usd.set(usd)
        self.metrics.balance_nano.set(nano)

    def _model_label(self, model_id: str | None) -> str:
        if model_id is None:
            return NO_MODEL
        return model_id if model_id in self._models else OTHER


def _token_counts(usage: Usage) -> tuple[tuple[str, int], ...]:
    return (
        ("prompt", usage.prompt_tokens),
        ("completion", usage.completion_tokens),
        ("cached_prompt", usage.cached_prompt_tokens),
        ("reasoning", usage.reasoning_tokens),
    )


def _row(
    tally: Tally,
    status: int,
    outcome: Outcome,
    usage: Usage | None,
    cost: Decimal | None,
    unmetered: str | None,
    duration: float,
    ttft: float | None,
) -> UsageRecord:
    assert tally.member is not None
    return UsageRecord(
        time=tally.started_at,
        request_id=tally.request_id,
        member=tally.member.name,
        end_user=tally.end_user[:MAX_TEXT] if tally.end_user else None,
        model=tally.model_id[:MAX_TEXT] if tally.model_id else None,
        endpoint=tally.endpoint[:MAX_TEXT],
        status=status,
        outcome=outcome,
        stream=tally.stream,
        usage=usage,
        cost_usd=cost,
        unmetered=unmetered,
        duration_seconds=duration,
        ttft_seconds=ttft,
    )
