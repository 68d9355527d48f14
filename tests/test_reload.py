"""Config reload: `SIGHUP` to the real process. A good config takes effect for new requests
(members, policy, limits) while a stream in flight finishes; a bad one is refused in one log
line and the running config stays; settings that need a restart are named and kept; a member
named as a stored key is refused, at a reload and at start-up."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.cli import main
from gateway.keys import hash_key
from gateway.keystore import actions, open_keystore
from tests.conftest import (
    ADMIN_KEY,
    ALICE_KEY,
    MEMBERS_TOML,
    TEAM_KEY,
    FakeNanoGPT,
    assert_openai_error,
    auth,
    ledger_rows,
    logged,
    metric,
    running,
)
from tests.test_shutdown import upstream_in_a_thread

CHAT = {"model": "openai/gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}
ALICE_AND_ROOT = "\n".join(
    block for block in MEMBERS_TOML.split("\n\n") if 'name = "bob"' not in block
)
DAVE = f'\n[[members]]\nname = "dave"\nkey_sha256 = "{hash_key("sk-dave")}"\n'
ENV = {"NANOGPT_API_KEY": TEAM_KEY, "BOB_KEY": "sk-bob"}
FIRST = b'data: {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}\n\n'
REST = b'data: {"choices": [{"index": 0, "delta": {"content": "lo"}}]}\n\ndata: [DONE]\n\n'


def chat(base: str, key: str) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", json=CHAT, headers=auth(key), timeout=30)


def test_sighup_applies_a_good_config_while_a_stream_finishes(tmp_path: Path) -> None:
    released = threading.Event()

    async def held_stream(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            yield FIRST
            await asyncio.to_thread(released.wait, 30)
            yield REST

        if not json.loads(request.content).get("stream"):
            return await nanogpt.complete(request)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    nanogpt = FakeNanoGPT()
    nanogpt.handler = held_stream
    config = tmp_path / "gateway.toml"
    config.write_text(MEMBERS_TOML)
    with upstream_in_a_thread(nanogpt) as root:
        env = {**ENV, "NANOGPT_BASE_URL": root}
        with running(["serve", "--config", str(config)], "/readyz", **env) as (base, gw, log):
            assert chat(base, "sk-dave").status_code == 401
            url, body = f"{base}/v1/chat/completions", {**CHAT, "stream": True}
            with httpx.stream("POST", url, json=body, headers=auth(), timeout=30) as stream:
                chunks = stream.iter_raw()
                assert next(chunks) == FIRST
                # bob leaves, dave joins, anthropic/* is denied, one request a minute each
                config.write_text(
                    '[policy]\ndeny = ["anthropic/*"]\n[limits]\nrequests_per_minute = 1\n'
                    + ALICE_AND_ROOT
                    + DAVE
                )
                seen = len(log)
                gw.send_signal(signal.SIGHUP)
                assert logged(log, "config reloaded", after=seen).rstrip().endswith("reloaded")
                assert chat(base, "sk-dave").status_code == 200
                assert_openai_error(chat(base, "sk-dave"), 429, "rate_limit_exceeded")
                assert_openai_error(chat(base, "sk-bob"), 401, "invalid_api_key")
                claude = {**CHAT, "model": "anthropic/claude-opus-4.6"}
                denied = httpx.post(url, json=claude, headers=auth(ADMIN_KEY), timeout=30)
                assert_openai_error(denied, 403, "model_not_allowed")
                released.set()
                rest = b"".join(chunks)
            assert rest == REST  # the stream in flight ran to its end
    rows = ledger_rows(tmp_path / "gateway-usage.db")
    (streamed,) = [r for r in rows if r["stream"]]
    assert (streamed["member"], streamed["outcome"], streamed["status"]) == ("alice", "ok", 200)


def test_sighup_with_a_bad_config_keeps_the_running_one(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[limits]\nrequests_per_minute = 100\n" + MEMBERS_TOML)
    with running(["serve", "--demo", "--config", str(config)], "/readyz", **ENV) as (base, gw, log):
        for broken, named in (
            ('[limits]\nrequests_per_minute = "ten"\n', "limits.requests_per_minute"),
            ("[limits\n", "line 1"),
            ("[[members]]\nname = 'eve'\n", "members[0]: set exactly one of key_sha256"),
        ):
            config.write_text(broken)
            seen = len(log)
            gw.send_signal(signal.SIGHUP)
            line = logged(log, "config reload refused", after=seen)
            assert named in line and str(config) in line and line.count("\n") == 1
            assert chat(base, ALICE_KEY).status_code == 200
            assert chat(base, "sk-bob").status_code == 200
        config.unlink()
        seen = len(log)
        gw.send_signal(signal.SIGHUP)
        assert "file not found" in logged(log, "config reload refused", after=seen)
        assert chat(base, ALICE_KEY).status_code == 200
    assert "Traceback" not in log[0]


def test_settings_that_need_a_restart_are_named_and_keep_their_value(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(MEMBERS_TOML)
    with running(["serve", "--demo", "--config", str(config)], "/readyz", **ENV) as (base, gw, log):
        config.write_text(
            '[metering]\nledger_path = "elsewhere.db"\n[catalog]\nttl_seconds = 60\n'
            '[limits]\ntimezone = "Asia/Tokyo"\n' + MEMBERS_TOML
        )
        seen = len(log)
        gw.send_signal(signal.SIGHUP)
        line = logged(log, "config reloaded", after=seen)
        for name in ("catalog.ttl_seconds", "metering.ledger_path", "limits.timezone"):
            assert name in line
        assert chat(base, ALICE_KEY).status_code == 200
        key = httpx.get(f"{base}/v1/key", headers=auth(ALICE_KEY)).json()["data"]
        assert key["timezone"] == "UTC"
    assert not (tmp_path / "elsewhere.db").exists()
    rows = ledger_rows(tmp_path / "gateway-usage.db")  # where the running config said
    assert [(r["member"], r["endpoint"]) for r in rows] == [
        ("alice", "chat/completions"),
        ("alice", "key"),
    ]


def test_a_member_named_as_a_stored_key_is_refused_at_reload_and_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(MEMBERS_TOML)
    with running(["serve", "--demo", "--config", str(config)], "/readyz", **ENV) as (base, gw, log):
        store = open_keystore(tmp_path / "gateway-usage.db")
        _, key = actions.create(store, {"name": "dave"}, actor="t", now=1e9, config_names=())
        store.close()
        config.write_text(MEMBERS_TOML + DAVE)
        seen = len(log)
        gw.send_signal(signal.SIGHUP)
        line = logged(log, "config reload refused", after=seen)
        assert "members[3].name: 'dave' is the name of a stored key" in line
        assert chat(base, key).status_code == 200  # the stored key, as before
        assert chat(base, "sk-dave").status_code == 401
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    assert main(["check-config", "--config", str(config)]) == 2  # tells before a start would
    assert "'dave' is the name of a stored key" in capsys.readouterr().err
    started = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--demo", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **ENV},
    )
    assert started.returncode == 2
    assert (
        started.stderr.count("\n") == 1 and "'dave' is the name of a stored key" in started.stderr
    )


def test_a_reload_redraws_the_budget_gauges(tmp_path: Path) -> None:
    """A member removed by a reload leaves the dashboard; a new budget shows at once."""
    config = tmp_path / "gateway.toml"
    config.write_text("[limits]\nbudget_usd_daily = 5.0\n" + MEMBERS_TOML)
    with running(["serve", "--demo", "--config", str(config)], "/readyz", **ENV) as (base, gw, log):

        def left(member: str) -> float | None:
            scrape = httpx.get(f"{base}/metrics").text
            return metric(
                scrape, "nanogpt_gateway_budget_remaining_usd", member=member, window="day"
            )

        assert (left("alice"), left("bob")) == (5.0, 5.0)
        config.write_text("[limits]\nbudget_usd_daily = 7.0\n" + ALICE_AND_ROOT)
        seen = len(log)
        gw.send_signal(signal.SIGHUP)
        logged(log, "config reloaded", after=seen)
        assert (left("alice"), left("bob")) == (7.0, None)
