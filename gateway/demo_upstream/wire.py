"""The demo upstream's HTTP plumbing, shared by every API family: the team-key check, reading a
JSON body and its model, the OpenAI and Anthropic error envelopes, and SSE framing.

Imports starlette and nothing of the `gateway` package beyond the demo's own modules.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

Json = dict[str, Any]
Endpoint = Callable[[Request], Awaitable[Response]]

ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}  # fmt: skip


class ApiError(HTTPException):
    def __init__(self, status: int, message: str, code: str, **kwargs: Any) -> None:
        super().__init__(status, message, headers=kwargs.get("headers"))
        self.code, self.type = code, kwargs.get("type", "invalid_request_error")
        self.param: str | None = kwargs.get("param")


def invalid(message: str, param: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, code, param=param)


async def error_response(request: Request, exc: Exception) -> Response:
    """OpenAI's error envelope, or Anthropic's on the Messages API, as NanoGPT answers."""
    assert isinstance(exc, HTTPException)
    if not isinstance(exc, ApiError):  # starlette's own 404 / 405 for unknown routes
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        message = f"No route for {request.method} {request.url.path}"
        exc = ApiError(exc.status_code, message, code, headers=exc.headers)
    param = {"param": exc.param} if exc.param else {}
    if request.url.path.startswith("/api/v1/messages"):
        kind = ANTHROPIC_ERRORS.get(exc.status_code, "api_error")
        body: Json = {"type": "error", "error": {"type": kind, "message": exc.detail, **param}}
    else:
        body = {"error": {"message": exc.detail, "type": exc.type, "code": exc.code, **param}}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def authed(endpoint: Endpoint) -> Endpoint:
    async def checked(request: Request) -> Response:
        expected = request.app.state.team_key.encode()
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        offered = [token if scheme.lower() == "bearer" else "", request.headers.get("x-api-key")]
        if not any(key and hmac.compare_digest(key.strip().encode(), expected) for key in offered):
            message = "Invalid or missing API key"
            raise ApiError(401, message, "invalid_api_key", type="authentication_error")
        return await endpoint(request)

    return checked


def model_of(model: Any, known: Collection[str]) -> str:
    if not isinstance(model, str) or not model:
        raise invalid("'model' is required and must be a string", "model", "missing_model")
    if model not in known:
        raise ApiError(404, f"The model '{model}' does not exist", "model_not_found", param="model")
    return model


async def parse(
    request: Request, known: Collection[str], default: str | None = None
) -> tuple[Json, str]:
    """The JSON object body and its `model` (or `default`), which must be one of `known`."""
    try:
        body = await request.json()
    except ValueError:  # covers JSONDecodeError and UnicodeDecodeError
        raise ApiError(400, "Request body is not valid JSON", "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object", "invalid_request")
    return body, model_of(body.get("model", default), known)


def strings(value: Any, field: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(s, str) for s in items):
        raise invalid(f"'{field}' must be a string or a list of strings", field)
    return items


def messages_of(value: Any) -> list[Json]:
    if not (isinstance(value, list) and value and all(isinstance(m, dict) for m in value)):
        raise invalid("'messages' must be a non-empty list of messages", "messages")
    return value


def limit_of(value: Any, field: str = "max_tokens", least: int = 1) -> int | None:
    """A token limit from the body: absent, or an integer of at least `least`."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or value < least
    ):
        raise invalid(f"'{field}' must be an integer of at least {least}", field)
    return value


def text_of(content: Any) -> str:
    """Text of a message's content: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    kinds = ("text", "input_text", "output_text")
    texts = [p.get("text") for p in parts if isinstance(p, dict) and p.get("type") in kinds]
    return " ".join(t for t in texts if isinstance(t, str))


def last_user_text(items: list[Json]) -> str:
    said = [text_of(m.get("content")) for m in items if m.get("role") == "user"]
    return said[-1] if said else ""


def base(prefix: str, obj: str, model: str) -> Json:
    ident = f"{prefix}-{uuid.uuid4().hex}"
    return {"id": ident, "object": obj, "created": int(time.time()), "model": model}


def frame(payload: Any, event: str | None = None) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"event: {event}\ndata: {data}\n\n" if event else f"data: {data}\n\n"


def sse(request: Request, frames: list[str]) -> Response:
    delay: float = request.app.state.chunk_delay_seconds

    async def send() -> AsyncIterator[str]:
        for i, each in enumerate(frames):
            if i and delay > 0:
                await asyncio.sleep(delay)
            yield each

    headers = {"Cache-Control": "no-cache"}
    return StreamingResponse(send(), media_type="text/event-stream", headers=headers)
