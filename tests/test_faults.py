"""The gateway on a real uvicorn server in front of a NanoGPT that misbehaves on the wire
(tests/faults.py): whatever the upstream sends, the client either gets a whole answer or can
tell it did not, no wait is unbounded, and the team key reaches no member. After every test,
no response header or body the client got holds the team key."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import json
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from gateway.app import create_app
from tests.conftest import (
    TEAM_KEY,
    assert_openai_error,
    auth,
    ledger_rows,
    live_server,
    make_settings,
)
from tests.faults import (
    CLOSE,
    COMPLETION,
    JSON,
    LAST_CHUNK,
    RESET,
    SSE,
    Close,
    Drip,
    FaultyNanoGPT,
    Reset,
    chunk,
    head,
    well_formed,
)

pytestmark = pytest.mark.anyio
CHAT = {"model": "openai/gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
# Every wait for the upstream must end within the test's patience.
QUICK = "[upstream]\nread_timeout_seconds = 0.5\n"
CONNECT_QUICK = "connect_timeout_seconds = 0.5\n"


class Seen(httpx.AsyncBaseTransport):
    """A client transport that keeps every header and body byte the client was given."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.headers: list[list[tuple[bytes, bytes]]] = []
        self.bodies: list[bytearray] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.headers.append(response.headers.raw)
        body = bytearray()
        self.bodies.append(body)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Kept(response.stream, body),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()

    def assert_no_team_key(self) -> None:
        key = TEAM_KEY.encode()
        for headers in self.headers:
            assert not any(key in name or key in value for name, value in headers), headers
        for body in self.bodies:
            assert key not in body, bytes(body)


class _Kept(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.SyncByteStream | httpx.AsyncByteStream, into: bytearray):
        assert isinstance(stream, httpx.AsyncByteStream)
        self.stream, self.into = stream, into

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self.stream:
            self.into += part
            yield part

    async def aclose(self) -> None:
        await self.stream.aclose()


@pytest.fixture
def seen() -> Iterator[Seen]:
    seen = Seen()
    yield seen
    seen.assert_no_team_key()


@pytest.fixture
def fault() -> FaultyNanoGPT:
    return FaultyNanoGPT()


@contextlib.asynccontextmanager
async def gateway(
    tmp_path: Path, fault: FaultyNanoGPT, seen: Seen, toml: str = ""
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway on uvicorn, in front of `fault`, and a client whose every byte is `seen`."""
    async with fault.serving() as api_root:
        settings = make_settings(tmp_path, toml)
        upstream = dataclasses.replace(settings.upstream, base_url=api_root)
        app = create_app(dataclasses.replace(settings, upstream=upstream))
        async with (
            live_server(app) as url,
            httpx.AsyncClient(base_url=url, transport=seen) as client,
        ):
            yield client


def outcomes() -> list[tuple[int, str]]:
    return [(row["status"], row["outcome"]) for row in ledger_rows()]


# The team key echoed back


async def test_a_key_echoed_in_a_response_header_is_scrubbed(
    tmp_path: Path, fault: FaultyNanoGPT, seen: Seen
) -> None:
    body = json.dumps(COMPLETION).encode()
    echo = ("X-Debug-Auth", f"Bearer {TEAM_KEY}")
    fault.answer(head(200, [JSON, echo], length=len(body)) + body)
    async with gateway(tmp_path, fault, seen) as client:
        with anyio.fail_after(5):
            response = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert response.status_code == 200
    assert response.headers["x-debug-auth"] == "Bearer [redacted]"
    assert response.json() == COMPLETION


@pytest.mark.parametrize("cut", [0, 1, len(TEAM_KEY) // 2, len(TEAM_KEY) - 1, len(TEAM_KEY)])
async def test_a_key_echoed_in_a_streamed_body_is_redacted_wherever_chunks_are_cut(
    tmp_path: Path, fault: FaultyNanoGPT, seen: Seen, cut: int
) -> None:
    event = f'data: {{"choices": [], "debug": "key={TEAM_KEY}"}}\n\n'.encode()
    at = event.index(TEAM_KEY.encode()) + cut
    fault.answer(
        head(200, [SSE], chunked=True)
        + chunk(event[:at])
        + chunk(event[at:])
        + chunk(b"data: [DONE]\n\n")
        + LAST_CHUNK
    )
    async with gateway(tmp_path, fault, seen) as client:
        with anyio.fail_after(5):
            response = await client.post("/v1/chat/completions", json=STREAM, headers=auth())
    assert response.status_code == 200
    redacted = event.replace(TEAM_KEY.encode(), b"[redacted]")
    assert response.content == redacted + b"data: [DONE]\n\n"
    assert outcomes() == [(200, "ok")]


async def test_a_key_echoed_in_a_json_answer_is_redacted(
    tmp_path: Path, fault: FaultyNanoGPT, seen: Seen
) -> None:
    fault.answer(*well_formed(200, {**COMPLETION, "echo": {"authorization": TEAM_KEY}}))
    async with gateway(tmp_path, fault, seen) as client:
        with anyio.fail_after(5):
            response = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert response.json() == {**COMPLETION, "echo": {"authorization": "[redacted]"}}
    (row,) = ledger_rows()
    assert (row["outcome"], row["prompt_tokens"], row["completion_tokens"]) == ("ok", 3, 1)


# Every wait bounded


async def test_a_1xx_head_then_silence_times_out(
    tmp_path: Path, fault: FaultyNanoGPT, seen: Seen
) -> None:
    # aiohttp stops its read timer on a 1xx head, then waits for the real one forever.
    fault.answer(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n", asyncio.Event())
    async with gateway(tmp_path, fault, seen, QUICK + CONNECT_QUICK) as client:
        with anyio.fail_after(5):
            response = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
        with anyio.fail_after(5):
            await fault.hung_up.wait()
    error = assert_openai_error(response, 504, "upstream_timeout")
    assert "nothing for 0.5 s" in error["message"]
    assert outcomes() == [(504, "upstream_failed")]


async def test_a_drip_of_framing_bytes_mid_stream_times_out(
    tmp_path: Path, fault: FaultyNanoGPT, seen: Seen
) -> None:
    # Each byte restarts aiohttp's sock_read timer, and none of them is body.
    first = b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n'
    trailer = b"X-Never: " + b"a" * 4000
    fault.answer(
        head(200, [SSE], chunked=True) + chunk(first) + LAST_CHUNK[:3], Drip(trailer, 0.05)
    )
    async with gateway(tmp_path, fault, seen, QUICK) as client:
        with anyio.fail_after(5):
            response = await client.post("/v1/chat/completions", json=STREAM, headers=auth())
        with anyio.fail_after(5):
            await fault.hung_up.wait()
    assert response.status_code == 200
    sent, error_event = response.content.split(b"\n\n", 1)
    assert sent + b"\n\n" == first
    error = json.loads(error_event.removeprefix(b"data: "))["error"]
    assert error["code"] == "upstream_timeout" and "while streaming" in error["message"]
    assert outcomes() == [(200, "upstream_failed")]


# Error bodies


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_huge_error_body_is_cut_at_64_kb_and_said_so(
    tmp_path: Path, fault: FaultyNanoGPT, seen: Seen, chunked: bool
) -> None:
    page = b"<html>Bad gateway; you sent " + TEAM_KEY.encode() + b"</html>" + b" " * 200_000
    framing = {"chunked": True} if chunked else {"length": 300 * 1024 * 1024}
    body = chunk(page) if chunked else page
    html = ("Content-Type", "text/html")
    fault.answer(head(502, [html], **framing) + body, asyncio.Event())  # never ends
    async with gateway(tmp_path, fault, seen) as client:
        with anyio.fail_after(5):
            response = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
        with anyio.fail_after(5):
            await fault.hung_up.wait()  # the rest was left unread
    error = assert_openai_error(response, 502, "upstream_error_too_large")
    assert "error body over 64 KB" in error["message"]
    assert "It began: <html>Bad gateway; you sent [redacted]</html>" in error["message"]
    assert len(response.content) < 2048
    assert outcomes() == [(502, "upstream_error")]


async def test_an_error_body_under_the_cap_is_relayed_as_sent_but_scrubbed(
    tmp_path: Path, fault: FaultyNanoGPT, seen: Seen
) -> None:
    error = {"error": {"message": f"Incorrect API key: {TEAM_KEY}", "type": "auth"}}
    fault.answer(*well_formed(401, error))
    async with gateway(tmp_path, fault, seen) as client:
        with anyio.fail_after(5):
            response = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Incorrect API key: [redacted]"


# Content-Encoding: decoded and dropped, or both passed on as they came


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate", "raw-deflate"])
async def test_a_body_the_gateway_decodes_loses_its_content_encoding(
    tmp_path: Path, fault: FaultyNanoGPT, seen: Seen, encoding: str
) -> None:
    body = json.dumps({**COMPLETION, "echo": TEAM_KEY}).encode()
    encoded = compressed(body, encoding)
    label = "deflate" if encoding == "raw-deflate" else encoding
    fault.answer(head(200, [JSON, ("Content-Encoding", label)], length=len(encoded)) + encoded)
    async with gateway(tmp_path, fault, seen) as client:
        with anyio.fail_after(5):
            response = await client.post(
                "/v1/chat/completions", json=CHAT, headers={**auth(), "accept-encoding": "identity"}
            )
    assert fault.requests[0].headers["accept-encoding"] == "gzip, deflate"  # what it decodes
    assert "content-encoding" not in response.headers
    assert response.json() == {**COMPLETION, "echo": "[redacted]"}
    (row,) = ledger_rows()
    assert (row["outcome"], row["prompt_tokens"]) == ("ok", 3)


@pytest.mark.parametrize("encoding", ["br", "compress", "gzip, gzip"])
async def test_a_body_the_gateway_does_not_decode_keeps_its_content_encoding(
    tmp_path: Path, fault: FaultyNanoGPT, seen: Seen, encoding: str
) -> None:
    encoded = b"\x8b\x05\x80opaque bytes the gateway cannot read\x03"
    fault.answer(head(200, [JSON, ("Content-Encoding", encoding)], length=len(encoded)) + encoded)
    async with (
        gateway(tmp_path, fault, seen) as client,
        client.stream("POST", "/v1/chat/completions", json=CHAT, headers=auth()) as response,
    ):
        with anyio.fail_after(5):
            raw = b"".join([part async for part in response.aiter_raw()])
    assert response.headers["content-encoding"] == encoding
    assert raw == encoded
    (row,) = ledger_rows()
    assert (row["outcome"], row["unmetered"]) == ("ok", "no_usage")


def compressed(body: bytes, encoding: str) -> bytes:
    if encoding in ("gzip", "x-gzip"):
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return deflate.compress(body) + deflate.flush()


# A body cut off: the client can tell


async def test_a_gzip_json_answer_cut_off_inside_its_encoding_is_aborted(
    tmp_path: Path, fault: FaultyNanoGPT, seen: Seen
) -> None:
    # Framed whole (its Content-Length holds), but the gzip stream stops short of its end.
    encoded = gzip.compress(json.dumps(COMPLETION).encode())[:-12]
    gzipped = ("Content-Encoding", "gzip")
    fault.answer(head(200, [JSON, gzipped], length=len(encoded)) + encoded)
    async with gateway(tmp_path, fault, seen) as client:
        with pytest.raises(httpx.RemoteProtocolError), anyio.fail_after(5):
            await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert outcomes() == [(200, "upstream_failed")]


async def test_a_gzip_stream_cut_off_inside_its_encoding_ends_with_an_error_event(
    tmp_path: Path, fault: FaultyNanoGPT, seen: Seen
) -> None:
    first = b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n'
    encoded = gzip.compress(first + b'data: {"choices": [{"delta": {"content": "lo"}}]}\n\n')
    gzipped = ("Content-Encoding", "gzip")
    fault.answer(head(200, [SSE, gzipped], chunked=True) + chunk(encoded[:-12]) + LAST_CHUNK)
    async with gateway(tmp_path, fault, seen) as client:
        with anyio.fail_after(5):
            response = await client.post("/v1/chat/completions", json=STREAM, headers=auth())
    events = response.content.split(b"\n\n")
    error = json.loads(events[-2].removeprefix(b"data: "))["error"]
    assert error["code"] == "upstream_unreachable"
    assert "could not read" in error["message"]  # the gzip detail is for the log
    assert outcomes() == [(200, "upstream_failed")]


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_a_json_answer_cut_off_on_the_wire_is_aborted(
    tmp_path: Path, fault: FaultyNanoGPT, seen: Seen, framing: str
) -> None:
    body = json.dumps(COMPLETION).encode()
    start = (
        head(200, [JSON], length=len(body))
        if framing == "length"
        else head(200, [JSON], chunked=True)
    )
    part = body[:40] if framing == "length" else chunk(body[:40])
    fault.answer(start + part, RESET)
    async with gateway(tmp_path, fault, seen) as client:
        with pytest.raises(httpx.RemoteProtocolError), anyio.fail_after(5):
            await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert outcomes() == [(200, "upstream_failed")]


@pytest.mark.parametrize(("end", "whole"), [(RESET, False), (CLOSE, True)], ids=["reset", "fin"])
async def test_a_body_that_ends_with_its_connection_is_whole_only_if_that_closed_cleanly(
    tmp_path: Path, fault: FaultyNanoGPT, seen: Seen, end: Reset | Close, whole: bool
) -> None:
    body = json.dumps(COMPLETION).encode()
    fault.answer(head(200, [JSON, ("Connection", "close")]) + body, end)
    async with gateway(tmp_path, fault, seen) as client:
        with anyio.fail_after(5):
            if whole:
                response = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
                assert response.json() == COMPLETION
            else:
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert outcomes() == [(200, "ok" if whole else "upstream_failed")]


# Pathological usage


@pytest.mark.parametrize("stream", [False, True])
async def test_pathological_usage_neither_breaks_the_answer_nor_its_outcome(
    tmp_path: Path, fault: FaultyNanoGPT, seen: Seen, stream: bool
) -> None:
    # 5000 digits: more than Python's int conversion takes (sys.get_int_max_str_digits).
    usage = b'{"prompt_tokens": ' + b"7" * 5000 + b', "completion_tokens": 1e400}'
    if stream:
        body = b'data: {"choices": [], "usage": ' + usage + b"}\n\ndata: [DONE]\n\n"
        fault.answer(head(200, [SSE], length=len(body)) + body)
    else:
        body = b'{"id": "chatcmpl-1", "choices": [], "usage": ' + usage + b"}"
        fault.answer(head(200, [JSON], length=len(body)) + body)
    async with gateway(tmp_path, fault, seen) as client:
        with anyio.fail_after(5):
            response = await client.post(
                "/v1/chat/completions", json=STREAM if stream else CHAT, headers=auth()
            )
    assert (response.status_code, response.content) == (200, body)
    (row,) = ledger_rows()
    assert (row["outcome"], row["prompt_tokens"], row["unmetered"]) == ("ok", None, "no_usage")
