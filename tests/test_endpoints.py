"""The endpoint table and `classify()`: one normalised view of a path for every check."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.endpoints import ALL_METHODS, ENDPOINTS, UNLISTED, Target, classify
from gateway.errors import GatewayError, InvalidRequest, MethodNotAllowed, UnknownEndpoint


@pytest.mark.parametrize(
    ("raw", "method", "name", "access", "forwarded"),
    [
        ("chat/completions", "POST", "chat/completions", "member", "chat/completions"),
        ("Chat/Completions", "POST", "chat/completions", "member", "chat/completions"),
        ("chat//completions/", "POST", "chat/completions", "member", "chat/completions"),
        ("chat%2Fcompletions", "POST", "chat/completions", "member", "chat/completions"),
        ("characters/x", "GET", "characters", "member", "characters/x"),
        ("characters/x", "POST", "characters", "admin", "characters/x"),
        ("Characters/x", "POST", "characters", "admin", "characters/x"),
        ("CHARACTERS/My-Guide", "DELETE", "characters", "admin", "characters/My-Guide"),
        ("characters%2Fx", "POST", "characters", "admin", "characters/x"),
        ("characters%2fx", "POST", "characters", "admin", "characters/x"),
        ("characters//x", "PATCH", "characters", "admin", "characters/x"),
        ("characters", "POST", "characters", "admin", "characters"),
        ("characters/a%20b", "GET", "characters", "member", "characters/a%20b"),
        ("responses/resp_1", "DELETE", "responses", "admin", "responses/resp_1"),
        ("images/generations", "POST", "images/generations", "member", "images/generations"),
        ("audio/transcriptions", "POST", "audio/transcriptions", "member", "audio/transcriptions"),
        ("models/openai%2Fgpt-5.2", "GET", "models", "member", "models/openai/gpt-5.2"),
        ("messages", "POST", "messages", "member", "messages"),
    ],
)
def test_one_normalised_form(raw: str, method: str, name: str, access: str, forwarded: str) -> None:
    target = classify(raw, method)
    assert (target.endpoint.name, target.endpoint.access, target.path) == (name, access, forwarded)


def test_a_model_id_in_the_path_is_its_tail() -> None:
    assert classify("models/openai%2Fgpt-5.2", "GET").tail == "openai/gpt-5.2"
    assert classify("Models/openai/gpt-5.2", "GET").tail == "openai/gpt-5.2"


@pytest.mark.parametrize(
    "raw",
    [
        "../check-balance",
        "chat/./completions",
        "x/%2e%2e/receive-nano",
        "x/%2E%2E/receive-nano",
        "characters/%2e",
        "chat%5ccompletions",
        "characters/x%00",
        "characters/%252e%252e",
        "characters/%ff",
    ],
)
def test_ambiguous_paths_are_400(raw: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        classify(raw, "GET")
    assert refused.value.status_code == 400


@pytest.mark.parametrize("raw", ["memory/x", "check-balance", "batches", "files/abc", "", "v2"])
def test_unlisted_paths_are_404_naming_the_path(raw: str) -> None:
    with pytest.raises(UnknownEndpoint) as refused:
        classify(raw, "POST")
    assert refused.value.status_code == 404 and f"/v1/{raw}" in refused.value.message


def test_unlisted_paths_may_be_forwarded() -> None:
    target = classify("Batches//b_1", "POST", forward_unlisted=True)
    assert target.endpoint is UNLISTED and target.path == "Batches/b_1"


def test_a_method_an_endpoint_does_not_take_is_405() -> None:
    with pytest.raises(MethodNotAllowed) as refused:
        classify("chat/completions", "GET")
    assert refused.value.status_code == 405 and "POST" in refused.value.message


def test_the_table_is_consistent() -> None:
    for endpoint in ENDPOINTS:
        assert endpoint.names_model == (endpoint.catalog is not None), endpoint
        assert not endpoint.model_required or endpoint.names_model, endpoint
        assert endpoint.path == endpoint.path.lower() and "//" not in endpoint.path
    # no two entries answer the same path and method
    seen = {(e.path, m) for e in ENDPOINTS for m in e.methods}
    assert len(seen) == sum(len(e.methods) for e in ENDPOINTS)


# --- properties: any path and method ------------------------------------------------------------

SEGMENTS = sorted({s for e in ENDPOINTS for s in e.path.split("/") if "*" not in s})
TRICKY = [".", "..", "..;x", ";", "%2e", "%2E%2e", "%2F", "%2f", "%252F", "%25", "%", "%zz"]
TRICKY += ["%c3%a9", "%ff", "%00", "\\", "\x00", "\t", " ", "a;b", "é", "MODELS", "Chat"]
RAW_PATHS = st.one_of(
    st.lists(st.sampled_from(SEGMENTS + TRICKY) | st.text(max_size=6), max_size=5).map("/".join),
    st.text(),
)
METHODS = st.sampled_from(sorted(ALL_METHODS))  # the route takes no others (app.py)


def classified(raw: str, method: str, forward_unlisted: bool) -> Target | None:
    """The target, or `None` for a refusal: always the gateway's own 4xx, never a crash."""
    try:
        return classify(raw, method, forward_unlisted=forward_unlisted)
    except GatewayError as refusal:
        assert isinstance(refusal, InvalidRequest) and refusal.status_code in (400, 404, 405)
        return None


@settings(max_examples=500)
@given(raw=RAW_PATHS, method=METHODS, forward_unlisted=st.booleans())
def test_any_path_is_classified_or_refused_with_a_4xx(
    raw: str, method: str, forward_unlisted: bool
) -> None:
    target = classified(raw, method, forward_unlisted)
    if target is not None:
        # What is forwarded classifies as itself: every later check sees the same endpoint, and
        # NanoGPT is sent a path that reads the same way again.
        assert classify(target.path, method, forward_unlisted=forward_unlisted) == target
        assert method in target.endpoint.methods


@settings(max_examples=300)
@given(raw=RAW_PATHS, method=METHODS, forward_unlisted=st.booleans())
def test_the_case_of_a_path_does_not_change_its_endpoint(
    raw: str, method: str, forward_unlisted: bool
) -> None:
    swapped = "".join(c.swapcase() if c.isascii() else c for c in raw)
    target, other = (classified(p, method, forward_unlisted) for p in (raw, swapped))
    assert (target and target.endpoint) == (other and other.endpoint)
