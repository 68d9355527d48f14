"""The `nanogpt-gateway` command: errors exit 2 with one line, and the quickstart really serves."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.cli import DEMO_MEMBER_KEY, main
from gateway.demo_upstream import DEMO_TEAM_KEY
from gateway.keys import hash_key
from gateway.ledger.sqlite import SQLiteLedger
from gateway.types import Finished
from tests.conftest import MEMBERS_TOML, TEAM_KEY, free_port, ledger_rows, logged, running


def test_hash_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash-key", "sk-alice"]) == 0
    assert capsys.readouterr().out.strip() == hashlib.sha256(b"sk-alice").hexdigest()


def test_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(MEMBERS_TOML)
    monkeypatch.setenv("NANOGPT_API_KEY", TEAM_KEY)
    monkeypatch.setenv("BOB_KEY", "sk-bob")
    assert main(["check-config", "--config", str(config)]) == 0
    assert "OK; members: alice, bob, root" in capsys.readouterr().out

    config.write_text("[upstream]\nread_timeout_seconds = 'slow'\n" + MEMBERS_TOML)
    monkeypatch.setenv("GATEWAY_CONFIG", str(config))
    assert main(["check-config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{config}: upstream.read_timeout_seconds: expected a number" in err


def test_serve_refuses_to_start_without_the_team_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[[members]]\nname = 'a'\nkey_sha256 = '" + "0" * 64 + "'\n")
    assert main(["serve", "--config", str(config)]) == 2
    assert "NANOGPT_API_KEY" in capsys.readouterr().err


def test_serve_refuses_an_open_relay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[auth]\nmode = 'none'\n")
    monkeypatch.setenv("NANOGPT_API_KEY", TEAM_KEY)
    assert main(["serve", "--config", str(config), "--host", "0.0.0.0"]) == 2
    assert "loopback" in capsys.readouterr().err


def chat(base: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "deepseek/deepseek-v3.2", "messages": [{"role": "user", "content": "hi"}]},
    )


def test_quickstart_without_a_key_serves_the_demo() -> None:
    with running(["quickstart"], "/readyz") as (base, _, stderr):
        response = chat(base, DEMO_MEMBER_KEY)
        assert response.status_code == 200
        assert "demo upstream" in response.json()["choices"][0]["message"]["content"]
    assert "offline demo upstream" in stderr[0] and DEMO_MEMBER_KEY in stderr[0]
    assert stderr[0].count("Application shutdown complete") == 2  # the gateway and the stand-in
    assert "POST /v1/chat/completions" not in stderr[0]  # no access log unless asked for


def test_access_log_when_asked_for(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[server]\naccess_log = true\n")
    with running(["serve", "--demo", "--config", str(config)], "/readyz") as (base, _, stderr):
        assert chat(base, DEMO_MEMBER_KEY).status_code == 200
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in stderr[0]


def test_quickstart_with_a_key_uses_that_upstream_and_prints_a_member_key() -> None:
    with running(["demo-upstream"], "/api/v1/models") as (upstream, _, _):
        env = {"NANOGPT_API_KEY": DEMO_TEAM_KEY, "NANOGPT_BASE_URL": f"{upstream}/api"}
        with running(["quickstart"], "/readyz", **env) as (base, _, stderr):
            first_line = logged(stderr, "Your member key for this run: sk-gateway-")
            assert stderr[0] == first_line  # printed before the server started
            key = first_line.split()[-1]
            assert chat(base, DEMO_MEMBER_KEY).status_code == 401  # no demo member here
            assert chat(base, key).status_code == 200
    assert DEMO_TEAM_KEY not in first_line + stderr[0]


def test_sigterm_lets_streams_finish_and_flushes_them_to_the_ledger(tmp_path: Path) -> None:
    started = [threading.Event() for _ in range(5)]

    def stream(started: threading.Event) -> bytes:
        body = {
            "model": "deepseek/deepseek-v3.2",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
        headers = {"authorization": f"Bearer {DEMO_MEMBER_KEY}"}
        with httpx.stream(
            "POST", f"{base}/v1/chat/completions", json=body, headers=headers
        ) as response:
            chunks = response.iter_raw()
            first = next(chunks)
            started.set()
            return first + b"".join(chunks)

    with ThreadPoolExecutor(len(started)) as pool:
        with running(["serve", "--demo"], "/readyz") as (base, _, stderr):
            streams = [pool.submit(stream, event) for event in started]
            for event in started:
                assert event.wait(10)
        # SIGTERM was sent with all five mid-stream (the demo upstream paces its chunks)
        bodies = [s.result(timeout=30) for s in streams]
    assert all(body.endswith(b"data: [DONE]\n\n") for body in bodies)
    rows = ledger_rows(tmp_path / "gateway-usage.db")
    assert [(r["outcome"], r["stream"]) for r in rows] == [("ok", 1)] * 5
    assert all(r["prompt_tokens"] and r["cost_usd"] for r in rows)
    assert "Waiting for connections to close" in stderr[0]


def test_usage_report_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running(["serve", "--demo"], "/readyz") as (base, _, _):
        for _ in range(3):
            assert chat(base, DEMO_MEMBER_KEY).status_code == 200
    assert main(["usage", "--by", "model", "--format", "json", "--since", "1h"]) == 0
    report = json.loads(capsys.readouterr().out)
    (row,) = report["rows"]
    assert row["model"] == "deepseek/deepseek-v3.2" and row["requests"] == 3
    assert Decimal(row["cost_usd"]) > 0
    assert main(["usage", "--ledger", str(tmp_path / "none.db")]) == 1
    assert "none.db" in capsys.readouterr().err
    assert main(["usage", "--since", "last week"]) == 2
    assert "7d" in capsys.readouterr().err


def test_one_process_per_container(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    assert main(["serve", "--demo"]) == 2
    assert "replicas" in capsys.readouterr().err


def test_metrics_on_a_port_of_their_own(tmp_path: Path) -> None:
    metrics_port = free_port()
    config = tmp_path / "gateway.toml"
    token = "scrape-token-0123456789"
    config.write_text(f"[metering]\nmetrics_port = {metrics_port}\nmetrics_token = '{token}'\n")
    with running(["serve", "--demo", "--config", str(config)], "/readyz") as (base, _, stderr):
        assert chat(base, DEMO_MEMBER_KEY).status_code == 200
        assert httpx.get(f"{base}/metrics").status_code == 404
        scrape = f"http://127.0.0.1:{metrics_port}/metrics"
        assert httpx.get(scrape).status_code == 401
        metrics = httpx.get(scrape, headers={"authorization": f"Bearer {token}"})
        assert metrics.status_code == 200
        assert 'nanogpt_gateway_requests_total{endpoint="chat/completions"' in metrics.text
    assert token not in stderr[0]


def test_a_ledger_that_cannot_be_opened_stops_start_up_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f"[metering]\nledger_path = '{tmp_path / 'missing' / 'usage.db'}'\n")
    assert main(["serve", "--demo", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metering.ledger_path:" in err and "does not exist" in err


SERVE_AND_REPORT_THE_LOOP = """
import asyncio, sys
from gateway import cli
from gateway.cli import serving

async def serve(self, sockets=None):
    print(type(asyncio.get_running_loop()).__module__, flush=True)

serving._Gateway.serve = serve
cli.main(["serve", "--demo", "--port", "0"])
"""


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop not installed")
def test_serve_runs_on_uvloop_like_uvicorn_run_would() -> None:
    # The gateway serves several uvicorn servers from one loop of its own; it must still be
    # the loop uvicorn would pick (bench/README.md: about a third more requests a second).
    ran = subprocess.run(
        [sys.executable, "-c", SERVE_AND_REPORT_THE_LOOP], capture_output=True, text=True
    )
    assert ran.stdout.strip() == "uvloop", ran.stderr


def test_limits_shows_each_members_budgets_from_the_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = tmp_path / "usage.db"
    writer = SQLiteLedger(ledger)
    for n, cost in enumerate(("0.25", "0.5")):
        writer.append(
            Finished(
                time=time.time(),
                request_id=f"r{n}",
                member="alice",
                endpoint="chat/completions",
                status=200,
                outcome="ok",
                cost_usd=Decimal(cost),
            )
        )
    writer.close()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"[metering]\nledger_path = {str(ledger)!r}\n[limits]\nbudget_usd_daily = 2\n"
        "team_budget_usd_monthly = 10\n"
        f"[[members]]\nname = 'alice'\nkey_sha256 = '{hash_key('k')}'\n"
    )
    monkeypatch.delenv("NANOGPT_API_KEY", raising=False)  # reading limits needs no team key
    assert main(["limits", "--config", str(config), "--format", "json"]) == 0
    rows = {(r["member"], r["window"]): r for r in json.loads(capsys.readouterr().out)}
    assert rows[("alice", "day")]["spent_usd"] == "0.75"
    assert rows[("alice", "day")]["left_usd"] == "1.25"
    assert rows[("alice", "month")]["budget_usd"] is None
    assert rows[("team", "month")]["left_usd"] == "9.25"
    assert rows[("alice", "day")]["resets_at"].endswith("T00:00:00Z")
    assert main(["limits", "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert "alice" in table and "unlimited" in table and "1.250000" in table
    # a stored key counts under its own budget, a revoked one not at all
    assert main(["keys", "create", "dave", "--budget-usd-daily", "3", "--config", str(config)]) == 0
    assert main(["keys", "create", "erin", "--config", str(config)]) == 0
    assert main(["keys", "revoke", "erin", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["limits", "--config", str(config), "--format", "json"]) == 0
    rows = {(r["member"], r["window"]): r for r in json.loads(capsys.readouterr().out)}
    dave = rows[("dave", "day")]
    assert Decimal(dave["budget_usd"]) == Decimal(dave["left_usd"]) == 3
    assert not any(member == "erin" for member, _ in rows)


def test_limits_counts_members_the_config_does_not_name_under_the_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As after `serve --demo`: no [[members]] in the file, the ledger has the demo member."""
    ledger = tmp_path / "usage.db"
    writer = SQLiteLedger(ledger)
    writer.append(
        Finished(
            time=time.time(),
            request_id="r",
            member="demo",
            endpoint="chat/completions",
            status=200,
            outcome="ok",
            cost_usd=Decimal("0.0015"),
        )
    )
    writer.close()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"[metering]\nledger_path = {str(ledger)!r}\n[limits]\nbudget_usd_daily = 0.002\n"
    )
    monkeypatch.delenv("NANOGPT_API_KEY", raising=False)
    assert main(["limits", "--config", str(config)]) == 0
    demo_day = capsys.readouterr().out.splitlines()[1].split()
    assert demo_day[:5] == ["demo", "day", "0.002", "0.001500", "0.000500"]
    config.write_text(f"[metering]\nledger_path = {str(tmp_path / 'none.db')!r}\n")
    assert main(["limits", "--config", str(config)]) == 1
    assert "no usage ledger here" in capsys.readouterr().err


def test_the_demo_stand_in_never_takes_the_port_the_gateway_was_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The system may hand the stand-in's ephemeral port out as the one `--port` names (free
    when it was picked, not yet bound by the gateway): then the gateway cannot bind it."""
    from gateway.cli import serving

    taken = free_port()
    real = socket.socket
    made: list[socket.socket] = []

    class FirstGetsTheGatewaysPort(real):  # type: ignore[misc, valid-type]
        def bind(self, address: Any) -> None:
            made.append(self)
            super().bind(address if len(made) > 1 else ("127.0.0.1", taken))

    monkeypatch.setattr(socket, "socket", FirstGetsTheGatewaysPort)
    sock = serving._loopback_socket(avoid=taken)
    try:
        assert sock.getsockname()[1] != taken and len(made) == 2
        assert made[0].fileno() == -1  # the one on the gateway's port is closed again
    finally:
        sock.close()


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path) -> None:
    """`nanogpt-gateway keys list | head -1`: head leaves after one line."""
    config = tmp_path / "gateway.toml"
    config.write_text(f"[metering]\nledger_path = {str(tmp_path / 'gateway.db')!r}\n")
    for i in range(3):
        assert main(["keys", "create", f"bot-{i}", "--config", str(config)]) == 0
    reader, writer = os.pipe()
    os.close(reader)  # gone before the command writes a line
    listing = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "list", "--config", str(config)],
        stdout=writer,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
    )
    os.close(writer)
    assert listing.returncode == 0 and listing.stderr == ""
