"""What must hold after every test, whatever it did: no key in a log record, a ledger file or
anything the gateway answered; every error the gateway made in the one OpenAI shape; nothing
sent to a fake NanoGPT outside its API space; the in-flight gauge back to 0 and one ledger row
per authenticated request. Watched from outside: the gateway's `Starlette` is swapped for one
that records what it sends, the fakes' dispatch records every path they were asked for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
import re
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

import httpx
import psycopg
import pytest
from psycopg import sql
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

import gateway.app
from gateway.cli import DEMO_MEMBER_KEY
from gateway.demo_upstream import DEMO_TEAM_KEY
from gateway.ledger.postgresql import PostgreSQLLedger
from gateway.ledger.sqlite.writer import SQLiteLedger
from gateway.logs import QUERY_CREDENTIAL, REDACTED
from gateway.relay import Relay
from gateway.tally import REQUEST_ID_HEADER

BODY_KEPT_BYTES = 1024 * 1024
"""An error body is kept up to this size for its shape check; every byte is scanned for keys."""
LEAK_KINDS = ("log", "ledger", "response", "upstream")
"""What `@pytest.mark.leaks_on_purpose(kind, reason=...)` may exempt."""
UPSTREAM_ROOT_PATHS = frozenset(
    {
        "/v1/images/generations",
        "/api/check-balance",
        "/api/subscription/v1/models",
        "/api/paid/v1/models",
        "/api/personalized/v1/models",
    }
)
"""What the gateway may ask NanoGPT for outside `/api/v1/` (the fake's API root is `/api`)."""


def keys() -> dict[str, bytes]:
    """Every key a test hands the gateway, by name."""
    from tests.conftest import ADMIN_KEY, ADMIN_TOKEN, ALICE_KEY, BOB_KEY, TEAM_KEY

    named = {
        "TEAM_KEY": TEAM_KEY,
        "DEMO_TEAM_KEY": DEMO_TEAM_KEY,
        "ALICE_KEY": ALICE_KEY,
        "BOB_KEY": BOB_KEY,
        "ADMIN_KEY": ADMIN_KEY,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DEMO_MEMBER_KEY": DEMO_MEMBER_KEY,
    }
    return {name: key.encode() for name, key in named.items()}


ISSUED_KEY = re.compile(rb"ngw-[a-z0-9]{12}-[0-9A-Za-z]{43}")
"""A whole key the store issued: shown once, by `keys create` / `rotate` and their admin
API twins, and nowhere else."""
ISSUED = "an issued key"


def found_keys(data: bytes) -> list[str]:
    found = [name for name, key in keys().items() if key in data]
    return [*found, ISSUED] if ISSUED_KEY.search(data) else found


def shows_a_new_key(method: str, path: str) -> bool:
    """Whether an answer to `method path` shows a key just issued (`POST /admin/v1/keys`,
    `POST /admin/v1/keys/{name}/rotate`)."""
    return method == "POST" and re.fullmatch(r"/admin/v1/keys(/[^/]+/rotate)?", path) is not None


class _LogCapture(logging.Handler):
    """Every record at DEBUG and up, formatted as a handler would write it (traceback too)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string is the logger's problem, not a leak
            text = f"{record.msg!r} {record.args!r}"
        # A key a client sent in the query string reaches uvicorn's access record; the one
        # handler the gateway installs scrubs it (gateway/logs.py), whoever logged it.
        text = QUERY_CREDENTIAL.sub(rf"\1{REDACTED}", text)
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + record.stack_info
        self.lines.append(f"{record.name}: {text}")


@dataclass
class Answer:
    """One response the gateway's app sent, as it went out."""

    app: Starlette
    method: str
    path: str
    target: bytes
    """The URL as the client sent it: a key in it is the client's own, and the gateway's 404
    messages and redirects echo it back to that client (to no one else)."""
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False
    leaked: set[str] = field(default_factory=set)
    _tail: bytes = b""

    @property
    def request_id(self) -> str | None:
        for name, value in self.headers:
            if name.lower() == REQUEST_ID_HEADER.encode():
                return value.decode()
        return None

    def feed(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            self.leaked.update(found_keys(b"\n".join(k + b": " + v for k, v in self.headers)))
        elif message["type"] == "http.response.body":
            chunk = bytes(message.get("body", b""))
            window = self._tail + chunk  # a key cut across two chunks is still found
            self.leaked.update(found_keys(window))
            self._tail = window[-64:]
            if len(self.body) < BODY_KEPT_BYTES:
                self.body += chunk[: BODY_KEPT_BYTES - len(self.body)]
            self.complete = not message.get("more_body", False)

    def shape_problem(self) -> str | None:
        """Why this error is not the one OpenAI shape, or None."""
        content_type = dict((k.lower(), v) for k, v in self.headers).get(b"content-type", b"")
        if not content_type.startswith(b"application/json"):
            return f"content-type {content_type!r}"
        try:
            payload = json.loads(self.body)
        except ValueError:
            return f"not JSON: {bytes(self.body[:200])!r}"
        error = payload.get("error") if isinstance(payload, dict) else None
        if set(payload) != {"error"} or not isinstance(error, dict):
            return f"not {{'error': {{...}}}}: {payload!r}"
        if not {"message", "type", "code", "param"} <= set(error):
            return f"fields {sorted(error)}"
        if not (isinstance(error["message"], str) and error["message"]):
            return f"message {error['message']!r}"
        if not (isinstance(error["type"], str) and error["type"]):
            return f"type {error['type']!r}"
        if not all(
            error[name] is None or isinstance(error[name], str) for name in ("code", "param")
        ):
            return f"code/param {error['code']!r} {error['param']!r}"
        return None


@dataclass
class Process:
    """A gateway run as `python -m gateway` (conftest's `running`), seen from its clients."""

    args: list[str]
    base: str
    stderr: list[str]
    """Its stderr, once it has stopped."""
    responses: list[httpx.Response] = field(default_factory=list)

    def problems(self) -> list[str]:
        found = []
        # Demo mode prints the demo member key for its user to paste: a banner, not a log line.
        banner = "  member key "
        err = "".join(
            line for line in "".join(self.stderr).splitlines(True) if not line.startswith(banner)
        )
        if names := found_keys(err.encode()):
            found.append(f"`{' '.join(self.args)}` wrote {', '.join(names)} to stderr")
        for response in self.responses:
            where = f"{response.request.method} {response.url.path} -> {response.status_code}"
            text = b"\n".join(k + b": " + v for k, v in response.headers.raw)
            with contextlib.suppress(httpx.ResponseNotRead):  # a body never read: not seen
                text += response.content
            names = found_keys(text)
            if shows_a_new_key(response.request.method, response.url.path):
                names = [n for n in names if n != ISSUED]
            if names:
                found.append(f"`{' '.join(self.args)}` answered {where} with {', '.join(names)}")
        return found


@dataclass
class Life:
    """One app's lifespan: what it started with, and whether it has ended."""

    app: Starlette
    state: Any = None
    ended: bool = False


@dataclass
class Watch:
    tmp_path: Path
    logs: _LogCapture = field(default_factory=_LogCapture)
    answers: list[Answer] = field(default_factory=list)
    lives: list[Life] = field(default_factory=list)
    relayed: set[str] = field(default_factory=set)
    """Request ids whose answer is NanoGPT's, relayed: its error body is NanoGPT's to shape."""
    upstream_paths: list[tuple[str, str]] = field(default_factory=list)
    """(fake, raw request target) for every request a fake NanoGPT received."""
    processes: list[Process] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    """PostgreSQL databases the test was given: scanned for keys as ledger files are."""
    _root_level: int = logging.WARNING

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from tests.faults import FaultyNanoGPT

        root = logging.getLogger()
        root.addHandler(self.logs)
        self._root_level = root.level
        root.setLevel(logging.DEBUG)
        monkeypatch.setattr(gateway.app, "Starlette", self._recording_starlette())

        relay_init = Relay.__init__

        def relay(relay: Relay, *args: Any, **kwargs: Any) -> None:
            relay_init(relay, *args, **kwargs)
            self.relayed.add(relay.tally.request_id)

        monkeypatch.setattr(Relay, "__init__", relay)

        # pytest imports conftest.py as `conftest`, the tests import it as `tests.conftest`:
        # two FakeNanoGPT classes.
        for module in ("conftest", "tests.conftest"):
            if (fakes := getattr(sys.modules.get(module), "FakeNanoGPT", None)) is not None:
                monkeypatch.setattr(fakes, "_dispatch", self._recording_dispatch(fakes._dispatch))

        answer = FaultyNanoGPT._answer

        async def faulty(faulty: FaultyNanoGPT, request: Any, *args: Any) -> bool:
            self.upstream_paths.append(("FaultyNanoGPT", request.target))
            return await answer(faulty, request, *args)

        monkeypatch.setattr(FaultyNanoGPT, "_answer", faulty)

        send, asend = httpx.Client.send, httpx.AsyncClient.send

        def client_send(client: httpx.Client, request: httpx.Request, **kwargs: Any) -> Any:
            return self._seen(send(client, request, **kwargs))

        async def async_send(
            client: httpx.AsyncClient, request: httpx.Request, **kwargs: Any
        ) -> Any:
            return self._seen(await asend(client, request, **kwargs))

        monkeypatch.setattr(httpx.Client, "send", client_send)
        monkeypatch.setattr(httpx.AsyncClient, "send", async_send)

    def _seen(self, response: httpx.Response) -> httpx.Response:
        """A response from a gateway process is kept, to be read at the end of the test."""
        url = str(response.request.url)
        for process in self.processes:
            if url.startswith(process.base + "/"):
                process.responses.append(response)
        return response

    def _recording_dispatch(self, dispatch: Callable[..., Any]) -> Callable[..., Any]:
        async def recording(fake: Any, request: Any) -> Any:
            self.upstream_paths.append(("FakeNanoGPT", request.url.raw_path.decode("latin-1")))
            return await dispatch(fake, request)

        return recording

    def uninstall(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self.logs)
        root.setLevel(self._root_level)

    def _recording_starlette(self) -> type[Starlette]:
        watch = self

        class RecordingStarlette(Starlette):
            def __init__(self, **kwargs: Any) -> None:  # create_app passes keywords only
                if kwargs.get("lifespan") is not None:
                    kwargs["lifespan"] = watch._lifespan(kwargs["lifespan"])
                super().__init__(**kwargs)

            async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
                if scope["type"] != "http":
                    return await super().__call__(scope, receive, send)
                answer = Answer(self, scope["method"], scope["path"], _target(scope))
                watch.answers.append(answer)

                async def recording(message: Message) -> None:
                    answer.feed(message)
                    await send(message)

                await super().__call__(scope, receive, recording)

        return RecordingStarlette

    def _lifespan(self, inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[Any]:
            life = Life(app)
            self.lives.append(life)
            async with inner(app) as state:
                life.state = state
                yield state
            life.ended = True

        return lifespan

    def problems(self, exempt: set[str]) -> list[str]:
        found: list[str] = []
        if "log" not in exempt:
            found += self._log_problems()
        if "ledger" not in exempt:
            found += self._ledger_file_problems()
        if "response" not in exempt:
            found += self._answer_problems()
        if "upstream" not in exempt:
            found += self._upstream_problems()
        found += self._life_problems()
        if "response" not in exempt and "log" not in exempt:
            found += [problem for process in self.processes for problem in process.problems()]
        return found

    def _log_problems(self) -> list[str]:
        return [
            f"log record carries {', '.join(names)}: {line[:300]!r}"
            for line in self.logs.lines
            if (names := found_keys(line.encode("utf-8", "replace")))
        ]

    def _ledger_file_problems(self) -> list[str]:
        files = {
            p
            for pattern in ("*.db*", "*.sqlite3*")
            for p in self.tmp_path.rglob(pattern)
            if p.is_file()
        }
        files |= {p for p in Path.cwd().glob("gateway-usage.db*") if p.is_file()}
        found = [
            f"ledger file {path} carries {', '.join(names)}"
            for path in sorted(files)
            if (names := found_keys(path.read_bytes()))
        ]
        return found + [
            f"database {url} carries {', '.join(names)}"
            for url in self.databases
            if (names := found_keys(_database_bytes(url)))
        ]

    def _answer_problems(self) -> list[str]:
        found = []
        for answer in self.answers:
            where = f"{answer.method} {answer.path} -> {answer.status}"
            shown = {ISSUED} if shows_a_new_key(answer.method, answer.path) else set()
            sent = set(found_keys(unquote_to_bytes(answer.target)))
            if leaked := answer.leaked - sent - shown:
                found.append(f"the gateway answered {where} with {', '.join(sorted(leaked))}")
            if (
                answer.status >= 400
                and answer.method != "HEAD"
                and answer.complete
                and answer.request_id not in self.relayed
                and (problem := answer.shape_problem())
            ):
                found.append(f"the gateway's error {where} is not the OpenAI shape: {problem}")
        return found

    def _upstream_problems(self) -> list[str]:
        return [
            f"{fake} was asked for {target!r}, outside NanoGPT's API"
            for fake, target in self.upstream_paths
            if not upstream_path_allowed(target)
        ]

    def _life_problems(self) -> list[str]:
        found = []
        for life in self.lives:
            if not life.ended:
                continue
            metrics = getattr(life.app.state, "metrics", None)
            if metrics is not None:
                inflight = metrics.registry.get_sample_value("nanogpt_gateway_inflight_requests")
                if inflight:
                    found.append(f"{inflight:g} requests still in flight after the lifespan")
            found += self._row_problems(life)
        return found

    def _row_problems(self, life: Life) -> list[str]:
        """One ledger row per authenticated request the app answered, none twice."""
        gateway_state = (life.state or {}).get("gateway")
        ledger = getattr(getattr(gateway_state, "tallies", None), "ledger", None)
        if isinstance(ledger, PostgreSQLLedger) and not ledger.rows_lost:
            with psycopg.connect(ledger.url) as conn:
                ids = conn.execute("SELECT request_id FROM usage").fetchall()
            rows: Counter[str | None] = Counter(str(r) for (r,) in ids)
        elif isinstance(ledger, SQLiteLedger) and not ledger.rows_lost and ledger.path.exists():
            with contextlib.closing(sqlite3.connect(ledger.path)) as db:
                rows = Counter(r for (r,) in db.execute("SELECT request_id FROM usage"))
        else:
            return []  # an injected ledger, or one a test made fail on purpose
        found = [f"request {r} has {n} ledger rows" for r, n in rows.items() if n > 1]
        for answer in self.answers:
            request_id = answer.request_id
            mine = answer.app is life.app and request_id and answer.status != 401
            if mine and rows[request_id] != 1:
                where = f"{answer.method} {answer.path} -> {answer.status}"
                found.append(f"{where} has {rows[request_id]} ledger rows, not 1")
        return found


def _database_bytes(url: str) -> bytes:
    """Every row a PostgreSQL database's ledger, keys and audit hold, as text."""
    text = []
    with psycopg.connect(url) as conn:
        for table in ("usage", "keys", "key_audit"):
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
            if exists and exists[0]:
                query = sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table))
                text += [str(row) for (row,) in conn.execute(query)]
    return "\n".join(text).encode()


def _target(scope: Scope) -> bytes:
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return raw + b"?" + query if query else raw


def upstream_path_allowed(target: str) -> bool:
    """Whether a fake NanoGPT (API root `/api`) may be asked for `target`: decoded once and
    its dot segments resolved, as a server would, it lies in `/api/v1/` or is one of the
    documented exceptions."""
    raw = target.split("?", 1)[0]
    decoded = unquote(raw).replace("\\", "/")
    resolved = posixpath.normpath(decoded) if decoded else "/"
    return (resolved + "/").startswith("/api/v1/") or resolved in UPSTREAM_ROOT_PATHS


_watch: Watch | None = None
"""The running test's watch, for `serving_process`."""


def database_used(url: str) -> None:
    """conftest's `postgres_url` gave the running test a database: scan it afterwards."""
    if _watch is not None:
        _watch.databases.append(url)


def serving_process(args: list[str], base: str, stderr: list[str]) -> None:
    """conftest's `running` started a process at `base`: watch what it answers and logs (a
    `demo-upstream` is a NanoGPT stand-in, not a gateway: not watched)."""
    if _watch is not None and args[:1] != ["demo-upstream"]:
        _watch.processes.append(Process(args, base, stderr))


@contextlib.contextmanager
def watching(node: pytest.Item, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Check the invariants once the test (and its fixtures) are done."""
    exempt: set[str] = set()
    for marker in node.iter_markers("leaks_on_purpose"):
        assert marker.kwargs.get("reason"), "leaks_on_purpose needs a reason="
        assert set(marker.args) <= set(LEAK_KINDS), marker.args
        exempt.update(marker.args)
    global _watch
    watch = _watch = Watch(tmp_path)
    watch.install(monkeypatch)
    try:
        yield
    finally:
        watch.uninstall()
        _watch = None
    problems = watch.problems(exempt)
    assert not problems, "invariants broken:\n  " + "\n  ".join(problems[:20])
