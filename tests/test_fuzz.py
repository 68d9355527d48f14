"""The running server under generated raw HTTP: odd methods, mangled paths, lying framing,
garbage bodies, with and without a member key. Whatever arrives, the gateway answers (or
hangs up) in time, never with a 500, in the one error shape, without a key, and forwards
nothing to NanoGPT outside its API or for a request that failed authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes

import httpx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.endpoints import ENDPOINTS
from tests.conftest import (
    ADMIN_KEY,
    ALICE_KEY,
    FakeNanoGPT,
    live_server,
    make_settings,
    served,
)
from tests.invariants import found_keys, upstream_path_allowed

ANSWER_SECONDS = 5.0
"""How long a complete request may wait for its answer (the fake upstream answers at once)."""
INCOMPLETE_SECONDS = 0.5
"""How long an incomplete request is given to be refused before the client gives up."""
UVICORN_REFUSAL = b"Invalid HTTP request received."
"""uvicorn's own answer to bytes that are not HTTP: made before any app sees the request."""

PATHS = sorted(
    {f"/v1/{e.path.replace('**', 'x/y').replace('*', 'x')}" for e in ENDPOINTS}
    | {"/api/v1/chat/completions", "/v1/models/openai%2Fgpt-5.2", "/v1/key"}
    | {"/healthz", "/readyz", "/metrics", "/", "/v1", "/api/v1/", "/v1/nope"}
)
CHAT = {"model": "openai/gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT"]
ODD_METHODS = ["PROPFIND", "get", "Post", "M-SEARCH", "BREW", "X" * 300]
FORWARDED = ["/v1/chat/completions", "/v1/embeddings", "/api/v1/chat/completions", "/v1/messages"]
"""Where a well-formed request goes on to NanoGPT: half the examples start from one."""

methods = st.sampled_from(["POST"] * len(METHODS) + METHODS + ODD_METHODS)


@st.composite
def paths(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.sampled_from(FORWARDED)).encode()
    path = draw(st.sampled_from(PATHS))
    for _ in range(draw(st.integers(0, 3))):
        mutation = draw(st.integers(0, 9))
        segments = path.split("/")
        at = draw(st.integers(1, max(1, len(segments) - 1)))
        if mutation == 0:
            segments.insert(at, draw(st.sampled_from(["..", ".", "%2e%2e", "%2E", ".%2e", ""])))
        elif mutation == 1:
            path = path.upper() if draw(st.booleans()) else path.swapcase()
            continue
        elif mutation == 2:
            segments[at] = "".join(f"%{ord(c):02X}" for c in segments[at])
        elif mutation == 3:
            segments.insert(at, draw(st.text(min_size=1, max_size=8)))
        elif mutation == 4:
            segments.append("a" * draw(st.sampled_from([255, 4000, 12000])))
        elif mutation == 5:
            segments.insert(at, draw(st.sampled_from(["%2F", "%00", "%5C", "\\", "%252e%252e"])))
        elif mutation == 6:
            path += draw(st.sampled_from(["?key=" + ALICE_KEY, "?model=x", "?%6Dodel=y", "?"]))
            continue
        elif mutation == 7:
            path = draw(st.sampled_from(["//", "http://127.0.0.1", "*", ""])) + path
            continue
        elif mutation == 8:
            path = path.rstrip("/") + "/"
            continue
        else:
            segments[at] = segments[at] + ";x=1"
        path = "/".join(segments)
    return (
        path.encode("utf-8", "surrogateescape")
        if path.isascii()
        else path.encode("utf-8", "replace")
    )


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    chat = json.dumps(CHAT).encode()
    kind = draw(st.integers(0, 11))
    if kind == 0:
        return b""
    if kind == 1:
        return draw(st.binary(max_size=300))
    if kind == 2:
        return chat[: draw(st.integers(0, len(chat) - 1))]
    if kind == 3:
        huge = draw(st.sampled_from(["1e999999", "9" * 5000, "-0", "NaN", "Infinity", "1e-999"]))
        field = draw(st.sampled_from(["max_tokens", "temperature", "n", "stream"]))
        return chat[:-1] + f', "{field}": {huge}}}'.encode()
    if kind == 4:
        depth = draw(st.sampled_from([100, 2000, 100_000]))
        nest = draw(st.sampled_from(["[", '{"a":']))
        close = "]" if nest == "[" else "}"
        return f'{{"model": "openai/gpt-5.2", "messages": {nest * depth}1{close * depth}}}'.encode()
    if kind == 5:
        boundary = draw(st.sampled_from(["b", "", "x" * 100]))
        junk = draw(st.binary(max_size=100))
        return f"--{boundary}\r\nContent-Disposition: form-data; name=model\r\n\r\n".encode() + junk
    if kind == 6:
        model: object = draw(st.sampled_from([None, 1, [], "", "x" * 300, "gpt:online"]))
        return json.dumps({**CHAT, "model": model, "stream": draw(st.booleans())}).encode()
    if kind == 7:
        return json.dumps(draw(st.sampled_from([[], "x", 1, None, {"input": "hi"}]))).encode()
    return chat


@dataclass(frozen=True)
class Raw:
    data: bytes
    complete: bool
    """False when the request promises more body than it sends: no answer is owed."""
    authenticated: bool


ASPECTS = ("method", "path", "auth", "headers", "body", "framing")


@st.composite
def requests(draw: st.DrawFn) -> Raw:
    """A well-formed chat request with some of its parts fuzzed (none, one, several, all):
    a request broken everywhere at once only ever meets the first check."""
    fuzzed = draw(st.sets(st.sampled_from(ASPECTS), max_size=len(ASPECTS)))
    method = draw(methods).encode() if "method" in fuzzed else b"POST"
    path = draw(paths()) if "path" in fuzzed else draw(st.sampled_from(FORWARDED)).encode()
    body = draw(bodies()) if "body" in fuzzed else json.dumps(CHAT).encode()
    key = "alice"
    if "auth" in fuzzed:
        key = draw(st.sampled_from(["none", "admin", "wrong", "x-api-key", "lower"]))
    authenticated = key in ("alice", "admin", "x-api-key", "lower")
    headers = [(b"Host", b"127.0.0.1"), *_auth(key)]
    if "headers" in fuzzed:
        headers[0] = (b"Host", draw(st.sampled_from([b"localhost", b"evil.example", b""])))
        headers += draw(st.lists(st.sampled_from(ODD_HEADERS), max_size=4))
    else:
        headers.append((b"Content-Type", b"application/json"))
    framing = draw(st.sampled_from(FRAMINGS)) if "framing" in fuzzed else "length"
    complete = True
    if framing == "length":
        headers.append((b"Content-Length", str(len(body)).encode()))
    elif framing == "short":  # declares less: the rest is read as the next request
        headers.append((b"Content-Length", str(max(0, len(body) // 2)).encode()))
    elif framing == "long":
        headers.append((b"Content-Length", str(len(body) + 10).encode()))
        complete = False
    elif framing == "bad":
        bad = draw(st.sampled_from([b"-1", b"abc", b"1, 2", b"99999999999999999999"]))
        headers.append((b"Content-Length", bad))
    elif framing in ("chunked", "chunked-bad", "both"):
        headers.append((b"Transfer-Encoding", b"chunked"))
        if framing == "both":
            headers.append((b"Content-Length", str(len(body)).encode()))
        size = f"{len(body):x}".encode()
        if framing == "chunked-bad":
            size = draw(st.sampled_from([b"zz", b"-1", b"", size + b"0", b"f" * 18]))
            complete = False
        body = (size + b"\r\n" + body + b"\r\n0\r\n\r\n") if body else b"0\r\n\r\n"
    headers.append((b"Connection", b"close"))
    head = method + b" " + path + b" HTTP/1.1\r\n"
    head += b"".join(k + b": " + v + b"\r\n" for k, v in headers)
    return Raw(head + b"\r\n" + body, complete, authenticated)


FRAMINGS = ["none", "short", "long", "bad", "chunked", "chunked-bad", "both"]
ODD_HEADERS = [
    (b"Authorization", b"Bearer sk-member-bob-not"),
    (b"X-Odd", b"v" * 8000),
    (b"accept-encoding", b"gzip, br, zstd"),
    (b"Origin", b"https://evil.example"),
    (b"Expect", b"100-continue"),
    (b"x-forwarded-for", b"1.2.3.4"),
    (b"Cookie", b"a=" + ALICE_KEY.encode()),
    (b"TE", b"trailers"),
    (b"Content-Type", b"APPLICATION/JSON; charset=latin-1"),
    (b"Content-Type", b"text/plain"),
    (b"Content-Type", b"multipart/form-data; boundary=b"),
    (b"Content-Type", b"multipart/form-data"),
    (b"Content-Type", b"\xff\xfe"),
    (b"Content-Encoding", b"gzip"),
    (b"x-api-key", b"sk-member-mallory"),
]


def _auth(key: str) -> list[tuple[bytes, bytes]]:
    return {
        "alice": [(b"Authorization", f"Bearer {ALICE_KEY}".encode())],
        "admin": [(b"AUTHORIZATION", f"Bearer {ADMIN_KEY}".encode())],
        "x-api-key": [(b"x-api-key", ALICE_KEY.encode())],
        "lower": [(b"authorization", f"bearer {ALICE_KEY}".encode())],
        "wrong": [(b"Authorization", b"Bearer sk-member-mallory")],
        "none": [],
    }[key]


async def exchange(port: int, request: Raw) -> bytes:
    """Send `request`, read until the server closes or the time bound passes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request.data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        received = b""
        # An incomplete request is owed no answer: the server waits for the rest, as it should.
        bound = ANSWER_SECONDS if request.complete else INCOMPLETE_SECONDS
        try:
            async with asyncio.timeout(bound):
                while chunk := await reader.read(65536):
                    received += chunk
        except ConnectionError:
            pass
        except TimeoutError:
            assert not request.complete, f"no answer in {ANSWER_SECONDS} s: {request.data[:300]!r}"
        return received
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def check_answer(request: Raw, received: bytes) -> None:
    """Each answer on the connection (a short Content-Length leaves a second request behind):
    the gateway's own never a 500, and its errors in the OpenAI shape. An answer relayed from
    the fake (its aiohttp `Server` header passed on) is NanoGPT's, whatever its status."""
    # A key in the URL is the client's own: 404 messages and redirects echo the URL to it.
    target = unquote_to_bytes(request.data.split(b"\r\n", 1)[0])
    assert set(found_keys(received)) <= set(found_keys(target)), received[:500]
    for answer in received.split(b"HTTP/1.1 ")[1:]:
        head, _, body = answer.partition(b"\r\n\r\n")
        status = int(head[:3])
        if b"\r\nserver: python/" in head.lower():
            continue
        assert status != 500, (request.data[:500], answer[:500])
        assert b"internal_error" not in body, (request.data[:500], answer[:500])
        if status < 400 or not body or body == UVICORN_REFUSAL:
            continue
        error = json.loads(body)["error"]
        assert {"message", "type", "code", "param"} <= set(error), answer[:500]


@dataclass
class Serving:
    port: int
    nanogpt: FakeNanoGPT
    app: Starlette
    loop: asyncio.AbstractEventLoop

    def send(self, request: Raw) -> bytes:
        future = asyncio.run_coroutine_threadsafe(exchange(self.port, request), self.loop)
        return future.result(timeout=ANSWER_SECONDS * 2)


async def _answer_anything(request: httpx.Request) -> httpx.Response:
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    return httpx.Response(200, json={"id": "x", "object": "chat.completion", "usage": usage})


@contextlib.contextmanager
def gateway_in_a_thread(tmp_path: Path) -> Iterator[Serving]:
    """A live gateway and its fake NanoGPT on an event loop of their own: hypothesis drives
    the examples from this thread, each exchange runs on that loop."""
    loop = asyncio.new_event_loop()
    ready: Future[Serving] = Future()
    stop = asyncio.Event()

    async def serve() -> None:
        nanogpt = FakeNanoGPT()
        nanogpt.handler = _answer_anything
        async with served(make_settings(tmp_path), nanogpt) as config:
            app = create_app(config)
            async with live_server(app) as url:
                port = int(url.rsplit(":", 1)[1])
                ready.set_result(Serving(port, nanogpt, app, loop))
                await stop.wait()

    def run() -> None:
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="fuzzed-gateway")
    thread.start()
    try:
        yield ready.result(timeout=30)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        assert not thread.is_alive()


def _chat(body: bytes, content_type: bytes = b"application/json") -> Raw:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {ALICE_KEY}\r\nContent-Length: {len(body)}\r\n".encode()
        + b"Content-Type: "
        + content_type
        + b"\r\nConnection: close\r\n\r\n"
    )
    return Raw(head + body, complete=True, authenticated=True)


FOUND = [
    # A 500: json.loads raises a plain ValueError for an integer of more than 4300 digits.
    _chat(b'{"model": "openai/gpt-5.2", "messages": [], "max_tokens": ' + b"9" * 5000 + b"}"),
    # Forwarded as sent, a non-ASCII header value once crashed the fake NanoGPT (a 500).
    _chat(json.dumps(CHAT).encode(), content_type=b"\xff\xfe"),
]
"""What the fuzz found, tried first on every run."""
HEALTHZ = Raw(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", True, False)


def test_raw_requests_never_break_the_server(tmp_path: Path) -> None:
    with gateway_in_a_thread(tmp_path) as serving:
        nanogpt = serving.nanogpt

        @settings(
            max_examples=300,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(requests())
        @example(FOUND[0])
        @example(FOUND[1])
        def one(request: Raw) -> None:
            forwarded = len(nanogpt.requests)
            check_answer(request, serving.send(request))
            if not request.authenticated:
                assert len(nanogpt.requests) == forwarded, request.data[:500]

        one()
        health = serving.send(HEALTHZ)
        assert health.startswith(b"HTTP/1.1 200"), health
        registry = serving.app.state.metrics.registry
        deadline = time.monotonic() + ANSWER_SECONDS
        # Bounded poll: the last clients to hang up may still be being noticed.
        while registry.get_sample_value("nanogpt_gateway_inflight_requests") != 0:
            assert time.monotonic() < deadline, "requests left in flight"
            time.sleep(0.01)
        for request in nanogpt.requests:
            assert upstream_path_allowed(request.url.raw_path.decode("latin-1")), request.url
        assert nanogpt.requests, "no generated request reached NanoGPT: the fuzz is too shallow"
