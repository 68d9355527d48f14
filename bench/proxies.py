"""The gateway against nginx and bare passthrough proxies: one run, one table (issue 5).

nginx plays NanoGPT on core 1 beside wrk (fixed JSON on one port, a 64-event stream on
another); each server under test runs as one process on core 0 in front of it: nginx direct
(the limit), the bare starlette + httpx and starlette + aiohttp passthroughs (the floor is the
faster of the two), and the gateway as shipped with member auth, policy (allow patterns +
distillation) and metering (Prometheus + ledger) on. Every server is started fresh for each
body, warmed up, then loaded at c=1 and c=50; then the gateway holds 1,000 streams open
against a dripping upstream. Only ratios from one run mean anything on a shared machine.

    bench/run [--seconds 10] [--warmup 3] [--soak-seconds 60] [--soak-streams 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import harness
import upstream
from harness import Load, answers, free_port, pinned, rss_mb, wrk

NGINX = "nginx direct"
# name: (bench module, server, environment)
PASSTHROUGHS = {
    "starlette + httpx": ("floor_httpx", "uvicorn", {}),
    "starlette + aiohttp": ("floor_aiohttp", "uvicorn", {}),
}
FLOORS = tuple(PASSTHROUGHS)
# With --compare: what chose the gateway's upstream client and server (bench/README.md).
COMPARED = {
    "starlette + httpx, httpx-aiohttp transport": (
        "floor_httpx",
        "uvicorn",
        {"BENCH_TRANSPORT": "aiohttp"},
    ),
    "starlette + aiohttp, uvicorn on asyncio + h11": ("floor_aiohttp", "uvicorn-plain", {}),
    "starlette + aiohttp, granian": ("floor_aiohttp", "granian", {}),
}
GATEWAY = "gateway"
LITELLM = "LiteLLM proxy"
BODIES = ("JSON", "SSE", "SSE 1 MB")
"""A short chat answered as JSON, as a stream, and a stream asked with a 1 MB context."""
SMALL = ("JSON", "SSE")
"""The bodies the targets are set for: a 1 MB context is decoded (about 4 ms of CPU) where a
passthrough only copies it, so its ratio is reported, not held to the passthrough's."""
CHAT = '{"model": "deepseek/deepseek-v3.2", "stream": %s, "messages": [{"role": "user", "content": "hi"}]}'


@dataclass
class Run:
    """What one server did with one body."""

    c1: Load
    c50: Load
    rss_mb: float


@dataclass
class Soak:
    streams: int
    seconds: float
    load: Load
    held_open: float
    rss: list[tuple[float, float]] = field(default_factory=list)

    @property
    def peak_mb(self) -> float:
        return max(mb for _, mb in self.rss)

    @property
    def growth_mb(self) -> float:
        """RSS at the end minus RSS a third of the way in, once every stream is open."""
        third = next(mb for t, mb in self.rss if t >= self.seconds / 3)
        return self.rss[-1][1] - third


class Bench:
    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.workdir = workdir
        self.args = args
        self.ports = upstream.Ports(free_port(), free_port(), free_port())

    def upstream_port(self, body: str) -> int:
        return self.ports.json if body == "JSON" else self.ports.stream

    @contextlib.contextmanager
    def nginx(self) -> Iterator[int]:
        """The fixed-response upstream on the load core; yields its worker's pid."""
        config = self.workdir / "nginx.conf"
        config.write_text(upstream.nginx_config(self.workdir, self.ports))
        url = f"http://127.0.0.1:{self.ports.json}/api/v1/models"
        with pinned(
            ["nginx", "-c", str(config), "-p", str(self.workdir)],
            cpus=harness.LOAD_CPU,
            ready=answers(url),
            log=self.workdir / "nginx.log",
        ) as master:
            yield harness.children(master.pid)[0]

    @contextlib.contextmanager
    def server(self, name: str, api_root: str, *, stream: bool) -> Iterator[tuple[int, str]]:
        """`name` running on core 0 in front of `api_root`; yields (pid, base URL)."""
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = self.workdir / f"{name.replace(' ', '_')}.log"
        body = (CHAT % ("true" if stream else "false")).encode()
        ready = answers(f"{base}/v1/chat/completions", method="POST", body=body)
        env = {"BENCH_UPSTREAM": api_root, "NANOGPT_API_KEY": "bench-team-key"}
        env["PYTHONPATH"] = str(harness.HERE)
        if name == GATEWAY:
            command = self.gateway_command(api_root, port)
        elif name == LITELLM:
            command = self.litellm_command(api_root, port)
            env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no fetch from the internet
            # The member key is its master key: short, as the bench's keys are.
            env["LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY"] = "true"
        else:
            module, server, extra = {**PASSTHROUGHS, **COMPARED}[name]
            command = passthrough_command(module, server, port)
            env.update(extra)
        with pinned(command, cpus=harness.SERVER_CPU, ready=ready, env=env, log=log) as proc:
            yield proc.pid, base

    def gateway_command(self, api_root: str, port: int) -> list[str]:
        """The gateway as shipped, configured as a team would: keys, policy, metering."""
        config = self.workdir / f"gateway-{port}.toml"
        ledger = self.workdir / f"usage-{port}.db"
        config.write_text(f"[server]\nport = {port}\n" + harness.gateway_config(api_root, ledger))
        command = [str(Path(sys.executable).with_name("nanogpt-gateway")), "serve"]
        return [*command, "--config", str(config)]

    def litellm_command(self, api_root: str, port: int) -> list[str]:
        config = self.workdir / f"litellm-{port}.yaml"
        config.write_text(
            f"""
model_list:
  - model_name: deepseek/deepseek-v3.2
    litellm_params:
      model: openai/deepseek/deepseek-v3.2
      api_base: {api_root}/v1
      api_key: bench-team-key
litellm_settings:
  telemetry: false
general_settings:
  master_key: {harness.MEMBER_KEY}
"""
        )
        return [_litellm(), "--config", str(config), "--port", str(port), "--num_workers", "1"]

    def measure(self, name: str, body: str, nginx_pid: int) -> Run:
        stream, large = body != "JSON", body == "SSE 1 MB"
        port = self.upstream_port(body)
        api_root = f"http://127.0.0.1:{port}/api"
        if name == NGINX:
            pid, url, path = nginx_pid, f"http://127.0.0.1:{port}", "/api/v1/chat/completions"
            return self.load(url, path, stream, large, pid)
        with self.server(name, api_root, stream=stream) as (pid, url):
            return self.load(url, "/v1/chat/completions", stream, large, pid)

    def load(self, url: str, path: str, stream: bool, large: bool, pid: int) -> Run:
        def run(connections: int, seconds: float) -> Load:
            return wrk(
                url, path=path, stream=stream, large=large, connections=connections, seconds=seconds
            )

        run(50, self.args.warmup)
        return Run(run(1, self.args.seconds), run(50, self.args.seconds), rss_mb(pid))

    def soak(self) -> Soak:
        """The gateway holding `--soak-streams` streams open against the dripping port, with
        its RSS sampled as it goes."""
        streams, seconds = self.args.soak_streams, self.args.soak_seconds
        api_root = f"http://127.0.0.1:{self.ports.slow_stream}/api"
        with self.server(GATEWAY, api_root, stream=True) as (pid, url):
            started = time.monotonic()
            samples: list[tuple[float, float]] = []
            held: list[float] = []
            done = threading.Event()

            def sample() -> None:
                while not done.wait(2.0):
                    samples.append((time.monotonic() - started, rss_mb(pid)))
                    held.append(_inflight(url))

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                load = wrk(
                    url,
                    path="/v1/chat/completions",
                    stream=True,
                    connections=streams,
                    seconds=seconds,
                    timeout=60,
                )
            finally:
                done.set()
                sampler.join()
            return Soak(streams, seconds, load, max(held, default=0), samples)


def _litellm() -> str:
    """The LiteLLM proxy's command, if installed beside this Python or on PATH ("" if not)."""
    beside = Path(sys.executable).with_name("litellm")
    return str(beside) if beside.exists() else shutil.which("litellm") or ""


def passthrough_command(module: str, server: str, port: int) -> list[str]:
    """A bare passthrough on one worker: uvicorn as installed (uvloop and httptools when
    present), uvicorn on the pure-Python asyncio loop and h11, or granian."""
    if server == "granian":
        command = [str(Path(sys.executable).with_name("granian")), "--interface", "asgi"]
        command += ["--workers", "1", "--loop", "uvloop", "--port", str(port)]
        return [*command, "--log-level", "warning", f"{module}:app"]  # found on PYTHONPATH
    command = [sys.executable, "-m", "uvicorn", f"{module}:app", "--app-dir", str(harness.HERE)]
    command += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    if server == "uvicorn-plain":
        command += ["--loop", "asyncio", "--http", "h11"]
    return command


def _inflight(base: str) -> float:
    """The gateway's own count of requests in flight, from its /metrics."""
    import urllib.request

    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("nanogpt_gateway_inflight_requests "):
                return float(line.split()[1])
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="each measured wrk run")
    parser.add_argument("--warmup", type=int, default=3, help="c=50 load before measuring")
    parser.add_argument("--soak-seconds", type=int, default=60)
    parser.add_argument("--soak-streams", type=int, default=1000)
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also run the passthroughs that chose the client and the server (bench/README.md)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    args = parser.parse_args()
    harness.require("nginx", "wrk", "taskset")

    servers = [NGINX, *FLOORS]
    if args.compare:
        servers += COMPARED
    servers.append(GATEWAY)
    if _litellm():
        servers.append(LITELLM)

    workdir = Path(tempfile.mkdtemp(prefix="bench-proxies-"))
    workdir.chmod(0o755)  # nginx's workers run as another user when started by root
    bench = Bench(workdir, args)
    runs: dict[tuple[str, str], Run] = {}
    soak = None
    try:
        with bench.nginx() as nginx_pid:
            for body in BODIES:
                for name in servers:
                    print(f"{body}: {name} ...", file=sys.stderr, flush=True)
                    runs[name, body] = bench.measure(name, body, nginx_pid)
            if args.soak_seconds > 0:
                print(f"soak: {args.soak_streams} streams ...", file=sys.stderr, flush=True)
                soak = bench.soak()
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report(servers, runs, soak, args))


def report(
    servers: list[str],
    runs: dict[tuple[str, str], Run],
    soak: Soak | None,
    args: argparse.Namespace,
) -> str:
    floor = {b: max(FLOORS, key=lambda n: runs[n, b].c50.rate) for b in BODIES}
    gateway = {b: runs[GATEWAY, b] for b in BODIES}
    bodies = " / ".join(BODIES)
    lines = [
        f"One run, {args.seconds:g} s per load after {args.warmup:g} s warm-up; each server one "
        "process on core 0, nginx upstream and wrk on core 1.",
        "",
        "| server | "
        + " | ".join(f"{b} c=50 req/s" for b in BODIES)
        + " | "
        + " | ".join(f"{b} c=1 p50 / p99 ms" for b in BODIES)
        + f" | c=50 p99 ms {bodies} | RSS MB | errors |",
        "|---|" + "---:|" * (2 * len(BODIES) + 3),
    ]
    for name in servers:
        r = [runs[name, b] for b in BODIES]
        errors = sum(x.c1.errors + x.c50.errors for x in r)
        lines.append(
            f"| {name} | "
            + " | ".join(f"{x.c50.rate:,.0f}" for x in r)
            + " | "
            + " | ".join(f"{x.c1.p50_ms:.2f} / {x.c1.p99_ms:.2f}" for x in r)
            + " | "
            + " / ".join(f"{x.c50.p99_ms:.1f}" for x in r)
            + f" | {max(x.rss_mb for x in r):.0f} | {errors} |"
        )
    lines += ["", f"| ratio (c=50 req/s) | {' | '.join(BODIES)} |", "|---|" + "---:|" * len(BODIES)]
    lines.append(
        f"| gateway / floor ({'; '.join(floor[b] for b in BODIES)}) "
        + "".join(f"| {gateway[b].c50.rate / runs[floor[b], b].c50.rate:.2f} " for b in BODIES)
        + "|"
    )
    lines.append(
        "| gateway / nginx direct "
        + "".join(f"| {gateway[b].c50.rate / runs[NGINX, b].c50.rate:.3f} " for b in BODIES)
        + "|"
    )
    if LITELLM in servers:
        lines.append(
            "| gateway / LiteLLM "
            + "".join(f"| {gateway[b].c50.rate / runs[LITELLM, b].c50.rate:.1f} " for b in BODIES)
            + "|"
        )
    targets = []
    for b in SMALL:
        f, g = runs[floor[b], b], gateway[b]
        ratio = g.c50.rate / f.c50.rate
        targets.append((f"{b} c=50: gateway ≥ 0.9 x floor", f"{ratio:.2f}", ratio >= 0.9))
        d50, d99 = g.c1.p50_ms - f.c1.p50_ms, g.c1.p99_ms - f.c1.p99_ms
        targets.append((f"{b} c=1 p50: ≤ floor + 0.3 ms", f"{d50:+.2f} ms", d50 <= 0.3))
        targets.append((f"{b} c=1 p99: ≤ floor + 1 ms", f"{d99:+.2f} ms", d99 <= 1.0))
    if LITELLM in servers:
        worst = min(gateway[b].c50.rate / runs[LITELLM, b].c50.rate for b in BODIES)
        targets.append(("c=50: gateway ≥ 20 x LiteLLM", f"{worst:.0f}", worst >= 20))
    rss = max(gateway[b].rss_mb for b in SMALL)
    targets.append(("RSS after the small bodies' load ≤ 80 MB", f"{rss:.0f} MB", rss <= 80))
    if soak is not None:
        targets.append(
            (f"{soak.streams} streams: no errors", str(soak.load.errors), soak.load.errors == 0)
        )
        targets.append(
            (f"{soak.streams} streams: RSS ≤ 150 MB", f"{soak.peak_mb:.0f} MB", soak.peak_mb <= 150)
        )
        targets.append(
            (
                f"memory flat over the {soak.seconds:g} s soak (≤ 5 MB growth after the first third)",
                f"{soak.growth_mb:+.1f} MB",
                soak.growth_mb <= 5,
            )
        )
    lines += ["", "| target | measured | holds |", "|---|---:|:---:|"]
    lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in targets]
    if soak is not None:
        rss_line = ", ".join(
            f"{t:.0f}s {mb:.0f}" for t, mb in soak.rss[:: max(1, len(soak.rss) // 8)]
        )
        lines += [
            "",
            f"Soak: {soak.streams} concurrent streams for {soak.seconds:g} s against an upstream "
            f"dripping each stream at 2 KB/s: {soak.load.requests} streams completed, "
            f"{soak.load.errors} errors, at most {soak.held_open:.0f} in flight at once (the "
            f"gateway's own gauge); RSS MB over time: {rss_line}.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
