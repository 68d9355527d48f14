"""A fault-injecting NanoGPT: a real loopback server on raw asyncio streams, so it can send what
no HTTP library would (broken chunked framing, a reset mid-body, a body that lies about its
Content-Encoding). Each API request is answered by the next script a test queued: raw bytes
to write, events to wait on (never timed sleeps), a reset or a close. Catalog and balance
requests are answered well, so the gateway in front of it starts as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import catalog_payload


class Reset:
    """Abort the connection with a TCP RST (SO_LINGER 0): the peer reads ECONNRESET."""


class Close:
    """Close the connection cleanly (FIN) after what was written."""


@dataclass(frozen=True)
class Drip:
    """Write `data` a byte at a time, `every` seconds apart. The one step paced by the clock:
    a drip is defined by time (it keeps a timer that measures silence from ever firing)."""

    data: bytes
    every: float


RESET, CLOSE = Reset(), Close()
Step = bytes | asyncio.Event | Drip | Reset | Close
"""Bytes are written as they are; an event is waited on before the next step."""


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FaultyNanoGPT:
    scripts: list[list[Step]] = field(default_factory=list)
    """The answers to the next API requests, in order; none left: a plain chat completion."""
    requests: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when an API request has been read."""
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the gateway closed a connection whose answer had not finished its script."""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def answer(self, *steps: Step) -> None:
        self.scripts.append(list(steps))

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """This server on a free loopback port in the running loop; yields its API root."""
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}/api"
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while (request := await _read_request(reader)) is not None:
                try:
                    if not await self._answer(request, reader, writer):
                        return
                except ConnectionError:
                    self.hung_up.set()
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _answer(
        self, request: Received, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Play the answer; False when the connection is done."""
        path = request.target.split("?", 1)[0]
        if request.method == "GET" and path.endswith("/models"):
            steps = well_formed(200, catalog_payload())
        elif request.method == "GET" and path.endswith("-models"):
            steps = well_formed(200, {"object": "list", "data": []})
        elif path.endswith("/check-balance"):
            steps = well_formed(200, {"usd_balance": "1.0", "nano_balance": "1.0"})
        else:
            self.requests.append(request)
            self.arrived.set()
            steps = self.scripts.pop(0) if self.scripts else well_formed(200, COMPLETION)
        for step in steps:
            if isinstance(step, bytes):
                writer.write(step)
                await writer.drain()
            elif isinstance(step, asyncio.Event):
                await _wait_unless_gone(step, reader)
            elif isinstance(step, Drip):
                for byte in step.data:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            _wait_unless_gone(asyncio.Event(), reader), step.every
                        )
            elif isinstance(step, Reset):
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return False
            else:
                await writer.drain()
                writer.close()
                return False
        return True


async def _wait_unless_gone(event: asyncio.Event, reader: asyncio.StreamReader) -> None:
    """Wait for `event`; if the gateway hangs up meanwhile, say so and stop this answer."""
    waiting = asyncio.ensure_future(event.wait())
    gone = asyncio.ensure_future(reader.read(1))
    try:
        await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        gone.cancel()
    if gone.done() and not gone.cancelled():
        if gone.exception() is None and gone.result():
            raise AssertionError("the gateway wrote while waiting for its answer")
        raise ConnectionResetError("the gateway hung up")


async def _read_request(reader: asyncio.StreamReader) -> Received | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    line, *fields = head.decode("latin-1").split("\r\n")[:-2]
    method, target, _ = line.split(" ", 2)
    headers = {}
    for field_line in fields:
        name, value = field_line.split(":", 1)
        headers[name.strip().lower()] = value.strip()
    assert "chunked" not in headers.get("transfer-encoding", ""), "the gateway sends lengths"
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Received(method, target, headers, body)


COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def head(
    status: int = 200,
    headers: Iterable[tuple[str, str]] = (),
    *,
    length: int | None = None,
    chunked: bool = False,
    reason: str = "Fault",
) -> bytes:
    """A response head; `length` and `chunked` add their framing headers."""
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
JSON = ("Content-Type", "application/json")
SSE = ("Content-Type", "text/event-stream")


def well_formed(
    status: int, payload: Any, headers: Iterable[tuple[str, str]] = (JSON,)
) -> list[Step]:
    """A whole answer with a Content-Length: what a well-behaved server sends."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return [head(status, headers, length=len(body)) + body]
