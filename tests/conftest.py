"""Shared fixtures: hermetic environment, settings from TOML text, a scriptable fake NanoGPT on a
real loopback port (the gateway's client library sees a real server), the app in-process, and
the app on a real uvicorn server for streaming."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import hypothesis
import openai
import psycopg
import psycopg.rows
import pytest
import uvicorn
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.app import create_app
from gateway.config import Settings, load_settings
from gateway.demo_upstream import DEMO_TEAM_KEY
from gateway.keys import hash_key
from gateway.ledger import migrate
from tests import invariants, postgres
from tests.redis_server import RedisServer, redis_server

# Property tests draw the same examples on every run, so CI is deterministic and a failure
# reproduces from its printed example; no example database is kept between runs.
hypothesis.settings.register_profile(
    "deterministic", derandomize=True, database=None, deadline=None
)
hypothesis.settings.load_profile("deterministic")

FIXTURES = Path(__file__).parent / "fixtures"
TEAM_KEY = "sk-nano-team-0123456789abcdef"
ALICE_KEY = "sk-member-alice"
BOB_KEY = "sk-member-bob"
ADMIN_KEY = "sk-member-root"
ADMIN_TOKEN = "sk-admin-token-0123456789abcdef"
"""The admin API's token (`[admin] token_env`): a credential for /admin/v1 only."""

EMBEDDING_MODEL = {
    "id": "text-embedding-3-small",
    "object": "model",
    "owned_by": "openai",
    "pricing": {"per_million_tokens": 0.02, "currency": "USD"},
}

MEMBERS_TOML = f"""
[[members]]
name = "alice"
key_sha256 = "{hash_key(ALICE_KEY)}"

[[members]]
name = "bob"
key_env = "BOB_KEY"
deny = ["anthropic/*"]

[[members]]
name = "root"
key_sha256 = "{hash_key(ADMIN_KEY)}"
admin = true
"""


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The default ledger_path is relative: every test's ledger lands in its own directory.
    monkeypatch.chdir(tmp_path)
    for name in ("NANOGPT_API_KEY", "NANOGPT_BASE_URL", "GATEWAY_CONFIG", "BOB_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(autouse=True)
def invariants_hold(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    """After every test: tests/invariants.py (no key let out, one error shape, ...)."""
    with invariants.watching(request.node, monkeypatch, tmp_path):
        yield


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def catalog_payload() -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((FIXTURES / "catalog.json").read_text())
    return payload


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real Redis for the session (tests keep apart by key prefix, or flush it)."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis(redis_session: RedisServer) -> RedisServer:
    """The session's Redis, emptied for this test."""
    redis_session.command("FLUSHALL")
    return redis_session


def make_settings(tmp_path: Path, toml: str = "", *, members: bool = True, **env: str) -> Settings:
    """Settings from TOML text, with the team key and Bob's key in the environment."""
    path = tmp_path / "gateway.toml"
    path.write_text(toml + (MEMBERS_TOML if members else ""))
    environ = {"NANOGPT_API_KEY": TEAM_KEY, "BOB_KEY": BOB_KEY, **env}
    return load_settings(path, environ)


Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class FakeNanoGPT:
    """NanoGPT as a real HTTP server: the fixture catalog, and a replaceable handler for the rest.

    Handlers are written as `httpx.Request -> httpx.Response` functions. What they raise is
    played out on the wire: an `httpx.TimeoutException` stalls (the gateway's read timeout must
    fire), any other `httpx.HTTPError` drops the connection, before the answer or mid-body.
    """

    def __init__(self) -> None:
        self.catalog: Any = catalog_payload()
        self.media: dict[str, list[dict[str, Any]]] = {"embedding": [EMBEDDING_MODEL]}
        """Catalogs besides the text one, by kind (`image`, `audio`, ...)."""
        self.requests: list[httpx.Request] = []
        self.catalog_fetches = 0
        self.handler: Handler = self.complete
        self.balance: Any = {"usd_balance": "129.46956147", "nano_balance": "26.71801147"}
        self.balance_requests: list[httpx.Request] = []
        self.keep_alive = True
        """False: every answer closes its connection, so none waits in the gateway's pool (a
        test that will `stop()` this fake wants the next request to meet a refusal)."""
        self.url_host = "127.0.0.1"
        """The host in the API root the gateway is given: `localhost` (which resolves to this
        loopback address) where the gateway must see a hostname, not an IP address."""

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """This fake on a free loopback port in the running loop; yields its API root."""
        app = web.Application(client_max_size=64 * 1024 * 1024)  # as large as NanoGPT takes
        app.router.add_route("*", "/{tail:.*}", self._serve)
        self._server = server = TestServer(app, host="127.0.0.1", handler_cancellation=True)
        await server.start_server()
        try:
            yield str(server.make_url("/api").with_host(self.url_host))
        finally:
            await server.close()

    async def stop(self) -> None:
        """Go away mid-test: from now on, connecting to this fake is refused."""
        await self._server.close()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        received = httpx.Request(
            request.method,
            f"http://{request.host}{request.raw_path}",
            headers=list(request.raw_headers),  # as sent: a non-ASCII value too
            content=await request.read(),
        )
        try:
            response = await self._dispatch(received)
        except httpx.HTTPError as exc:
            return await _fail(request, exc)
        headers = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k not in ("content-length", "transfer-encoding")
        ]
        answer = web.StreamResponse(status=response.status_code, reason="Fake", headers=headers)
        if not self.keep_alive:
            answer.force_close()
        await answer.prepare(request)
        body = response.stream  # as given: still compressed, if the handler compressed it
        assert isinstance(body, httpx.AsyncByteStream)
        try:
            async for chunk in body:
                if request.method != "HEAD":  # aiohttp.web would write it
                    await answer.write(chunk)
        except httpx.HTTPError as exc:
            return await _fail(request, exc)
        finally:
            await body.aclose()
        await answer.write_eof()
        return answer

    async def _dispatch(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/check-balance"):
            self.balance_requests.append(request)
            return httpx.Response(200, json=self.balance)
        if path.endswith("-models") and request.method == "GET":
            kind = path.rsplit("/", 1)[-1].removesuffix("-models")
            return httpx.Response(200, json={"object": "list", "data": self.media.get(kind, [])})
        if path.endswith("/models") and request.method == "GET":
            self.catalog_fetches += 1
            if isinstance(self.catalog, Exception):
                raise self.catalog
            return httpx.Response(200, json=self.catalog)
        self.requests.append(request)
        return await self.handler(request)

    async def complete(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        return httpx.Response(
            200,
            json={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            },
        )


async def _fail(request: web.Request, exc: httpx.HTTPError) -> web.StreamResponse:
    if isinstance(exc, httpx.TimeoutException):
        await asyncio.Event().wait()  # silent until the gateway gives up and hangs up
    assert request.transport is not None
    request.transport.abort()
    return web.Response()


@contextlib.asynccontextmanager
async def served(settings: Settings, nanogpt: FakeNanoGPT) -> AsyncIterator[Settings]:
    """`settings` pointed at `nanogpt`, served for as long as the block runs."""
    async with nanogpt.serving() as api_root:
        upstream = dataclasses.replace(settings.upstream, base_url=api_root)
        yield dataclasses.replace(settings, upstream=upstream)


@pytest.fixture
def nanogpt() -> FakeNanoGPT:
    return FakeNanoGPT()


def with_lifespan_state(app: Starlette, state: Mapping[str, Any]) -> ASGIApp:
    """What an ASGI server does with lifespan state: a copy in every request's scope."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"] = dict(state)
        await app(scope, receive, send)

    return asgi


@contextlib.asynccontextmanager
async def gateway_client(
    settings: Settings, nanogpt: FakeNanoGPT, **app_options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in-process (lifespan run) in front of `nanogpt`, with the catalog loaded
    unless the upstream is down."""
    async with served(settings, nanogpt) as settings:
        app = create_app(settings, **app_options)
        async with app.router.lifespan_context(app) as state:
            assert state is not None, "the gateway's lifespan yields its state"
            asgi = with_lifespan_state(app, state)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=asgi), base_url="http://localhost"
            ) as client:
                await state["current"].gateway.catalog.refresh()
                yield client


@pytest.fixture
async def client(tmp_path: Path, nanogpt: FakeNanoGPT) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(make_settings(tmp_path), nanogpt) as client:
        yield client


def auth(key: str = ALICE_KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def assert_openai_error(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    """The one error shape: every non-2xx the gateway makes is an OpenAI error object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    if code is not None:
        assert error["code"] == code, error
    assert TEAM_KEY not in response.text
    result: dict[str, Any] = error
    return result


@contextlib.asynccontextmanager
async def live_server(app: Any) -> AsyncIterator[str]:
    """A real uvicorn server on a free loopback port in this event loop, for what
    ASGITransport cannot show: chunk timing, disconnects, real SDK clients."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, lifespan="on", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    with anyio.fail_after(10):
        while not server.started:  # readiness poll, not a timed wait
            await asyncio.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def ledger_rows(path: Path | str = "gateway-usage.db") -> list[dict[str, Any]]:
    """Every row of a usage ledger, read straight from the SQLite file as an auditor would."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM usage ORDER BY id")]


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus exposition, `None` if it is absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def sdk_over(
    http: httpx.AsyncClient, base_url: str, api_key: str, *, max_retries: int = 0
) -> openai.AsyncOpenAI:
    """The openai SDK sending through `http` (an in-process transport). The SDK takes an
    `httpx.AsyncClient` as well as its own `httpx2` one (it checks for either at run time), but
    its annotation names only `httpx2.AsyncClient`."""
    return openai.AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        http_client=http,  # type: ignore[arg-type]
        max_retries=max_retries,
    )


def logged(stderr: list[str], text: str, *, after: int = 0, seconds: float = 10) -> str:
    """The first line from `after` on of a `running` process's stderr that holds `text`,
    waiting (bounded) for it to be written."""
    deadline = time.monotonic() + seconds
    while True:  # a poll of what the process wrote, bounded
        for line in stderr[after:]:
            if text in line:
                return line
        assert time.monotonic() < deadline, f"{text!r} not logged in {seconds} s: {stderr}"
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def running(
    args: list[str], ready_path: str, **env: str
) -> Iterator[tuple[str, subprocess.Popen[str], list[str]]]:
    """`python -m gateway ARGS` on a free port, until its `ready_path` answers; yields the base
    URL, the process, and a list of its stderr: the lines logged so far while it runs
    (`logged()` waits for one), its whole stderr as one string once stopped by SIGTERM."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k != "NANOGPT_API_KEY"} | env
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", *args, "--port", str(port)],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base, stderr = f"http://127.0.0.1:{port}", list[str]()
    assert process.stderr is not None
    reader = threading.Thread(target=stderr.extend, args=(process.stderr,), daemon=True)
    reader.start()
    invariants.serving_process(args, base, stderr)
    try:
        deadline = time.monotonic() + 30
        while True:  # readiness poll, bounded
            assert process.poll() is None, "".join(stderr)
            assert time.monotonic() < deadline, f"{args} did not become ready"
            with contextlib.suppress(httpx.TransportError):
                headers = {"x-api-key": DEMO_TEAM_KEY}
                if httpx.get(base + ready_path, headers=headers).status_code == 200:
                    break
            time.sleep(0.05)
        yield base, process, stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)  # not communicate(): the reader thread has stderr
        reader.join(30)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
        stderr[:] = ["".join(stderr)]
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit reports the signal.
    assert process.returncode in (0, -signal.SIGTERM), stderr[0]
    assert "Traceback" not in stderr[0]


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[postgres.PostgreSQL]:
    """One real PostgreSQL for the session (tests/postgres.py)."""
    with postgres.server() as server:
        yield server


@pytest.fixture
def postgres_url(postgresql_server: postgres.PostgreSQL) -> str:
    """A fresh, empty database on the session's PostgreSQL, for this test alone (scanned for
    keys after the test, as ledger files are)."""
    url = postgresql_server.create()
    invariants.database_used(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's ledger and key store live, once per backend: a SQLite file, and a fresh
    PostgreSQL database with the schema applied (as `nanogpt-gateway migrate` does)."""
    if request.param == "sqlite":
        return str(tmp_path / "gateway.db")
    url: str = request.getfixturevalue("postgres_url")
    migrate(url)
    return url


def execute_sql(database: str, script: str) -> None:
    """Run SQL on a test's database, whichever backend, as an operator at a console would."""
    if database.startswith("postgresql://"):
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(script.encode())
        return
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as db:
        db.executescript(script)


def query_sql(database: str, query: str) -> list[dict[str, Any]]:
    """Rows of a query on a test's database, whichever backend, as dicts."""
    if database.startswith("postgresql://"):
        with psycopg.connect(database, row_factory=psycopg.rows.dict_row) as conn:
            return conn.execute(query.encode()).fetchall()
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(query)]
