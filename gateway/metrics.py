"""Prometheus metrics: the gateway's metric objects and `observe(finished)`.

The only module that knows prometheus_client. Label values are bounded by construction:
members are configured names, models are catalog ids (`other` for the rest), endpoints the
endpoint table's names.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
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
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway import pricing
from gateway.accounting import UNMETERED_REASONS
from gateway.limits.base import LIMIT_NAMES
from gateway.types import Finished, ModelInfo, Usage

logger = logging.getLogger("gateway.metrics")

UNAUTHENTICATED = "unauthenticated"
OTHER = "other"
NO_MODEL = "none"
MEDIA_KINDS = ("embedding", "image", "audio", "moderation")
UPSTREAM_ERROR_REASONS = ("connect", "timeout", "status_5xx", "status_4xx", "protocol")
# LLM calls: a cached embedding answers in 50 ms, a reasoning model may think for minutes.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300)


class LedgerQueue(Protocol):
    """What the metrics read from the usage ledger at each scrape."""

    @property
    def queued_rows(self) -> int: ...

    @property
    def rows_lost(self) -> int: ...


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
        self._ledger = _LedgerCollector()
        registry.register(self._ledger)
        # Known label values start at 0, so rates and alerts have a series before the first event.
        for reason in UPSTREAM_ERROR_REASONS:
            self.upstream_errors.labels(reason)
        for reason in UNMETERED_REASONS:
            self.unmetered.labels(reason)
        for result in ("success", "failure"):
            self.catalog_refreshes.labels(result)
        self.limited = Counter(
            "limited_requests", "Requests refused by a limit (the gateway's or NanoGPT's).",
            ["member", "limit"], namespace=ns, registry=registry,
        )  # fmt: skip
        self.reserved = Gauge(
            "reserved_usd", "USD reserved by requests in flight, not yet settled.",
            namespace=ns, registry=registry,
        )  # fmt: skip
        self.budget_remaining = Gauge(
            "budget_remaining_usd", "What is left of each budget in its current window, "
            "after what is reserved in flight (member: a configured name or team).",
            ["member", "window"], namespace=ns, registry=registry,
        )  # fmt: skip
        self.limit_backend_errors = Counter(
            "limit_backend_errors", "Limit decisions taken without the shared backend (Redis "
            "did not answer), refusals included, by class: budgets or rates.",
            ["class"], namespace=ns, registry=registry,
        )  # fmt: skip
        for kind in ("budgets", "rates"):
            self.limit_backend_errors.labels(kind)
        self._limited = functools.cache(self.limited.labels)
        self._budgets_watched: set[tuple[str, str]] = set()
        self._models: frozenset[str] = frozenset()
        self._warned_prices: set[str] = set()
        # Children by label values, kept: labels() checks and locks on every call, and a request
        # makes up to eight. Every label is bounded, so these stay small.
        self._requests = functools.cache(self.requests.labels)
        self._duration = functools.cache(self.duration.labels)
        self._ttft = functools.cache(self.ttft.labels)
        self._tokens = functools.cache(self.tokens.labels)
        self._cost = functools.cache(self.cost.labels)
        self._upstream_errors = functools.cache(self.upstream_errors.labels)
        self._unmetered = functools.cache(self.unmetered.labels)

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text format of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def started(self) -> None:
        self.inflight.inc()

    def observe(self, finished: Finished) -> None:
        """Count one finished request (its start was counted by `started`)."""
        self.inflight.dec()
        member = finished.member if finished.member is not None else UNAUTHENTICATED
        model = self._model_label(finished.model)
        endpoint = finished.endpoint
        self._requests(member, model, endpoint, str(finished.status)).inc()
        self._duration(endpoint, model).observe(finished.duration_seconds)
        if finished.ttft_seconds is not None:
            self._ttft(model).observe(finished.ttft_seconds)
        if finished.usage is not None:
            for kind, count in _token_counts(finished.usage):
                if count:
                    self._tokens(member, model, kind).inc(count)
        if finished.cost_usd:
            self._cost(member, model).inc(float(finished.cost_usd))
        if finished.outcome == "upstream_error":
            self._upstream_errors("status_5xx" if finished.status >= 500 else "status_4xx").inc()
        elif finished.upstream_failure is not None:
            self._upstream_errors(finished.upstream_failure).inc()
        if finished.unmetered is not None:
            self._unmetered(finished.unmetered).inc()
        if finished.limit is not None:
            self._limited(member, finished.limit).inc()

    def watch_limits(
        self,
        members: Iterable[str],
        reserved: Callable[[], float],
        remaining: Mapping[tuple[str, str], Callable[[], float]],
    ) -> None:
        """Read the limiter at every scrape: what is reserved, and what is left of each
        budget, by (member or `team`, window); a budget watched before and not now (a reload
        removed it) is no longer reported. Every member's refusal counts start at 0."""
        self.reserved.set_function(reserved)
        for member, window in self._budgets_watched - remaining.keys():
            self.budget_remaining.remove(member, window)  # gone from the reloaded config
        self._budgets_watched = set(remaining)
        for (member, window), read in remaining.items():
            self.budget_remaining.labels(member, window).set_function(read)
        for member in members:
            for limit in LIMIT_NAMES:
                self._limited(member, limit)

    def limit_decided_without_backend(self, kind: str) -> None:
        self.limit_backend_errors.labels(kind).inc()

    def catalog_refreshed(self, source: str, models: Iterable[ModelInfo] | None) -> None:
        """A catalog fetch ended (`None`: it failed). Models seen here become label values."""
        if models is None:
            self.catalog_refreshes.labels("failure").inc()
            return
        models = tuple(models)
        self.catalog_refreshes.labels("success").inc()
        self.catalog_models.labels(source).set(sum(m.kind == "text" for m in models))
        for kind in MEDIA_KINDS:
            self.catalog_models.labels(kind).set(sum(m.kind == kind for m in models))
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

    def watch_ledger(self, ledger: LedgerQueue) -> None:
        """Report `ledger`'s queue depth and lost rows from now on (zeros until then)."""
        self._ledger.ledger = ledger

    def balance_polled(self, usd: float, nano: float) -> None:
        self.balance_usd.set(usd)
        self.balance_nano.set(nano)

    def _model_label(self, model_id: str | None) -> str:
        if model_id is None:
            return NO_MODEL
        return model_id if model_id in self._models else OTHER


class _LedgerCollector(Collector):
    """The ledger's own counts, read when scraped: its writer thread keeps them, and a failing
    ledger is exactly when nothing else would report them."""

    def __init__(self) -> None:
        self.ledger: LedgerQueue | None = None

    def collect(self) -> Iterator[Metric]:
        queued = self.ledger.queued_rows if self.ledger is not None else 0
        lost = self.ledger.rows_lost if self.ledger is not None else 0
        yield GaugeMetricFamily(
            "nanogpt_gateway_ledger_queue_rows",
            "Usage rows waiting to be written to the ledger.",
            value=queued,
        )
        yield CounterMetricFamily(
            "nanogpt_gateway_ledger_rows_lost",
            "Usage rows never written: the ledger's queue was full, or it closed unwritable.",
            value=lost,
        )


def _token_counts(usage: Usage) -> tuple[tuple[str, int], ...]:
    return (
        ("prompt", usage.prompt_tokens),
        ("completion", usage.completion_tokens),
        ("cached_prompt", usage.cached_prompt_tokens),
        ("reasoning", usage.reasoning_tokens),
    )
