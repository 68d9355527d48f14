"""The client-library boundary: every aiohttp failure becomes the gateway's own error, with
the right status and reason, and never with the team key in it. (The failures the fake
NanoGPT can play on the wire are covered end to end in test_routes and test_streaming.)"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.codings import DECODED_PIECE_BYTES, DecodeError, Decoder
from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.headers import forwarded_headers, forwarded_query, returned_headers
from gateway.redaction import Redactor
from gateway.types import Secret
from gateway.upstream import Upstream
from tests.conftest import TEAM_KEY

pytestmark = pytest.mark.anyio


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    upstream = Upstream(
        "https://nano-gpt.com/api/", Secret(TEAM_KEY), connect_timeout=1, read_timeout=1
    )
    yield upstream
    await upstream.aclose()
    assert upstream.is_closed


def connector_error(message: str) -> aiohttp.ClientConnectorError:
    key = aiohttp.client_reqrep.ConnectionKey("nano-gpt.com", 443, True, True, None, None, None)
    return aiohttp.ClientConnectorError(key, OSError(111, message))


@pytest.mark.parametrize(
    ("failure", "kind", "status", "reason"),
    [
        (
            aiohttp.ConnectionTimeoutError(f"connect with {TEAM_KEY}"),
            UpstreamTimeout,
            504,
            "timeout",
        ),
        (aiohttp.SocketTimeoutError(f"read with {TEAM_KEY}"), UpstreamTimeout, 504, "timeout"),
        (connector_error(f"refused {TEAM_KEY}"), UpstreamError, 502, "connect"),
        (aiohttp.ServerDisconnectedError(f"gone {TEAM_KEY}"), UpstreamError, 502, "protocol"),
        (aiohttp.ClientPayloadError(f"cut short {TEAM_KEY}"), UpstreamError, 502, "protocol"),
    ],
)
async def test_failures_are_translated_and_scrubbed(
    upstream: Upstream, failure: Exception, kind: type, status: int, reason: str
) -> None:
    error = upstream.translate(failure, "on POST /v1/chat/completions")
    assert type(error) is kind
    assert (error.status_code, error.reason) == (status, reason)
    assert TEAM_KEY not in error.detail and "[redacted]" in error.detail
    assert "NanoGPT at https://nano-gpt.com/api" in error.detail  # for the log
    assert type(failure).__name__ in error.detail
    assert "on POST /v1/chat/completions" in error.message  # for the client
    assert "nano-gpt.com" not in error.message and type(failure).__name__ not in error.message


def test_headers_are_filtered_both_ways() -> None:
    sent = forwarded_headers(
        [("Authorization", "Bearer sk-member"), ("X-Api-Key", "sk-member"), ("Accept", "*/*")],
        Secret(TEAM_KEY),
    )
    assert sent == [("accept", "*/*"), ("authorization", f"Bearer {TEAM_KEY}")]
    returned = returned_headers(
        [
            (b"Content-Type", b"text/event-stream"),
            (b"Set-Cookie", b"a=b"),
            (b"Content-Length", b"9"),
            (b"Date", b"Sun, 06 Dec 2026 13:23:11 GMT"),
        ]
    )
    assert returned == [(b"Content-Type", b"text/event-stream")]


def test_no_credential_header_and_no_client_identity_crosses() -> None:
    client = [
        ("Api-Key", "sk-member"),
        ("x-goog-api-key", "sk-member"),
        ("Anthropic-Api-Key", "sk-member"),
        ("Cookie", "session=1"),
        ("X-OpenWebUI-User-Email", "eve@example.com"),
        ("x-codex-turn-metadata", '{"cwd": "/home/eve/secret-project"}'),
        ("session_id", "abc"),
        ("x-team-user", "eve"),
        ("Anthropic-Version", "2023-06-01"),
        ("User-Agent", "codex/1.0"),
    ]
    sent = dict(forwarded_headers(client, Secret(TEAM_KEY), drop=frozenset({"x-team-user"})))
    assert sent == {
        "anthropic-version": "2023-06-01",
        "user-agent": "codex/1.0",
        "authorization": f"Bearer {TEAM_KEY}",
    }
    kept = forwarded_headers(client, Secret(TEAM_KEY), keep=frozenset({"session_id"}))
    assert ("session_id", "abc") in kept


@pytest.mark.parametrize(
    ("query", "forwarded"),
    [
        (b"", b""),
        (b"detailed=true", b"detailed=true"),
        (b"key=sk-member", b""),
        (b"detailed=true&API_KEY=sk-member&x=1", b"detailed=true&x=1"),
        (b"ap%69_key=sk-member&beta=true", b"beta=true"),  # spelt escaped, still a key
        (b"token=t&access_token=t&apikey=k", b""),
    ],
)
def test_no_key_crosses_in_the_query(query: bytes, forwarded: bytes) -> None:
    assert forwarded_query(query) == forwarded


def redacted(chunks: list[bytes]) -> tuple[bytes, list[bytes]]:
    redactor = Redactor(TEAM_KEY.encode())
    sent = [redactor.feed(chunk) for chunk in chunks]
    sent.append(redactor.flush())
    return b"".join(sent), sent


def test_the_key_is_redacted_wherever_the_chunks_are_cut() -> None:
    body = f"a{TEAM_KEY}b{TEAM_KEY}{TEAM_KEY[:5]}s".encode()
    expected = body.replace(TEAM_KEY.encode(), b"[redacted]")
    for i in range(len(body) + 1):
        for j in range(i, len(body) + 1):
            assert redacted([body[:i], body[i:j], body[j:]])[0] == expected, (i, j)
    every_byte = [body[i : i + 1] for i in range(len(body))]
    assert redacted(every_byte)[0] == expected


def test_only_what_could_start_the_key_is_held_back() -> None:
    event = b'data: {"choices": [{"finish_reason": "stop"}]}\n\n'
    assert redacted([event, event])[1] == [event, event, b""]
    assert redacted([b"xx" + TEAM_KEY[:3].encode(), b"!"])[1] == [
        b"xx",
        TEAM_KEY[:3].encode() + b"!",
        b"",
    ]
    assert Redactor(b"").feed(b"anything") == b"anything"


def decoded(encoding: str, chunks: list[bytes]) -> bytes:
    decoder = Decoder(encoding)
    out = b"".join(piece for chunk in chunks for piece in decoder.feed(chunk))
    decoder.end()
    return out


def test_gzip_is_decoded_however_it_is_split_and_over_several_members() -> None:
    body = b'{"id": "chatcmpl-1"}' * 50
    encoded = gzip.compress(body[:400]) + gzip.compress(body[400:])
    for cut in range(len(encoded) + 1):
        assert decoded("gzip", [encoded[:cut], encoded[cut:]]) == body, cut
    assert decoded("deflate", [zlib.compress(body)]) == body


def test_a_bomb_is_decoded_a_piece_at_a_time() -> None:
    bomb = gzip.compress(b"\0" * (10 * DECODED_PIECE_BYTES + 5))
    pieces = list(Decoder("gzip").feed(bomb))
    assert max(map(len, pieces)) == DECODED_PIECE_BYTES and sum(map(len, pieces)) > len(bomb)


@pytest.mark.parametrize(
    ("encoding", "body", "problem"),
    [
        ("gzip", gzip.compress(b"{}" * 100)[:-9], "stops short of its end"),
        ("gzip", b"\x1f\x8b" + b"x" * 30, "not valid gzip"),
        ("deflate", zlib.compress(b"{}") + b"more", "after the end"),
    ],
)
def test_a_body_that_is_not_what_its_encoding_says_is_refused(
    encoding: str, body: bytes, problem: str
) -> None:
    with pytest.raises(DecodeError, match=problem):
        decoded(encoding, [body])
