"""One gateway process for the metering and limits benchmarks: `--metering on` is the product
as shipped; `--metering off` hands the app, through its seams, a ledger that keeps nothing and
metrics that count nothing, keeping auth, policy, the relay and the usage reading of bodies.
Both still ask the upstream for stream usage, so the stand-in, which shares the core, does the
same work for both and the ratio is the gateway's alone. `--limits on` adds every limit a team
would set (budgets, rates, concurrency, end users, team budgets), none low enough to refuse:
what checking and reserving them costs. `--keys on` stores 10,000 keys in the key store,
`off` 10, and writes the last one's key to `--key-file` for the load: what finding a key among
many costs."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import harness
import uvicorn

from gateway.app import create_app
from gateway.config import load_settings
from gateway.keystore import actions, open_keystore
from gateway.metrics import Metrics
from gateway.types import Finished


class NullLedger:
    writable = True
    queued_rows = 0
    rows_lost = 0

    def append(self, record: Finished) -> None:
        pass

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


class NullMetrics(Metrics):
    def started(self) -> None:
        pass

    def observe(self, finished: Finished) -> None:
        pass


LIMITS = """
[limits]
timezone = "Europe/Berlin"
budget_usd_daily = 1000000.0
budget_usd_monthly = 10000000.0
requests_per_minute = 100000000
tokens_per_minute = 1000000000000
max_concurrent_requests = 100000
team_budget_usd_daily = 1000000.0
team_budget_usd_monthly = 10000000.0
"""


STORED_KEYS = 10_000


def store_keys(database: Path, count: int) -> str:
    """`count` keys in the key store, as `keys create` makes them; the last one's key."""
    store = open_keystore(database)
    try:
        for i in range(count):
            _, key = actions.create(
                store, {"name": f"bench-{i}"}, actor="bench", now=time.time(), config_names=()
            )
    finally:
        store.close()
    return key


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the stand-in's API root")
    parser.add_argument("--metering", choices=["on", "off"], default="on")
    parser.add_argument("--limits", choices=["on", "off"], default="off")
    parser.add_argument("--keys", choices=["on", "off"], default=None)
    parser.add_argument("--key-file", type=Path, help="where --keys writes the key to load with")
    parser.add_argument(
        "--redis", choices=["on", "off"], default=None, help="every limit set, in Redis or not"
    )
    parser.add_argument("--redis-url", default=None, help="the Redis for --redis on")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        serve(args, Path(tmp))


def serve(args: argparse.Namespace, workdir: Path) -> None:
    config = workdir / "gateway.toml"
    toml = harness.gateway_config(args.upstream, workdir / "usage.db")
    if args.redis is not None:  # limits on either way; kept in Redis, or in this process
        shared = f'[state]\nredis_url = "{args.redis_url}"\n' if args.redis == "on" else ""
        config.write_text(shared + LIMITS + toml)
    else:
        config.write_text(LIMITS + toml if args.limits == "on" else toml)
    settings = load_settings(config, {"NANOGPT_API_KEY": "demo-team-key"})
    if args.keys is not None:
        count = STORED_KEYS if args.keys == "on" else 10
        args.key_file.write_text(store_keys(workdir / "usage.db", count))
    if args.metering == "off":
        app = create_app(settings, ledger=NullLedger(), metrics=NullMetrics())
    else:
        app = create_app(settings)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
