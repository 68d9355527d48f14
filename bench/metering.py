"""Metering's (or, with `--limits`, the limits'; with `--keys`, 10,000 stored keys'; with
`--redis`, every limit kept in a real Redis vs in the process) cost on the request path:
gateway req/s with it on vs off, same run.

Starts the demo upstream (no pacing) and, in turn, the gateway with the feature on and off,
each one process pinned to core 0 with the upstream, and drives them with wrk on core 1.
Rounds alternate on/off so drift on a noisy machine hits both; only the ratio is reported as a
result.

    python bench/metering.py [--limits | --keys | --redis] [--seconds 10] [--rounds 3] [--connections 50]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import socket
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import harness
from harness import answers, cpu_seconds, free_port, pinned, wrk

from gateway.demo_upstream import DEMO_TEAM_KEY

CHAT = "/v1/chat/completions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--limits", action="store_true", help="compare every limit set vs none (metering on)"
    )
    parser.add_argument(
        "--keys",
        action="store_true",
        help="compare 10,000 stored keys vs 10, loading as a stored key (metering on)",
    )
    parser.add_argument(
        "--redis",
        action="store_true",
        help="compare every limit in Redis (redis-server on the load's core) vs in-process",
    )
    args = parser.parse_args()
    feature = (
        "--limits"
        if args.limits
        else "--keys"
        if args.keys
        else "--redis"
        if args.redis
        else "--metering"
    )
    harness.require("wrk", "taskset", *(["redis-server"] if args.redis else []))
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(redis_server()) if args.redis else None
        measure(args, feature, redis_url)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server on the load generator's core, as a Redis on another machine would be."""
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    with pinned(cmd, cpus=harness.LOAD_CPU, ready=lambda: _pong(port)):
        yield f"redis://127.0.0.1:{port}/0"


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def measure(args: argparse.Namespace, feature: str, redis_url: str | None) -> None:

    upstream_port = free_port()
    # demo-upstream paces its chunks for humans; the bench wants it as fast as it goes.
    upstream_cmd = [
        sys.executable,
        "-c",
        "import uvicorn; from gateway.demo_upstream import create_demo_upstream; "
        f"uvicorn.run(create_demo_upstream(), port={upstream_port}, log_level='warning')",
    ]
    upstream_url = f"http://127.0.0.1:{upstream_port}/api"
    results: dict[tuple[str, bool], list[float]] = {}
    cpu: dict[tuple[str, bool], list[float]] = {}
    errors = 0
    upstream_ready = answers(f"{upstream_url}/v1/models", key=DEMO_TEAM_KEY)
    with pinned(upstream_cmd, cpus=harness.SERVER_CPU, ready=upstream_ready):
        for _ in range(args.rounds):
            for metering in ("on", "off"):
                port = free_port()
                key_file = Path(tempfile.mkdtemp(prefix="bench-keys-")) / "key"
                cmd = [
                    sys.executable,
                    str(harness.HERE / "serve_variant.py"),
                    "--port",
                    str(port),
                    "--upstream",
                    upstream_url,
                    feature,
                    metering,
                    "--key-file",
                    str(key_file),
                    *(["--redis-url", redis_url] if redis_url else []),
                ]
                ready = answers(f"http://127.0.0.1:{port}/readyz")
                with pinned(cmd, cpus=harness.SERVER_CPU, ready=ready) as gateway:
                    url = f"http://127.0.0.1:{port}"
                    key = key_file.read_text() if args.keys else harness.MEMBER_KEY
                    for stream in (False, True):
                        load = functools.partial(
                            wrk,
                            url,
                            path=CHAT,
                            stream=stream,
                            connections=args.connections,
                            key=key,
                        )
                        load(seconds=2)  # warm-up
                        before = cpu_seconds(gateway.pid)
                        result = load(seconds=args.seconds)
                        used = cpu_seconds(gateway.pid) - before
                        results.setdefault((metering, stream), []).append(result.rate)
                        cpu.setdefault((metering, stream), []).append(used / result.requests * 1e6)
                        errors += result.errors

    what = (
        "limits"
        if args.limits
        else "10,000 stored keys vs 10"
        if args.keys
        else "limits in Redis vs in-process"
        if args.redis
        else "metering"
    )
    print(f"\n{what}: {args.rounds} rounds x {args.seconds} s, c={args.connections}, medians\n")
    print("| body | req/s off | req/s on | on / off | gateway CPU us/req off | on | on / off |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for stream in (False, True):
        off, on = (statistics.median(results[(m, stream)]) for m in ("off", "on"))
        cpu_off, cpu_on = (statistics.median(cpu[(m, stream)]) for m in ("off", "on"))
        print(
            f"| {'SSE' if stream else 'JSON'} | {off:,.0f} | {on:,.0f} | {on / off:.2f} "
            f"| {cpu_off:,.0f} | {cpu_on:,.0f} | {cpu_on / cpu_off:.2f} |"
        )
    print(f"\nerrors (non-2xx or socket): {errors}")


if __name__ == "__main__":
    main()
