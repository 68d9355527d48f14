"""The `nanogpt-gateway` command: errors exit 2 with one line, and the quickstart really serves."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.cli import DEMO_MEMBER_KEY, main
from tests.conftest import MEMBERS_TOML, TEAM_KEY


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_quickstart_without_a_key_serves_the_demo() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "NANOGPT_API_KEY"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "quickstart", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # readiness poll, bounded
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "gateway did not become ready"
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        response = httpx.post(
            f"{base}/v1/chat/completions",
            headers={"authorization": f"Bearer {DEMO_MEMBER_KEY}"},
            json={
                "model": "deepseek/deepseek-v3.2",
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        assert response.status_code == 200
        assert "demo upstream" in response.json()["choices"][0]["message"]["content"]
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit reports the signal.
    assert process.returncode in (0, -signal.SIGTERM), err
    assert err.count("Application shutdown complete") == 2  # the gateway and the stand-in
    assert "offline demo upstream" in err and DEMO_MEMBER_KEY in err
    assert "Traceback" not in err
