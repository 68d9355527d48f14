"""How fast a running gateway refuses a revoked key: from the revocation's commit (made by
this process, as the `keys` command makes it) to the first 401, and from the `keys revoke`
command's exit; over many rounds, with no other keys and with 10,000 stored (reading them
takes longer).

    python bench/revocation.py [--rounds 20] [--stored 0]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import harness
from harness import answers, free_port, pinned
from serve_variant import store_keys

from gateway.keystore import actions, open_keystore


def status(url: str, key: str) -> int:
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def keys(config: Path, *args: str) -> str:
    command = [sys.executable, "-m", "gateway", "keys", *args, "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def seconds_until(url: str, key: str, wanted: int) -> float:
    started = time.monotonic()
    while status(url, key) != wanted:
        if time.monotonic() - started > 30:
            raise SystemExit(f"{url} never answered {wanted}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--stored", type=int, default=0, help="keys stored besides the ones made")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-revocation-") as tmp:
        workdir = Path(tmp)
        config = workdir / "gateway.toml"
        config.write_text(f'[metering]\nledger_path = "{workdir / "usage.db"}"\n')
        if args.stored:
            store_keys(workdir / "usage.db", args.stored)
        port = free_port()
        command = [sys.executable, "-m", "gateway", "serve", "--demo", "--port", str(port)]
        command += ["--config", str(config)]
        url = f"http://127.0.0.1:{port}/v1/key"
        ready = answers(f"http://127.0.0.1:{port}/readyz")
        created, committed, command_exit = [], [], []
        with pinned(command, cpus=harness.SERVER_CPU, ready=ready):
            store = open_keystore(workdir / "usage.db")
            for i in range(args.rounds):
                output = keys(config, "create", f"revoked-{i}")
                key = next(word for word in output.split() if word.startswith("ngw-"))
                created.append(seconds_until(url, key, 200))
                if i % 2:
                    keys(config, "revoke", f"revoked-{i}")
                    command_exit.append(seconds_until(url, key, 401))
                else:
                    actions.revoke(store, f"revoked-{i}", actor="bench", now=time.time())
                    committed.append(seconds_until(url, key, 401))
            store.close()
    print(f"\n{args.rounds} rounds, {args.stored:,} other keys stored\n")
    print("| from | to | median s | p90 s | max s |")
    print("|---|---|---:|---:|---:|")
    for what, times in (
        ("`keys create` exit | 200", created),
        ("revocation committed | 401", committed),
        ("`keys revoke` exit | 401", command_exit),
    ):
        p90 = statistics.quantiles(times, n=10)[-1]
        print(f"| {what} | {statistics.median(times):.3f} | {p90:.3f} | {max(times):.3f} |")


if __name__ == "__main__":
    main()
