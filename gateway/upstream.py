"""Upstream I/O: the one module that knows the HTTP client library (aiohttp).

It owns the pooled client session, filters headers both ways, swaps the member's key for the
team key (and cuts that key out of whatever comes back: headers, error bodies, streamed
bodies), decodes gzip and deflate bodies, bounds every wait for NanoGPT (`ReadDeadline`),
reads at most 64 KB of an error body, and translates every client-library failure into
`UpstreamError` / `UpstreamTimeout`, so the rest of the gateway can change client library
without noticing. A body that did not arrive whole (cut off, reset, its encoding unfinished)
always ends in one of those errors, never in a clean end.
aiohttp was chosen on bench/run's numbers (bench/README.md): with httpx the connection pool's
bookkeeping alone cost more per request than everything else the gateway does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

import aiohttp
from yarl import URL

from gateway.codings import DecodeError, Decoder
from gateway.deadline import ReadDeadline
from gateway.errors import UpstreamError, UpstreamTimeout, error_body
from gateway.headers import forwarded_headers, forwarded_query, returned_headers
from gateway.redaction import REDACTED, Redactor
from gateway.types import Secret

logger = logging.getLogger("gateway.upstream")

METADATA_READ_TIMEOUT_SECONDS = 30.0
LARGE_BODY_BYTES = 1024 * 1024
"""Request bodies above this are written in slices (aiohttp's own threshold for a warning)."""
SLICE_BYTES = 64 * 1024
ERROR_BODY_BYTES = 64 * 1024
"""An error body is relayed up to this size: it is read whole to be scrubbed of the key, and a
300 MB error page once took the gateway to 648 MB."""
ERROR_QUOTE_CHARS = 1024


async def _in_slices(body: bytes) -> AsyncIterator[memoryview]:
    view = memoryview(body)
    for start in range(0, len(view), SLICE_BYTES):
        yield view[start : start + SLICE_BYTES]


ACCEPT_ENCODING = "gzip, deflate"
"""What the gateway asks NanoGPT for, and decodes itself (`Decoder`)."""
_ENCODINGS = {"accept-encoding": ACCEPT_ENCODING}


class UpstreamResponse:
    """An upstream response whose body has not been read yet; `aclose()` it in a `finally`."""

    def __init__(
        self, response: aiohttp.ClientResponse, upstream: Upstream, deadline: ReadDeadline
    ) -> None:
        self._response = response
        self._upstream = upstream
        self._deadline = deadline
        deadline.headed()
        self.status_code = response.status
        headers = returned_headers(response.raw_headers)
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        self._decoder = Decoder(encoding) if Decoder.decodes(encoding) else None
        if self._decoder is not None:
            headers = [(k, v) for k, v in headers if k.lower() != b"content-encoding"]
        self.raw_headers = upstream.scrub(headers)
        # A body still encoded is relayed as it came: not read for usage, nothing added to it.
        plain = self._decoder is not None or encoding == "identity"
        content_type = response.headers.get("content-type", "")
        self.is_event_stream = plain and content_type.startswith("text/event-stream")
        self.is_json = plain and content_type.startswith("application/json")
        self._error_body: bytes | None = None
        # A body without Content-Length or chunked coding ends when the connection does
        # (RFC 9112 section 6.3): only how the connection ended tells whether it was whole.
        framed = (
            "content-length" in response.headers
            or "chunked" in response.headers.get("transfer-encoding", "").lower()
        )
        connection = response.connection
        self._ends_with_connection = None if framed or connection is None else connection.protocol

    async def error_body(self) -> bytes:
        """An error answer, scrubbed: an upstream that echoes the key it was sent ("Incorrect
        API key: sk-...") must not hand the team key to a member. Read by `Upstream.open`."""
        if self._error_body is None:
            self._error_body = await self._read_error_body()
        return self._error_body

    async def _read_error_body(self) -> bytes:
        """The error body, whole up to `ERROR_BODY_BYTES`; a larger one is not kept: its
        start is quoted in an error of the gateway's own, and the rest left unread."""
        parts, size = [], 0
        while size <= ERROR_BODY_BYTES and (chunk := await self._read("while reading an error")):
            for piece in self._decoded(chunk, "while reading an error"):
                parts.append(piece)
                size += len(piece)
        if size <= ERROR_BODY_BYTES:
            self._check_end("while reading an error")
            return self._upstream.redact(b"".join(parts))
        logger.warning(
            "NanoGPT's HTTP %d error body is over %d bytes; the rest was dropped unread",
            self.status_code,
            ERROR_BODY_BYTES,
        )
        start = self._upstream.redactor().feed(b"".join(parts)[:ERROR_BODY_BYTES])
        quote = start.decode("utf-8", "replace")[:ERROR_QUOTE_CHARS]
        message = (
            f"NanoGPT answered HTTP {self.status_code} with an error body over "
            f"{ERROR_BODY_BYTES // 1024} KB; the gateway dropped it past that. It began: {quote}"
        )
        body = error_body(message, type="upstream_error", code="upstream_error_too_large")
        self.raw_headers = [
            *((k, v) for k, v in self.raw_headers if k.lower() != b"content-type"),
            (b"content-type", b"application/json"),
        ]
        self.is_event_stream, self.is_json = False, True
        return json.dumps(body).encode()

    def _decoded(self, chunk: bytes, doing: str) -> Iterator[bytes]:
        if self._decoder is None:
            yield chunk
            return
        try:
            yield from self._decoder.feed(chunk)
        except DecodeError as exc:
            raise self._upstream.undecodable(exc, doing) from None

    def _check_end(self, doing: str) -> None:
        """The body has ended where its framing said; say so if it was not whole after all:
        a connection reset ended a body that ends with its connection, or its encoding had
        not ended (both of which aiohttp takes for a whole body)."""
        protocol = self._ends_with_connection
        reset = protocol.exception() if protocol is not None else None
        if isinstance(reset, aiohttp.ClientOSError):
            raise self._upstream.translate(reset, doing)
        if self._decoder is not None:
            try:
                self._decoder.end()
            except DecodeError as exc:
                raise self._upstream.undecodable(exc, doing) from None

    async def _read(self, doing: str) -> bytes:
        """What has arrived of the body (waiting for something, within the deadline), `b""`
        at its end."""
        deadline = self._deadline
        deadline.begin()
        try:
            return await self._response.content.readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._upstream.translate(exc, doing) from None
        except asyncio.CancelledError:
            if deadline.timed_out():
                raise self._upstream.stalled(doing) from None
            raise
        finally:
            deadline.since = None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, decoded and with the team key cut out, one chunk as soon as it arrives,
        never coalesced (a chunk that may end in the start of the key waits for the next)."""
        if self.status_code >= 400:
            yield await self.error_body()
            return
        redactor, decoder, doing = (
            self._upstream.redactor(),
            self._decoder,
            "while streaming the response",
        )
        while chunk := await self._read(doing):
            if decoder is None:
                if chunk := redactor.feed(chunk):
                    yield chunk
                continue
            for piece in self._decoded(chunk, doing):
                if piece := redactor.feed(piece):
                    yield piece
        self._check_end(doing)
        if rest := redactor.flush():
            yield rest

    async def aclose(self) -> None:
        """Back to the pool when the body was read to its end; closed otherwise, since a
        connection with an unread body cannot carry another request."""
        self._deadline.stop()
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class Upstream:
    """The NanoGPT API at `base_url`, reached through one pooled session for the gateway's life;
    build it inside the running event loop."""

    def __init__(
        self,
        base_url: str,
        team_key: Secret,
        *,
        connect_timeout: float,
        read_timeout: float,
        client_headers: Iterable[str] = (),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client_headers = frozenset(h.lower() for h in client_headers)
        """Client identity headers forwarded all the same (`upstream.forward_client_headers`)."""
        self.root_url = self.base_url.removesuffix("/api")
        """The host root, where NanoGPT serves a few endpoints (`images/generations`)."""
        self._team_key = team_key
        self._key = team_key.reveal().encode()
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._metadata_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=METADATA_READ_TIMEOUT_SECONDS,
        )
        self._session = aiohttp.ClientSession(
            # No cap on connections (a stream holds one for minutes); idle ones are closed
            # after 60 s, before a proxy in front of NanoGPT drops them mid-reuse.
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
            # One session serves every member, so it must never store or replay a cookie.
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=self._timeout,
            trust_env=False,
            # NanoGPT sees the member's client's User-Agent (forwarded), never aiohttp's.
            skip_auto_headers=("User-Agent",),
            # Bodies are decoded here (`Decoder`), of what `ACCEPT_ENCODING` asks for.
            auto_decompress=False,
        )

    @property
    def is_closed(self) -> bool:
        return self._session.closed

    async def aclose(self) -> None:
        await self._session.close()

    async def open(
        self,
        method: str,
        path: str,
        query: bytes,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        *,
        at_root: bool = False,
        drop_headers: frozenset[str] = frozenset(),
    ) -> UpstreamResponse:
        """Send a request to `{base_url}{path}` (`{root_url}{path}` when `at_root`) and return
        once the response headers are in. `path` and `query` go out as given, less any
        credential in the query; `drop_headers` are not forwarded either."""
        base = self.root_url if at_root else self.base_url
        query = forwarded_query(query)
        url = base + path + (f"?{query.decode('latin-1')}" if query else "")
        sent = forwarded_headers(
            headers, self._team_key, keep=self._client_headers, drop=drop_headers
        )
        sent.append(("accept-encoding", ACCEPT_ENCODING))
        data: bytes | AsyncIterator[memoryview] | None = body or None
        if len(body) > LARGE_BODY_BYTES:
            # aiohttp warns that one large write may hold up the loop; in slices, with the
            # length given, it goes out as the same request without chunked encoding.
            data = _in_slices(body)
            sent.append(("content-length", str(len(body))))
        # The head may take a connect, then a read: one bound for both.
        deadline = ReadDeadline(self._read_timeout, grace=self._connect_timeout)
        try:
            response = await self._session.request(
                method,
                URL(url, encoded=True),
                headers=sent,
                data=data,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            deadline.stop()
            raise self.translate(exc, f"on {method} {path}") from None
        except asyncio.CancelledError:
            deadline.stop()
            if deadline.timed_out():
                raise self.stalled(f"on {method} {path}") from None
            raise
        answer = UpstreamResponse(response, self, deadline)
        if answer.status_code >= 400:
            # Read before anything is relayed, so a body too large to relay can be replaced.
            try:
                await answer.error_body()
            except BaseException:
                await answer.aclose()
                raise
        return answer

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET a NanoGPT metadata endpoint (the catalog) with a short read timeout."""
        key = {"authorization": f"Bearer {self._team_key.reveal()}", **_ENCODINGS}
        return await self._metadata("GET", path, params=params, headers=key)

    async def post_json(self, path: str) -> Any:
        """POST to a NanoGPT account endpoint (`/check-balance`), which takes the key in
        `x-api-key` as NanoGPT documents it."""
        key = {"x-api-key": self._team_key.reveal(), **_ENCODINGS}
        return await self._metadata("POST", path, headers=key)

    async def _metadata(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
    ) -> Any:
        try:
            # A whole answer within the bound, whatever the upstream drips meanwhile.
            async with (
                asyncio.timeout(self._connect_timeout + METADATA_READ_TIMEOUT_SECONDS),
                self._session.request(
                    method,
                    self.base_url + path,
                    params=params,
                    headers=headers,
                    timeout=self._metadata_timeout,
                    allow_redirects=False,
                ) as response,
            ):
                status, body = response.status, await response.read()
                encoding = response.headers.get("content-encoding", "identity").strip().lower()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self.translate(exc, f"on {method} {path}") from None
        if status != 200:
            raise UpstreamError(f"NanoGPT answered {method} {path} with HTTP {status}")
        try:
            if Decoder.decodes(encoding):
                decoder = Decoder(encoding)
                body = b"".join(decoder.feed(body))
                decoder.end()
            return json.loads(body)
        except (ValueError, DecodeError):  # JSONDecodeError, UnicodeDecodeError, a huge int
            raise UpstreamError(
                f"NanoGPT answered {method} {path} with a body that is not JSON"
            ) from None

    def translate(self, exc: BaseException, doing: str) -> UpstreamError:
        """The gateway's error for a client-library failure: what failed in the user's terms,
        the URL and the library's words kept for the log (`detail`); never the key."""
        detail = self.redact(str(exc).encode()).decode() or type(exc).__name__
        detail = f"NanoGPT at {self.base_url} {doing}: {type(exc).__name__}: {detail}"
        if isinstance(exc, TimeoutError):
            return UpstreamTimeout(f"NanoGPT did not answer in time {doing}.", detail=detail)
        if isinstance(exc, aiohttp.ClientConnectorError):
            error = UpstreamError(
                f"The gateway could not connect to NanoGPT {doing}.", detail=detail
            )
            error.reason = "connect"
            return error
        return UpstreamError(f"NanoGPT broke off the connection {doing}.", detail=detail)

    def undecodable(self, exc: DecodeError, doing: str) -> UpstreamError:
        return UpstreamError(
            f"NanoGPT sent a response the gateway could not read {doing}.",
            detail=f"NanoGPT at {self.base_url} sent {exc} {doing}",
        )

    def stalled(self, doing: str) -> UpstreamTimeout:
        """The gateway's error for a wait that outlasted `read_timeout`."""
        return UpstreamTimeout(
            f"NanoGPT did not answer in time {doing} (nothing for {self._read_timeout:g} s, "
            "upstream.read_timeout_seconds).",
            detail=f"NanoGPT at {self.base_url} sent nothing for {self._read_timeout:g} s {doing}",
        )

    def redact(self, data: bytes) -> bytes:
        key = self._key
        return data.replace(key, REDACTED) if key else data

    def redactor(self) -> Redactor:
        """A `Redactor` for one body: an upstream that echoes the key it was sent (a debug
        field, a request dump) must not hand the team key to a member."""
        return Redactor(self._key)

    def scrub(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Response headers with the team key cut out of their values."""
        key = self._key
        if not key or not any(key in value for _, value in headers):
            return headers
        return [(name, value.replace(key, REDACTED)) for name, value in headers]
