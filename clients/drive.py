"""Drive real clients through `nanogpt-gateway serve --demo`, record what they send, and print a
client x check table with what the gateway's ledger metered for each.

Run by `clients/run` (which installs the pinned clients first); the clients and their settings
are in `roster.py`. Each client gets its own member key, so the ledger's `member` column tells
the clients apart; a recording pass-through between clients and gateway keeps each request
(secrets dropped) as a fixture for tests/test_clients.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

from recorder import Exchange, Recorder, trim, was_trimmed
from roster import Client, Ctx, Step, clients, pinned

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FIXTURES = REPO / "tests" / "fixtures" / "clients"
CHECKS = ("chat", "stream", "tools", "responses", "messages", "structured", "embeddings")
MODEL_PATHS = ("/v1/chat/completions", "/v1/responses", "/v1/messages")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def member_key(client: str) -> str:
    return f"sk-client-{client}-{hashlib.sha256(client.encode()).hexdigest()[:12]}"


@contextlib.contextmanager
def gateway(python: str, tmp: Path, names: list[str]) -> Iterator[tuple[str, Path]]:
    """`serve --demo` on a free port, its ledger in `tmp`, one member per client."""
    ledger = tmp / "ledger.db"
    members = "".join(
        f'\n[[members]]\nname = "{n}"\nkey_sha256 = "{hashlib.sha256(member_key(n).encode()).hexdigest()}"\n'
        for n in names
    )
    config = tmp / "gateway.toml"
    config.write_text(f'[metering]\nledger_path = "{ledger}"\n{members}')
    port = free_port()
    log = (tmp / "gateway.log").open("w")
    env = {k: v for k, v in os.environ.items() if k not in ("NANOGPT_API_KEY", "GATEWAY_CONFIG")}
    process = subprocess.Popen(
        [python, "-m", "gateway", "serve", "--demo", "--config", str(config), "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # readiness poll, bounded
            if process.poll() is not None:
                raise SystemExit(f"gateway exited: {(tmp / 'gateway.log').read_text()}")
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(base + "/readyz", timeout=2).status == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("gateway did not become ready")
            time.sleep(0.1)
        yield base, ledger
    finally:
        process.terminate()
        process.wait(timeout=30)  # the ledger is flushed at shutdown
        log.close()


async def run_step(step: Step, ctx: Ctx, timeout: float, log: Path) -> tuple[bool, str]:
    env = {
        **os.environ,
        "HOME": str(ctx.home),
        "XDG_CONFIG_HOME": str(ctx.home / ".config"),
        "XDG_DATA_HOME": str(ctx.home / ".local/share"),
        "XDG_CACHE_HOME": str(ctx.home / ".cache"),
        "NO_COLOR": "1",
        "CI": "1",
        **step.env,
    }
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        if name not in step.env:
            env.pop(name, None)
    env["PATH"] = f"{Path(ctx.node).parent}:{env.get('PATH', '')}"
    process = await asyncio.create_subprocess_exec(
        *step.argv,
        cwd=ctx.work,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        await process.wait()
        return False, f"timed out after {timeout:.0f}s"
    text = out.decode("utf-8", "replace")
    with log.open("a") as f:
        f.write(f"$ {' '.join(step.argv)[:300]}\n{text}\n[exit {process.returncode}]\n\n")
    if process.returncode != 0:
        tail = " ".join(text.strip().splitlines()[-2:])[-160:]
        return False, f"exit {process.returncode}: {tail}"
    return True, ""


def reap(tmp: Path) -> None:
    """End what the clients left running from this run's directory (Cline starts a hub daemon
    in a session of its own): found by the run's unique path in their command lines."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if str(tmp).encode() in cmdline.read_bytes():
                os.kill(int(cmdline.parent.name), signal.SIGTERM)


def proves(check: str, exchanges: list[Exchange]) -> bool:
    """Whether the recorded traffic shows `check` working end to end."""
    ok = [e for e in exchanges if 200 <= e.status < 300]
    model_calls = [e for e in ok if e.path in MODEL_PATHS]
    if check == "chat":
        return any(e.path == "/v1/chat/completions" for e in model_calls)
    if check == "stream":
        return any(
            e.ends_with in ("[DONE]", "response.completed", "message_stop") for e in model_calls
        )
    if check == "tools":
        called = [i for i, e in enumerate(exchanges) if e.tool_calls and e in model_calls]
        return bool(called) and any(e in model_calls for e in exchanges[called[0] + 1 :])
    if check == "structured":
        return any(_asks_for_json(e.body) for e in model_calls)
    if check in ("responses", "messages", "embeddings"):
        return any(e.path == f"/v1/{check}" for e in ok)
    return False


def _asks_for_json(body: object) -> bool:
    """A chat `response_format` or a Responses `text.format` naming a JSON schema or object."""
    if not isinstance(body, dict):
        return False
    text = body.get("text")
    format_ = body.get("response_format") or (
        text.get("format") if isinstance(text, dict) else None
    )
    return isinstance(format_, dict) and format_.get("type") in ("json_schema", "json_object")


def write_fixture(client: Client, step: Step, exchanges: list[Exchange]) -> None:
    bodies = [e.body for e in exchanges]
    source = (
        f"Recorded by clients/run: {client.name} {client.version} through serve --demo, step "
        f"'{step.name}' ({', '.join(step.covers) or 'setup'}). Secrets dropped from headers."
    )
    if any(was_trimmed(b) for b in bodies):
        source += " Strings over 1500 characters (system prompts, tool manuals) trimmed to 300."
    document = {
        "_source": source,
        "client": client.name,
        "version": client.version,
        "requests": [e.fixture() for e in exchanges],
    }
    FIXTURES.mkdir(parents=True, exist_ok=True)
    path = FIXTURES / f"{client.name.replace('-', '_')}_{step.name}.json"
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    assert trim(document) == document


def metered(ledger: Path) -> dict[str, tuple[int, int, int, Decimal]]:
    """Per member: rows, prompt tokens, completion tokens, cost."""
    totals: dict[str, tuple[int, int, int, Decimal]] = {}
    with contextlib.closing(sqlite3.connect(ledger)) as db:
        for member, prompt, completion, cost in db.execute(
            "SELECT member, prompt_tokens, completion_tokens, cost_usd FROM usage"
        ):
            rows, p, c, usd = totals.get(member, (0, 0, 0, Decimal(0)))
            totals[member] = (
                rows + 1,
                p + (prompt or 0),
                c + (completion or 0),
                usd + Decimal(cost or 0),
            )
    return totals


async def drive(args: argparse.Namespace) -> int:
    cache = Path(args.cache).resolve()
    roster = clients(pinned())
    if args.only:
        roster = [c for c in roster if c.name in args.only.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="gateway-clients-"))
    log = tmp / "clients.log"
    python = str(cache / "py" / "bin" / "python")
    node = (
        shutil.which("node", path=f"{cache / 'node' / 'bin'}:{os.environ.get('PATH', '')}")
        or "node"
    )
    results: dict[str, dict[str, str]] = {}
    with gateway(sys.executable, tmp, [c.name for c in roster]) as (gateway_url, ledger):
        recorder = Recorder(gateway_url)
        await recorder.start()
        try:
            for client in roster:
                results[client.name] = await drive_one(
                    client, recorder, cache, tmp, python, node, log, args
                )
        finally:
            await recorder.stop()
    reap(tmp)
    totals = metered(ledger)
    print_table(roster, results, totals)
    print(f"\nlogs: {log}  gateway: {tmp / 'gateway.log'}  ledger: {ledger}")
    return 0


async def drive_one(
    client: Client,
    recorder: Recorder,
    cache: Path,
    tmp: Path,
    python: str,
    node: str,
    log: Path,
    args: argparse.Namespace,
) -> dict[str, str]:
    home = tmp / client.name
    work = home / "work"
    work.mkdir(parents=True)
    (work / "README.txt").write_text("A scratch directory for a client run.\n")
    npm_bin, py_bin = cache / "npm" / "node_modules" / ".bin", cache / "py" / "bin"
    ctx = Ctx(recorder.url, member_key(client.name), home, work, python, node, npm_bin, py_bin)
    cells: dict[str, str] = {}
    evidence: dict[str, list[Exchange]] = {}
    failures: dict[str, str] = {}
    started = time.monotonic()
    with log.open("a") as f:
        f.write(f"===== {client.name} {client.version}\n")
    steps = client.steps(ctx)
    absent = [
        s.argv[0] for s in steps if s.argv[0].startswith("/") and not Path(s.argv[0]).exists()
    ]
    if absent:
        return {c: client.na.get(c, f"not installed ({absent[0]})") for c in CHECKS}
    for step in steps:
        left = args.client_timeout - (time.monotonic() - started)
        if left <= 5:
            failures.update({c: "client time box spent" for c in step.covers})
            continue
        recorder.label = (client.name, step.name)
        ok, why = await run_step(step, ctx, min(args.step_timeout, left), log)
        exchanges = recorder.exchanges.get((client.name, step.name), [])
        if exchanges and args.record:
            write_fixture(client, step, exchanges)
        for check in step.covers:
            evidence.setdefault(check, []).extend(exchanges)
            if not ok:
                failures.setdefault(check, why)
            elif not proves(check, exchanges):
                failures.setdefault(check, f"step {step.name}: traffic shows no {check}")
        if not ok and not step.covers:
            failures["_setup"] = f"{step.name}: {why}"
    for check in CHECKS:
        if check in client.na:
            cells[check] = "n/a: " + client.na[check]
        elif check in failures and not proves(check, evidence.get(check, [])):
            cells[check] = "FAIL: " + failures[check]
        elif check in evidence and proves(check, evidence[check]):
            cells[check] = "pass"
        elif "_setup" in failures:
            cells[check] = "FAIL: " + failures["_setup"]
        else:
            cells[check] = "n/a: not exercised"
    return cells


def print_table(
    roster: list[Client],
    results: dict[str, dict[str, str]],
    totals: dict[str, tuple[int, int, int, Decimal]],
) -> None:
    def mark(cell: str) -> str:
        return "pass" if cell == "pass" else ("FAIL" if cell.startswith("FAIL") else "n/a")

    header = ["client", "version", *CHECKS, "rows", "prompt", "completion", "cost_usd"]
    lines = [header]
    for client in roster:
        rows, p, c, usd = totals.get(client.name, (0, 0, 0, Decimal(0)))
        cells = results.get(client.name, {})
        lines.append(
            [
                client.name,
                client.version,
                *(mark(cells.get(k, "n/a")) for k in CHECKS),
                str(rows),
                str(p),
                str(c),
                f"{usd:.6f}",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print()
    for client in roster:
        for check, cell in results.get(client.name, {}).items():
            if cell != "pass":
                print(f"{client.name} / {check}: {cell}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=os.environ.get("CLIENTS_CACHE", str(HERE / ".cache")))
    parser.add_argument("--only", help="comma-separated client names")
    parser.add_argument("--client-timeout", type=float, default=120.0)
    parser.add_argument("--step-timeout", type=float, default=90.0)
    parser.add_argument(
        "--no-record", dest="record", action="store_false", help="write no fixtures"
    )
    return asyncio.run(drive(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
