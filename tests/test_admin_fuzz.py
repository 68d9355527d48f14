"""The admin API under generated input: any JSON (or not) for any field, on every endpoint,
with generated names and query strings. Whatever arrives, the answer is a 2xx or an OpenAI
error below 500, a rejected change writes nothing, and a listing still renders afterwards."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.config import MEMBER_LIMITS
from gateway.keystore.fields import CREATABLE
from tests.conftest import FakeNanoGPT, assert_openai_error, gateway_client
from tests.test_admin import ADMIN, admin_settings

FIELDS = [*CREATABLE, "disabled", "grace_seconds", "colour"]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["unlimited", "30d", "0s", "2027-01-31T00:00:00Z", "999999999d", "*"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
LIMIT_VALUES = [0, 5, 2.5, 10**12, 1e308, -1, "unlimited", "5", True, None, float("nan")]
PLAUSIBLE: dict[str, list[Any]] = {
    **{field: LIMIT_VALUES for field in MEMBER_LIMITS},
    "expires_at": ["30d", "1s", "999999999d", "2027-01-31T00:00:00Z", "9999-12-31T23:59:59Z",
                   "2027-01-31", None, 30],
    "allow": [["*"], ["openai/*", "deepseek/*"], [], None, ["a b"], ["[x"], "openai/*", [1]],
    "deny": [["*-preview"], [], None, ["a b"]],
    "role": ["member", "admin", "root", None],
    "may_change_account": [True, False, "yes", None],
    "disabled": [True, False, 1, None],
    "end_user_header": ["x-user", "X User", "", None],
    "note": ["laptop", "x" * 501, "line\nbreak", 5, None],
    "grace_seconds": [0, 60, 86400 * 31, -1, "1h", None],
}  # fmt: skip
"""Per field, values a client might send: valid ones, their neighbours, and wrong types."""
bodies = st.one_of(
    st.fixed_dictionaries(
        {"name": st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True)},
        optional={f: st.sampled_from(v) for f, v in PLAUSIBLE.items()},
    ),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5),
    json_values,
)
names = st.sampled_from(
    ["carol", "dave", "erin", "carol", "alice", "nobody", "a" * 80, "ça", "..", "%2e"]
)
queries = st.sampled_from(["", "?all=true", "?all=2", "?since=7d", "?by=model", "?since=9" * 3])


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes]:
    name = quote(draw(names), safe="")
    method, path = draw(
        st.sampled_from(
            [
                ("POST", "/admin/v1/keys"),
                ("PATCH", f"/admin/v1/keys/{name}"),
                ("POST", f"/admin/v1/keys/{name}/rotate"),
                ("DELETE", f"/admin/v1/keys/{name}"),
                ("GET", f"/admin/v1/keys/{name}"),
                ("GET", "/admin/v1/keys"),
                ("GET", "/admin/v1/usage"),
                ("GET", "/admin/v1/limits"),
            ]
        )
    )
    body = draw(bodies)
    as_json = draw(st.integers(0, 4)) > 0
    raw = json.dumps(body).encode() if as_json else draw(st.binary(max_size=40))
    return method, path + draw(queries), raw


FOUND = [
    # Stored, then no listing could render it: no RFC 3339 instant lies past 9999 (a 500).
    ("POST", "/admin/v1/keys", b'{"name": "zed", "expires_at": "999999999d"}'),
    # A duration too long for the calendar overflowed datetime (a 500).
    ("GET", "/admin/v1/usage?since=99999999999w", b""),
]
"""What this fuzz found, tried first on every run."""


def test_generated_admin_requests_never_break_it(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    opened = gateway_client(admin_settings(tmp_path), FakeNanoGPT())
    client = loop.run_until_complete(opened.__aenter__())

    def send(method: str, path: str, body: bytes) -> httpx.Response:
        headers = {**ADMIN, "content-type": "application/json"}
        return loop.run_until_complete(client.request(method, path, content=body, headers=headers))

    try:
        send("POST", "/admin/v1/keys", b'{"name": "carol"}')

        @settings(
            max_examples=250,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(requests())
        @example(FOUND[0])
        @example(FOUND[1])
        def one(request: tuple[str, str, bytes]) -> None:
            before = send("GET", "/admin/v1/keys?all=true", b"")
            response = send(*request)
            if response.status_code >= 400:
                error: dict[str, Any] = assert_openai_error(response, response.status_code)
                assert response.status_code < 500, error
                after = send("GET", "/admin/v1/keys?all=true", b"")
                assert after.json() == before.json()  # a refused change wrote nothing
            listing = send("GET", "/admin/v1/keys?all=true", b"")
            assert listing.status_code == 200, listing.text

        one()
    finally:
        loop.run_until_complete(opened.__aexit__(None, None, None))
        loop.close()
