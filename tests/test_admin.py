"""The admin API (`/admin/v1`): every endpoint and every refusal, through the app; one run
against a real server with plain HTTP calls, as curl would make them."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

import gateway.admin
from gateway.app import create_app
from gateway.keys import split_key
from gateway.keystore import AuditEntry, KeyStoreError, actions, open_keystore
from gateway.ledger import LedgerError
from gateway.ledger.sqlite import SQLiteLedger
from gateway.types import Finished
from tests.conftest import (
    ADMIN_KEY,
    ADMIN_TOKEN,
    ALICE_KEY,
    FakeNanoGPT,
    assert_openai_error,
    auth,
    gateway_client,
    live_server,
    make_settings,
    served,
)

pytestmark = pytest.mark.anyio

ADMIN_TOML = '[admin]\ntoken_env = "GATEWAY_ADMIN_TOKEN"\n'
ADMIN = auth(ADMIN_TOKEN)
CHAT = {"model": "openai/gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}
LEDGER = "gateway-usage.db"
"""make_settings' default ledger path, relative to the test's own directory."""
ENDPOINTS = [
    ("GET", "/admin/v1/keys"),
    ("POST", "/admin/v1/keys"),
    ("GET", "/admin/v1/keys/carol"),
    ("PATCH", "/admin/v1/keys/carol"),
    ("DELETE", "/admin/v1/keys/carol"),
    ("POST", "/admin/v1/keys/carol/rotate"),
    ("GET", "/admin/v1/usage"),
    ("GET", "/admin/v1/limits"),
]


def admin_settings(tmp_path: Path, toml: str = "") -> Any:
    return make_settings(tmp_path, ADMIN_TOML + toml, GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN)


@contextlib.asynccontextmanager
async def admin_client(
    tmp_path: Path, nanogpt: FakeNanoGPT, toml: str = ""
) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(admin_settings(tmp_path, toml), nanogpt) as client:
        yield client


@contextlib.contextmanager
def audit_log() -> Iterator[list[AuditEntry]]:
    store = open_keystore(LEDGER)
    try:
        yield list(store.audit())
    finally:
        store.close()


async def create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/admin/v1/keys", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def chat(client: httpx.AsyncClient, key: str) -> httpx.Response:
    return await client.post("/v1/chat/completions", json=CHAT, headers=auth(key))


def write_ledger(*rows: tuple[float, str, str | None, str]) -> None:
    """Ledger rows (time, member, model, cost) written before the gateway starts."""
    writer = SQLiteLedger(LEDGER)
    for n, (at, member, model, cost) in enumerate(rows):
        writer.append(
            Finished(
                time=at,
                request_id=f"r{n}",
                member=member,
                endpoint="chat/completions",
                status=200,
                outcome="ok",
                model=model,
                cost_usd=Decimal(cost),
            )
        )
    writer.close()


# -- who may call it --------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_without_an_admin_credential_the_admin_api_is_off(
    tmp_path: Path, nanogpt: FakeNanoGPT, method: str, path: str
) -> None:
    async with gateway_client(make_settings(tmp_path), nanogpt) as client:
        response = await client.request(method, path, headers=auth(ADMIN_KEY), json={})
    error = assert_openai_error(response, 404, "admin_api_disabled")
    assert "[admin]" in error["message"] and "token_env" in error["message"]
    assert "keys create NAME --admin" in error["message"]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_a_call_without_a_key_is_401_and_a_member_key_403(
    tmp_path: Path, nanogpt: FakeNanoGPT, method: str, path: str
) -> None:
    async with admin_client(tmp_path, nanogpt) as client:
        nobody = await client.request(method, path, json={})
        wrong = await client.request(method, path, json={}, headers=auth("sk-not-a-token-at-all"))
        alice = await client.request(method, path, json={}, headers=auth(ALICE_KEY))
        # `root` is a config member with `admin = true`: it may reach the account's data
        # under /v1, which does not make it an admin of the gateway.
        root = await client.request(method, path, json={}, headers=auth(ADMIN_KEY))
    assert_openai_error(nobody, 401, "invalid_api_key")
    assert_openai_error(wrong, 401, "invalid_api_key")
    assert "alice" in assert_openai_error(alice, 403, "admin_required")["message"]
    assert_openai_error(root, 403, "admin_required")


async def test_admin_credentials_do_not_call_v1(tmp_path: Path, nanogpt: FakeNanoGPT) -> None:
    async with admin_client(tmp_path, nanogpt) as client:
        token = await chat(client, ADMIN_TOKEN)
        ops = await create(client, name="ops", role="admin")
        as_key = await chat(client, ops["key"])
        # the admin key works where it belongs, and its name is the audit's actor
        made = await client.post("/admin/v1/keys", json={"name": "carol"}, headers=auth(ops["key"]))
    assert_openai_error(token, 401, "invalid_api_key")
    assert "admin API" in assert_openai_error(as_key, 403, "admin_key")["message"]
    assert made.status_code == 201
    assert not nanogpt.requests
    with audit_log() as audit:
        assert [(e.actor, e.action, e.target) for e in audit] == [
            ("admin", "create", "ops"),
            ("ops", "create", "carol"),
        ]


async def test_a_stored_admin_key_alone_turns_the_api_on(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    async with gateway_client(make_settings(tmp_path), nanogpt) as client:
        assert (await client.get("/admin/v1/keys", headers=ADMIN)).status_code == 404
    store = open_keystore(LEDGER)
    _, secret = actions.create(
        store, {"name": "ops", "role": "admin"}, actor="cli:test", now=time.time(), config_names=()
    )
    store.close()
    async with gateway_client(make_settings(tmp_path), nanogpt) as client:
        listed = await client.get("/admin/v1/keys", headers=auth(secret))
        token = await client.get("/admin/v1/keys", headers=ADMIN)
    assert listed.status_code == 200
    assert [k["name"] for k in listed.json()["data"]] == ["ops"]
    assert_openai_error(token, 401, "invalid_api_key")  # no [admin] token configured


async def test_an_admin_key_revoked_elsewhere_is_refused_at_once(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    """Revoked by `keys revoke` in another process: the next admin call sees it, without
    waiting for the roster's next poll."""
    async with admin_client(tmp_path, nanogpt) as client:
        ops = auth((await create(client, name="ops", role="admin"))["key"])
        assert (await client.get("/admin/v1/keys", headers=ops)).status_code == 200
        store = open_keystore(LEDGER)
        actions.revoke(store, "ops", actor="cli:test", now=time.time())
        store.close()
        refused = await client.get("/admin/v1/keys", headers=ops)
    assert "revoked" in assert_openai_error(refused, 401, "invalid_api_key")["message"]


async def test_unknown_paths_and_methods_are_404_and_405(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    async with admin_client(tmp_path, nanogpt) as client:
        unknown = await client.get("/admin/v1/members", headers=ADMIN)
        put = await client.put("/admin/v1/keys/carol", json={}, headers=ADMIN)
        get_rotate = await client.get("/admin/v1/keys/carol/rotate", headers=ADMIN)
    assert (
        "/admin/v1/keys/{name}/rotate" in assert_openai_error(unknown, 404, "not_found")["message"]
    )
    assert_openai_error(put, 405, "method_not_allowed")
    assert set(put.headers["allow"].split(", ")) == {"GET", "HEAD", "PATCH", "DELETE"}
    assert_openai_error(get_rotate, 405, "method_not_allowed")


# -- keys -------------------------------------------------------------------------------


async def test_create_list_show_change_and_revoke_a_key(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    async with admin_client(tmp_path, nanogpt) as client:
        response = await client.post(
            "/admin/v1/keys",
            json={"name": "carol", "budget_usd_daily": 5, "deny": ["anthropic/*"], "note": "hi"},
            headers=ADMIN,
        )
        assert response.status_code == 201
        assert response.headers["location"] == "/admin/v1/keys/carol"
        assert response.headers["cache-control"] == "no-store"
        created = response.json()
        secret = created["key"]
        parts = split_key(secret)
        assert parts is not None and parts[0] == created["public_id"]
        assert "only time" in created["warning"]
        assert created["name"] == "carol" and created["role"] == "member"
        assert created["status"] == "active"
        assert created["budget_usd_daily"] == 5.0 and created["budget_usd_monthly"] is None
        assert created["deny"] == ["anthropic/*"] and created["note"] == "hi"
        assert created["spent_usd_month"] == "0"

        assert (await chat(client, secret)).status_code == 200  # usable at once

        listed = await client.get("/admin/v1/keys", headers=ADMIN)
        assert listed.json()["object"] == "list"
        (entry,) = listed.json()["data"]
        assert entry["name"] == "carol" and entry["key"].endswith("…")
        assert secret not in listed.text
        assert Decimal(entry["spent_usd_month"]) > 0

        shown = await client.get("/admin/v1/keys/carol", headers=ADMIN)
        assert shown.json()["public_id"] == created["public_id"] and secret not in shown.text

        patched = await client.patch(
            "/admin/v1/keys/carol",
            json={"budget_usd_daily": None, "requests_per_minute": 10, "allow": ["openai/*"]},
            headers=ADMIN,
        )
        assert patched.status_code == 200
        changed = patched.json()
        assert changed["budget_usd_daily"] is None and changed["requests_per_minute"] == 10
        assert changed["allow"] == ["openai/*"] and changed["deny"] == ["anthropic/*"]

        revoked = await client.delete("/admin/v1/keys/carol", headers=ADMIN)
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
        refused = await chat(client, secret)
        assert "revoked" in assert_openai_error(refused, 401, "invalid_api_key")["message"]

        assert (await client.get("/admin/v1/keys", headers=ADMIN)).json()["data"] == []
        every = await client.get("/admin/v1/keys?all=true", headers=ADMIN)
        assert [(k["name"], k["status"]) for k in every.json()["data"]] == [("carol", "revoked")]
        for gone in (
            await client.get("/admin/v1/keys/carol", headers=ADMIN),
            await client.patch("/admin/v1/keys/carol", json={"note": "x"}, headers=ADMIN),
            await client.delete("/admin/v1/keys/carol", headers=ADMIN),
            await client.post("/admin/v1/keys/carol/rotate", headers=ADMIN),
        ):
            assert "carol" in assert_openai_error(gone, 404, "key_not_found")["message"]
        again = await create(client, name="carol")  # a revoked key's name is free again
        assert again["public_id"] != created["public_id"]


async def test_a_taken_name_is_409(tmp_path: Path, nanogpt: FakeNanoGPT) -> None:
    async with admin_client(tmp_path, nanogpt) as client:
        await create(client, name="carol")
        twice = await client.post("/admin/v1/keys", json={"name": "carol"}, headers=ADMIN)
        member = await client.post("/admin/v1/keys", json={"name": "alice"}, headers=ADMIN)
    assert assert_openai_error(twice, 409, "name_taken")["param"] == "name"
    assert "config" in assert_openai_error(member, 409, "name_taken")["message"]


async def test_disable_and_enable_through_patch(tmp_path: Path, nanogpt: FakeNanoGPT) -> None:
    async with admin_client(tmp_path, nanogpt) as client:
        secret = (await create(client, name="carol"))["key"]
        off = await client.patch("/admin/v1/keys/carol", json={"disabled": True}, headers=ADMIN)
        assert off.json()["status"] == "disabled"
        refused = await chat(client, secret)
        assert "disabled" in assert_openai_error(refused, 401)["message"]
        unchanged = await client.patch("/admin/v1/keys/carol", json={}, headers=ADMIN)
        assert unchanged.json()["status"] == "disabled"
        on = await client.patch("/admin/v1/keys/carol", json={"disabled": False}, headers=ADMIN)
        assert on.json()["status"] == "active"
        assert (await chat(client, secret)).status_code == 200
    with audit_log() as audit:
        assert [e.action for e in audit] == ["create", "disable", "enable"]


async def test_rotate_with_grace_keeps_the_old_secret_working(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    async with admin_client(tmp_path, nanogpt) as client:
        old = (await create(client, name="carol"))["key"]
        response = await client.post(
            "/admin/v1/keys/carol/rotate", json={"grace_seconds": 3600}, headers=ADMIN
        )
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        new = response.json()["key"]
        assert new != old and response.json()["rotated_at"] is not None
        assert (await chat(client, old)).status_code == 200
        assert (await chat(client, new)).status_code == 200


async def test_rotate_without_grace_stops_the_old_secret_at_once(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    async with admin_client(tmp_path, nanogpt) as client:
        old = (await create(client, name="carol"))["key"]
        explicit = await client.post(
            "/admin/v1/keys/carol/rotate", json={"grace_seconds": 0}, headers=ADMIN
        )
        assert explicit.status_code == 200
        assert_openai_error(await chat(client, old), 401, "invalid_api_key")
        middle = explicit.json()["key"]
        # no body at all: the default grace is none
        bare = await client.post("/admin/v1/keys/carol/rotate", headers=ADMIN)
        assert bare.status_code == 200
        assert_openai_error(await chat(client, middle), 401, "invalid_api_key")
        assert (await chat(client, bare.json()["key"])).status_code == 200


async def test_every_change_is_audited_with_its_actor_and_no_secret(
    tmp_path: Path, nanogpt: FakeNanoGPT, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.admin")
    secrets = []
    async with admin_client(tmp_path, nanogpt) as client:
        ops = await create(client, name="ops", role="admin")
        secrets.append(ops["key"])
        as_ops = auth(ops["key"])
        carol = await client.post(
            "/admin/v1/keys", json={"name": "carol", "budget_usd_daily": 2}, headers=as_ops
        )
        secrets.append(carol.json()["key"])
        await client.patch("/admin/v1/keys/carol", json={"note": "x"}, headers=as_ops)
        rotated = await client.post(
            "/admin/v1/keys/carol/rotate", json={"grace_seconds": 60}, headers=ADMIN
        )
        secrets.append(rotated.json()["key"])
        await client.delete("/admin/v1/keys/carol", headers=as_ops)
    with audit_log() as audit:
        assert [(e.actor, e.action, e.target) for e in audit] == [
            ("admin", "create", "ops"),
            ("ops", "create", "carol"),
            ("ops", "update", "carol"),
            ("admin", "rotate", "carol"),
            ("ops", "revoke", "carol"),
        ]
        assert audit[1].fields == {"name": "carol", "role": "member", "budget_usd_daily": 2.0}
        assert audit[3].fields["secret"] == "replaced"
        written = json.dumps([dict(e.fields) for e in audit])
    changes = [r.getMessage() for r in caplog.records if r.name == "gateway.admin"]
    assert len(changes) == 5
    assert "'ops'" in changes[1] and "create" in changes[1] and "'carol'" in changes[1]
    for secret in secrets:
        assert secret not in written
        parts = split_key(secret)
        assert parts is not None
        assert not any(parts[1] in line for line in changes)


async def test_a_store_or_ledger_that_fails_is_503(
    tmp_path: Path, nanogpt: FakeNanoGPT, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyStoreError("disk I/O error")

    def unreadable(*args: object, **kwargs: object) -> None:
        raise LedgerError("database is locked")

    store = open_keystore(LEDGER)
    settings = admin_settings(tmp_path)
    async with gateway_client(settings, nanogpt, keystore=store) as client:
        monkeypatch.setattr(store, "create", broken)
        made = await client.post("/admin/v1/keys", json={"name": "carol"}, headers=ADMIN)
        monkeypatch.setattr(gateway.admin, "totals", unreadable)
        report = await client.get("/admin/v1/usage", headers=ADMIN)
    assert "disk I/O" in assert_openai_error(made, 503, "keystore_unavailable")["message"]
    assert "locked" in assert_openai_error(report, 503, "ledger_unavailable")["message"]


# -- what a body may say ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": "bad name!"}, "name"),
        ({"name": "anonymous"}, "name"),
        ({"name": "carol", "colour": "red"}, "colour"),
        ({"name": "carol", "budget_usd_daily": -1}, "budget_usd_daily"),
        ({"name": "carol", "budget_usd_monthly": "lots"}, "budget_usd_monthly"),
        ({"name": "carol", "requests_per_minute": 1.5}, "requests_per_minute"),
        ({"name": "carol", "tokens_per_minute": True}, "tokens_per_minute"),
        ({"name": "carol", "max_concurrent_requests": -2}, "max_concurrent_requests"),
        ({"name": "carol", "allow": "openai/*"}, "allow"),
        ({"name": "carol", "deny": [1]}, "deny"),
        ({"name": "carol", "expires_at": "yesterday"}, "expires_at"),
        ({"name": "carol", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "carol", "end_user_header": "not a header"}, "end_user_header"),
        ({"name": "carol", "may_change_account": "yes"}, "may_change_account"),
        ({"name": "carol", "note": 7}, "note"),
        ({"name": "carol", "role": "root"}, "role"),
    ],
)
async def test_a_bad_create_body_is_400_naming_the_field(
    tmp_path: Path, nanogpt: FakeNanoGPT, body: dict[str, Any], param: str
) -> None:
    async with admin_client(tmp_path, nanogpt) as client:
        response = await client.post("/admin/v1/keys", json=body, headers=ADMIN)
        assert (await client.get("/admin/v1/keys?all=1", headers=ADMIN)).json()["data"] == []
    error = assert_openai_error(response, 400)
    assert error["param"] == param and error["message"].startswith(param)


@pytest.mark.parametrize(
    ("method", "path", "body", "param"),
    [
        ("PATCH", "/admin/v1/keys/carol", {"role": "admin"}, "role"),
        ("PATCH", "/admin/v1/keys/carol", {"name": "dave"}, "name"),
        ("PATCH", "/admin/v1/keys/carol", {"disabled": "yes"}, "disabled"),
        ("PATCH", "/admin/v1/keys/carol", {"disabled": True, "budget_usd_daily": -1}, None),
        ("POST", "/admin/v1/keys/carol/rotate", {"grace_seconds": -1}, "grace_seconds"),
        ("POST", "/admin/v1/keys/carol/rotate", {"grace_seconds": "1h"}, "grace_seconds"),
        ("POST", "/admin/v1/keys/carol/rotate", {"grace_seconds": 10**9}, "grace_seconds"),
        ("POST", "/admin/v1/keys/carol/rotate", {"grace": 60}, "grace"),
    ],
)
async def test_a_bad_change_is_400_naming_the_field_and_changes_nothing(
    tmp_path: Path,
    nanogpt: FakeNanoGPT,
    method: str,
    path: str,
    body: dict[str, Any],
    param: str | None,
) -> None:
    async with admin_client(tmp_path, nanogpt) as client:
        before = await create(client, name="carol")
        response = await client.request(method, path, json=body, headers=ADMIN)
        after = (await client.get("/admin/v1/keys/carol", headers=ADMIN)).json()
        assert (await chat(client, before["key"])).status_code == 200
    error = assert_openai_error(response, 400)
    assert error["param"] == (param or "budget_usd_daily")
    assert after["status"] == "active" and after["rotated_at"] is None
    with audit_log() as audit:
        assert [e.action for e in audit] == ["create"]


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"[]", "application/json", 400, "invalid_body"),
        (b'"carol"', "application/json", 400, "invalid_body"),
        (b"null", "application/json", 400, "invalid_body"),
        (b'{"name": ', "application/json", 400, "invalid_json"),
        (b'{"name": "carol", "budget_usd_daily": NaN}', "application/json", 400, "invalid_json"),
        (b"", "application/json", 400, "invalid_json"),
        (b'{"name": "carol"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"name": "carol"}', "", 415, "unsupported_media_type"),
        (b'{"note": "' + b"x" * 70_000 + b'"}', "application/json", 413, "request_too_large"),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_refused(
    tmp_path: Path,
    nanogpt: FakeNanoGPT,
    content: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    headers = {**ADMIN, "content-type": content_type} if content_type else ADMIN
    async with admin_client(tmp_path, nanogpt) as client:
        response = await client.post("/admin/v1/keys", content=content, headers=headers)
    assert_openai_error(response, status, code)


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/admin/v1/usage?by=week", "by"),
        ("/admin/v1/usage?since=last%20week", "since"),
        ("/admin/v1/usage?since=99999999999w", "since"),
        ("/admin/v1/usage?until=soon", "until"),
        ("/admin/v1/usage?group=model", "group"),
        ("/admin/v1/keys?all=maybe", "all"),
        ("/admin/v1/keys?include=revoked", "include"),
        ("/admin/v1/limits?member=alice", "member"),
    ],
)
async def test_a_bad_query_is_400_naming_the_parameter(
    tmp_path: Path, nanogpt: FakeNanoGPT, path: str, param: str
) -> None:
    async with admin_client(tmp_path, nanogpt) as client:
        response = await client.get(path, headers=ADMIN)
    assert assert_openai_error(response, 400)["param"] == param


# -- reports ----------------------------------------------------------------------------


async def test_usage_is_the_usage_report_as_json(tmp_path: Path, nanogpt: FakeNanoGPT) -> None:
    now = time.time()
    write_ledger(
        (now - 3600, "alice", "openai/gpt-5.2", "0.25"),
        (now - 1800, "alice", "openai/gpt-5.2", "0.5"),
        (now - 600, "bob", "anthropic/claude", "0.125"),
        (now - 10 * 86400, "bob", "openai/gpt-5.2", "4"),
    )
    async with admin_client(tmp_path, nanogpt) as client:
        by_member = (await client.get("/admin/v1/usage?since=7d", headers=ADMIN)).json()
        by_model = (await client.get("/admin/v1/usage?by=model", headers=ADMIN)).json()
        until = (await client.get("/admin/v1/usage?until=45m&by=member", headers=ADMIN)).json()
    assert by_member["by"] == "member" and by_member["until"] is None
    assert by_member["since"].endswith("Z")
    rows = {r["member"]: r for r in by_member["rows"]}
    assert rows["alice"]["requests"] == 2 and rows["alice"]["cost_usd"] == "0.75"
    assert rows["bob"]["requests"] == 1 and rows["bob"]["cost_usd"] == "0.125"
    assert by_member["total"]["cost_usd"] == "0.875"
    models = {r["model"]: r["cost_usd"] for r in by_model["rows"]}
    assert models == {"openai/gpt-5.2": "4.75", "anthropic/claude": "0.125"}
    assert by_model["since"] is None
    assert {r["member"]: r["requests"] for r in until["rows"]} == {"alice": 1, "bob": 1}


async def test_limits_are_every_members_windows(tmp_path: Path, nanogpt: FakeNanoGPT) -> None:
    now = time.time()
    write_ledger(
        (now - 60, "alice", "openai/gpt-5.2", "0.25"),
        (now - 30, "alice", "openai/gpt-5.2", "0.5"),
        (now - 20, "dave", "openai/gpt-5.2", "0.125"),  # no longer named anywhere
    )
    toml = "[limits]\nbudget_usd_daily = 2\nteam_budget_usd_monthly = 10\n"
    async with admin_client(tmp_path, nanogpt, toml) as client:
        await create(client, name="carol", budget_usd_daily=1, budget_usd_monthly="unlimited")
        response = await client.get("/admin/v1/limits", headers=ADMIN)
    assert response.json()["object"] == "list"
    data = response.json()["data"]
    rows = {(r["member"], r["window"]): r for r in data}
    assert [r["member"] for r in data[::2]] == ["alice", "bob", "root", "carol", "dave", "team"]
    alice = rows[("alice", "day")]
    assert set(alice) == {"member", "window", "budget_usd", "spent_usd", "left_usd", "resets_at"}
    assert Decimal(alice["budget_usd"]) == 2
    assert alice["spent_usd"] == "0.75" and alice["left_usd"] == "1.25"
    assert rows[("alice", "day")]["resets_at"].endswith("T00:00:00Z")
    assert rows[("alice", "month")]["budget_usd"] is None
    assert Decimal(rows[("carol", "day")]["budget_usd"]) == 1
    assert rows[("carol", "day")]["spent_usd"] == "0"
    assert rows[("carol", "month")]["left_usd"] is None
    assert rows[("dave", "day")]["left_usd"] == "1.875"
    assert rows[("team", "month")]["left_usd"] == "9.125"


# -- on a real server, as curl would call it --------------------------------------------


async def test_a_key_made_through_the_admin_api_on_a_real_server(
    tmp_path: Path, nanogpt: FakeNanoGPT
) -> None:
    async with (
        served(admin_settings(tmp_path), nanogpt) as settings,
        live_server(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        made = await http.post(
            "/admin/v1/keys",
            content=b'{"name": "carol", "budget_usd_daily": 5}',
            headers={**ADMIN, "content-type": "application/json"},
        )
        assert made.status_code == 201, made.text
        secret = made.json()["key"]
        assert (await chat(http, secret)).status_code == 200

        patched = await http.patch(
            "/admin/v1/keys/carol", json={"budget_usd_daily": 0}, headers=ADMIN
        )
        assert patched.json()["budget_usd_daily"] == 0.0
        assert_openai_error(await chat(http, secret), 429, "member_budget_exceeded")

        assert (await http.delete("/admin/v1/keys/carol", headers=ADMIN)).status_code == 200
        refused = assert_openai_error(await chat(http, secret), 401, "invalid_api_key")
        assert "was revoked" in refused["message"]

        assert_openai_error(await http.get("/admin/v1/keys", headers=auth(ALICE_KEY)), 403)
        assert_openai_error(await http.get("/admin/v1/keys"), 401)
        assert_openai_error(await chat(http, ADMIN_TOKEN), 401)
    assert len(nanogpt.requests) == 1


def test_every_admin_endpoint_is_in_the_readme() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### The admin API", 1)[1].split("\n## ", 1)[0]
    for route in gateway.admin.ROUTES:
        assert isinstance(route, Route) and route.methods
        for method in route.methods - {"HEAD"}:
            path = route.path.replace("{name}", "carol")
            assert re.search(rf"curl -s (-X {method} )?\S*{re.escape(path)}\b", section), (
                f"{method} {route.path}"
            )
