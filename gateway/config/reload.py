"""What a config reload (`SIGHUP`) may change while the gateway runs: members, policy,
limits, pricing and the admin token take effect for new requests; what the running server was
built from (its sockets, the upstream client, the catalog, the ledger, the limiter's calendar)
keeps its value until a restart. Pure.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gateway.config.schema import Settings

RESTART_ONLY = ("server", "upstream", "auth", "catalog", "metering", "database", "state")
"""Sections read once, when the server starts; `limits.timezone` is read once too."""


def reloaded(running: Settings, new: Settings) -> tuple[Settings, list[str]]:
    """`new`, with every setting that needs a restart kept at its `running` value, and the
    names of those that differ (`server.port`, `limits.timezone`)."""
    differ: list[str] = []
    kept: dict[str, Any] = {}
    for section in RESTART_ONLY:
        old, value = getattr(running, section), getattr(new, section)
        differ += [
            f"{section}.{f.name}"
            for f in dataclasses.fields(old)
            if getattr(old, f.name) != getattr(value, f.name)
        ]
        kept[section] = old
    if new.limits.timezone != running.limits.timezone:
        differ.append("limits.timezone")
    limits = dataclasses.replace(new.limits, timezone=running.limits.timezone)
    # derived from catalog.source, which stays
    policy = dataclasses.replace(new.policy, subscription_only=running.policy.subscription_only)
    merged = dataclasses.replace(
        new,
        **kept,
        limits=limits,
        policy=policy,
        team_key=running.team_key,
        redis_password=running.redis_password,
        demo=running.demo,
    )
    return merged, differ
