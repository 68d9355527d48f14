"""Metering's cost on the request path: gateway req/s with metering on vs off, same run.

Starts the demo upstream (no pacing) and, in turn, the gateway with metering on and off, each
one process pinned to core 0 with the upstream, and drives them with wrk on core 1. Rounds
alternate on/off so drift on a noisy machine hits both; only the ratio is reported as a result.

    python bench/metering.py [--seconds 10] [--rounds 3] [--connections 50]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

HERE = Path(__file__).parent
MEMBER_KEY = "sk-bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def process(args: list[str], ready_url: str, cpus: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "MEMBER_KEY": MEMBER_KEY}
    proc = subprocess.Popen(["taskset", "-c", cpus, *args], env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{args} exited with {proc.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(ready_url, headers={"x-api-key": "demo-team-key"}).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"{args} did not become ready")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, *, stream: bool, seconds: int, connections: int) -> tuple[float, int, int]:
    """(requests per second, requests, non-2xx or socket errors) for one wrk run on core 1."""
    env = {**os.environ, "STREAM": "1" if stream else "0", "MEMBER_KEY": MEMBER_KEY}
    command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    out = subprocess.run(
        [*command, "-s", str(HERE / "chat.lua"), url],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = sum(
        int(n) for n in re.findall(r"(?:Non-2xx or 3xx responses|errors: .*?):?\s+(\d+)", out)
    )
    return rate, requests, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("taskset"):
        raise SystemExit("needs wrk and taskset: apt-get install wrk util-linux")

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
    with process(upstream_cmd, f"{upstream_url}/v1/models", cpus="0"):
        for _ in range(args.rounds):
            for metering in ("on", "off"):
                port = free_port()
                cmd = [
                    sys.executable,
                    str(HERE / "serve_variant.py"),
                    "--port",
                    str(port),
                    "--upstream",
                    upstream_url,
                    "--metering",
                    metering,
                ]
                with process(cmd, f"http://127.0.0.1:{port}/readyz", cpus="0") as gateway:
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    for stream in (False, True):
                        wrk(url, stream=stream, seconds=2, connections=args.connections)  # warm-up
                        before = cpu_seconds(gateway.pid)
                        rate, requests, errs = wrk(
                            url, stream=stream, seconds=args.seconds, connections=args.connections
                        )
                        used = cpu_seconds(gateway.pid) - before
                        results.setdefault((metering, stream), []).append(rate)
                        cpu.setdefault((metering, stream), []).append(used / requests * 1e6)
                        errors += errs

    print(f"\n{args.rounds} rounds x {args.seconds} s, c={args.connections}, medians\n")
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
