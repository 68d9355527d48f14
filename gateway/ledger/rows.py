"""A usage row as every ledger backend stores it: the columns the writers fill, and a finished
request's values for them. Pure.
"""

from __future__ import annotations

from gateway.types import Finished


def row_values(record: Finished) -> tuple[object, ...]:
    """A record's column values in `COLUMNS` order, as every backend stores them (the cost
    as a `Decimal`: each backend keeps it exact its own way)."""
    usage = record.usage
    tokens: tuple[int | None, ...] = (None, None, None, None)
    if usage is not None:
        tokens = (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_prompt_tokens,
            usage.reasoning_tokens,
        )
    return (
        record.time,
        record.request_id,
        record.member,
        record.end_user,
        record.model,
        record.endpoint,
        record.status,
        record.outcome,
        int(record.stream),
        *tokens,
        record.cost_usd,
        record.unmetered,
        record.duration_seconds,
        record.ttft_seconds,
        record.path,
        record.cost_source,
        record.limit,
        record.key_id,
    )


COLUMNS = (
    "time",
    "request_id",
    "member",
    "end_user",
    "model",
    "endpoint",
    "status",
    "outcome",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "cached_prompt_tokens",
    "reasoning_tokens",
    "cost_usd",
    "unmetered",
    "duration_seconds",
    "ttft_seconds",
    "path",
    "cost_source",
    "limit_name",
    "key_id",
)
"""The usage table's columns as the writers fill them (every backend has these)."""
