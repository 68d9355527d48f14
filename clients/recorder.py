"""A recording pass-through in front of the gateway: every request a client makes is forwarded
as is (streams relayed chunk by chunk) and logged without its secrets, with what the client got
back (status, the response's kind, the tools it was asked to call, the gateway's request id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

SECRET_HEADERS = frozenset(
    {"authorization", "x-api-key", "api-key", "cookie", "proxy-authorization", "x-goog-api-key"}
)
WIRE_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding"})
REQUEST_ID = "x-gateway-request-id"
LONG = 1500  # a string longer than this is cut in a fixture (system prompts, tool manuals)


@dataclass
class Exchange:
    """One request as the client sent it, and what it got back."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    auth: str  # how the client sent its key: "bearer", "x-api-key" or "none"
    key: str
    status: int = 0
    content_type: str = ""
    request_id: str = ""
    tool_calls: list[str] = field(default_factory=list)
    ends_with: str = ""
    client_left: bool = False

    def fixture(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "auth": self.auth,
            "headers": self.headers,
            "body": trim(self.body),
            "seen": {
                "status": self.status,
                "content_type": self.content_type.split(";")[0],
                "ends_with": self.ends_with,
                "tool_calls": self.tool_calls,
                "client_left": self.client_left,
            },
        }


def trim(value: Any) -> Any:
    """`value` with every long string cut short: the structure stays, the prose goes."""
    if isinstance(value, str) and len(value) > LONG:
        return value[:300] + f" [... {len(value) - 300} characters trimmed]"
    if isinstance(value, list):
        return [trim(v) for v in value]
    if isinstance(value, dict):
        return {k: trim(v) for k, v in value.items()}
    return value


def was_trimmed(value: Any) -> bool:
    return json.dumps(trim(value)) != json.dumps(value)


def shown_headers(headers: Any, key: str) -> dict[str, str]:
    kept = {}
    for name, value in headers.items():
        low = name.lower()
        if low in SECRET_HEADERS or low in WIRE_HEADERS or (key and key in value):
            continue
        kept[low] = value
    return kept


def credential(headers: Any) -> tuple[str, str]:
    bearer = headers.get("authorization", "")
    if bearer.lower().startswith("bearer "):
        return "bearer", bearer[7:].strip()
    if "x-api-key" in headers:
        return "x-api-key", headers["x-api-key"]
    return "none", ""


def summarize(exchange: Exchange, content_type: str, payload: bytes) -> None:
    """What a client would notice in an answer: how a stream ends, and which tools it is asked
    to call."""
    text = payload.decode("utf-8", "replace")
    if "text/event-stream" not in content_type:
        exchange.tool_calls = _tools(_json(text))
        return
    names: list[str] = []
    typed, done = "", False  # the last event's type; whether `data: [DONE]` came
    for line in text.splitlines():
        if line.startswith("event:"):
            typed = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
            event = _json(data)
            done = done or data == "[DONE]"
            if isinstance(event, dict):
                names += _streamed_tools(event)
                if isinstance(event.get("type"), str):
                    typed = event["type"]
    # Chat streams end in [DONE]; Responses and Messages streams in their last typed event (the
    # Responses ones of NanoGPT add a [DONE] after it, which the OpenAI SDKs skip).
    exchange.ends_with = typed or ("[DONE]" if done else "")
    exchange.tool_calls = list(dict.fromkeys(names))


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _tools(body: Any) -> list[str]:
    """Tool names a JSON answer calls: chat `tool_calls`, Responses `function_call` items,
    Anthropic `tool_use` blocks."""
    names: list[str] = []
    if not isinstance(body, dict):
        return names
    for choice in body.get("choices") or []:
        for call in (choice.get("message") or {}).get("tool_calls") or []:
            names.append(call["function"]["name"])
    for item in body.get("output") or []:
        if item.get("type") in ("function_call", "custom_tool_call"):
            names.append(item["name"])
    if body.get("type") == "message":
        for block in body.get("content") or []:
            if block.get("type") == "tool_use":
                names.append(block["name"])
    return names


def _streamed_tools(event: dict[str, Any]) -> list[str]:
    names = []
    for choice in event.get("choices") or []:
        for call in (choice.get("delta") or {}).get("tool_calls") or []:
            name = (call.get("function") or {}).get("name")
            if name:
                names.append(name)
    item = event.get("item") or event.get("content_block") or {}
    if event.get("type") in ("response.output_item.done", "content_block_start") and item.get(
        "type"
    ) in ("function_call", "custom_tool_call", "tool_use"):
        names.append(item["name"])
    return names


class Recorder:
    """The pass-through: `start()` it in front of `upstream`, point clients at `url`, read
    `exchanges` (grouped by the `label` set before each client step)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.label: tuple[str, str] = ("", "")
        self.exchanges: dict[tuple[str, str], list[Exchange]] = {}
        self.url = ""

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._relay)
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self._runner.cleanup()
        await self._session.close()

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        auth, key = credential(request.headers)
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = {"_non_json_bytes": len(raw)}
        exchange = Exchange(
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers=shown_headers(request.headers, key),
            body=body,
            auth=auth,
            key=key,
        )
        self.exchanges.setdefault(self.label, []).append(exchange)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in WIRE_HEADERS}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=raw
        ) as upstream:
            exchange.status = upstream.status
            exchange.content_type = upstream.headers.get("content-type", "")
            exchange.request_id = upstream.headers.get(REQUEST_ID, "")
            answer = web.StreamResponse(status=upstream.status)
            for name, value in upstream.headers.items():
                if name.lower() not in WIRE_HEADERS:
                    answer.headers.add(name, value)
            await answer.prepare(request)
            seen = bytearray()
            try:
                async for chunk in upstream.content.iter_any():
                    seen += chunk
                    await answer.write(chunk)
                await answer.write_eof()
            except ConnectionResetError:
                exchange.client_left = True  # as the client did: the gateway sees it go too
            finally:
                summarize(exchange, exchange.content_type, bytes(seen))
        return answer
