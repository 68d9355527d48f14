"""What every benchmark here needs: free ports, pinned processes that are ready before load
starts, wrk runs read back as numbers, and a process's CPU time and memory from /proc."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
MEMBER_KEY = "sk-bench"
SERVER_CPU = "0"
LOAD_CPU = "1"


def require(*commands: str) -> None:
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        raise SystemExit(f"the benchmark needs {', '.join(missing)}: see bench/README.md")


def gateway_config(api_root: str, ledger_path: Path) -> str:
    """The gateway configured as a team would: member keys, allow patterns, the distillation
    rule, metering with its ledger."""
    from gateway.keys import hash_key

    return f"""
[upstream]
base_url = "{api_root}"
[policy]
allow = ["deepseek/*", "qwen/*", "moonshotai/*"]
distillation = "allowed"
[metering]
ledger_path = "{ledger_path}"
[[members]]
name = "bench"
key_sha256 = "{hash_key(MEMBER_KEY)}"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def pinned(
    args: list[str],
    *,
    cpus: str,
    ready: Callable[[], bool],
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `args` on `cpus` until the block ends; yields once `ready()` holds."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        ["taskset", "-c", cpus, *args],
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=out,
        start_new_session=True,  # its own process group: workers it spawns stop with it
    )
    try:
        deadline = time.monotonic() + 60
        while not ready():
            if proc.poll() is not None:
                raise SystemExit(f"{args[0]} exited with {proc.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{args[0]} did not become ready; see {log}")
            time.sleep(0.1)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if log:
            out.close()


def answers(
    url: str, *, method: str = "GET", body: bytes | None = None, key: str = MEMBER_KEY
) -> Callable[[], bool]:
    """A readiness check: `url` answers 200 when asked with `key`."""
    import urllib.error
    import urllib.request

    def check() -> bool:
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header("authorization", f"Bearer {key}")
        request.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    return check


@dataclass(frozen=True)
class Load:
    """One wrk run: throughput, latency percentiles and every kind of error wrk counts."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def wrk(
    url: str,
    *,
    path: str,
    stream: bool,
    connections: int,
    seconds: float,
    timeout: int = 30,
    large: bool = False,
    key: str = MEMBER_KEY,
) -> Load:
    """Drive `url` with chat-completion POSTs from core 1 (`bench/wrk.lua`) as the member with
    `key`; `large` sends a 1 MB context instead of one short message."""
    env = {**os.environ, "STREAM": "1" if stream else "0", "BENCH_PATH": path}
    env["LARGE"] = "1" if large else "0"
    env["MEMBER_KEY"] = key
    command = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s"]
    command += [f"--timeout={timeout}s", "-s", str(HERE / "wrk.lua"), url]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCH "))
    result = json.loads(line.removeprefix("BENCH "))
    return Load(
        requests=result["requests"],
        seconds=result["duration_us"] / 1e6,
        p50_ms=result["p50_us"] / 1e3,
        p99_ms=result["p99_us"] / 1e3,
        errors=sum(result["errors"].values()),
    )


def rss_mb(pid: int) -> float:
    """Resident memory of a process now, in MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []
