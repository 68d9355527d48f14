"""Two processes: the `keys` command changes the store while the real gateway serves, and the
gateway sees each change within 2 seconds (created, disabled, enabled, revoked), without a
restart; the key's own limits come with it."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ALICE_KEY, MEMBERS_TOML, TEAM_KEY, auth, ledger_rows, running

ENV = {"NANOGPT_API_KEY": TEAM_KEY, "BOB_KEY": "sk-bob"}
VISIBLE_WITHIN_SECONDS = 2.0
KEY = re.compile(r"ngw-[a-z0-9]{12}-[0-9A-Za-z]{43}")


def keys(config: Path, *args: str, status: int = 0) -> subprocess.CompletedProcess[str]:
    """The installed `nanogpt-gateway keys ARGS --config CONFIG`, as an operator runs it from
    a shell that holds neither the team key nor the members' (`BOB_KEY`)."""
    script = Path(sys.executable).parent / "nanogpt-gateway"
    done = subprocess.run(
        [str(script), "keys", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == status, done.stderr
    return done


def seconds_until(base: str, key: str, status: int) -> float:
    """How long until the gateway answers `key` with `status` (bounded by the promise)."""
    started = time.monotonic()
    while True:  # a poll of the gateway's answer, bounded
        answer = httpx.get(f"{base}/v1/key", headers=auth(key), timeout=10)
        waited = time.monotonic() - started
        if answer.status_code == status:
            return waited
        assert waited < VISIBLE_WITHIN_SECONDS, (status, answer.status_code, answer.text)
        time.sleep(0.02)


def test_the_running_gateway_sees_what_the_keys_command_does(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(MEMBERS_TOML)
    with running(["serve", "--demo", "--config", str(config)], "/readyz", **ENV) as (base, _, _):
        created = keys(config, "create", "dave", "--budget-usd-daily", "2.5")
        key = created.stdout.strip()  # the key alone on stdout; how to use it on stderr
        assert KEY.fullmatch(key) and "shown this once" in created.stderr
        seconds_until(base, key, 200)
        report = httpx.get(f"{base}/v1/key", headers=auth(key)).json()["data"]
        assert (report["name"], report["limit"]) == ("dave", 2.5)

        keys(config, "disable", "dave")
        seconds_until(base, key, 401)
        keys(config, "enable", "dave")
        seconds_until(base, key, 200)

        keys(config, "revoke", "dave")
        seconds_until(base, key, 401)
        refused = httpx.get(f"{base}/v1/key", headers=auth(key)).json()["error"]
        assert "was revoked at" in refused["message"] and key not in refused["message"]
        assert httpx.get(f"{base}/v1/key", headers=auth(ALICE_KEY)).is_success
        again = keys(config, "revoke", "dave", status=2)
        assert again.stdout == ""
        assert again.stderr == "nanogpt-gateway keys: no key named 'dave' (that is not revoked)\n"
    rows = ledger_rows(tmp_path / "gateway-usage.db")  # which key each request came with
    public_id = key.split("-")[1]
    assert {r["key_id"] for r in rows if r["member"] == "dave"} == {public_id}
    assert {r["key_id"] for r in rows if r["member"] == "alice"} == {None}
