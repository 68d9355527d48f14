"""An offline stand-in for the NanoGPT API (https://nano-gpt.com/api), shaped like the real one.

Used by the gateway's demo mode and tests: fixed catalog (`demo_catalog`), deterministic replies,
SSE streaming. It imports nothing else of the `gateway` package, so it stays an honest,
independent upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway import demo_catalog as cat

Json = dict[str, Any]
Endpoint = Callable[[Request], Awaitable[Response]]

DEMO_TEAM_KEY: str = "demo-team-key"

_INTERNAL = ("subscription", "visible")
_TEXT_IDS = frozenset(m["id"] for m in cat.TEXT_MODELS)
_EMBEDDING_IDS = frozenset(m["id"] for m in cat.EMBEDDING_MODELS)
_REASONING = "The user wants a reply; answer with the demo greeting and echo their words."


class _ApiError(HTTPException):
    def __init__(self, status: int, message: str, code: str, **kwargs: Any) -> None:
        super().__init__(status, message, headers=kwargs.get("headers"))
        self.code, self.type = code, kwargs.get("type", "invalid_request_error")


async def _error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if not isinstance(exc, _ApiError):  # starlette's own 404 / 405 for unknown routes
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        message = f"No route for {request.method} {request.url.path}"
        exc = _ApiError(exc.status_code, message, code, headers=exc.headers)
    body = {"error": {"message": exc.detail, "type": exc.type, "code": exc.code}}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def _authed(endpoint: Endpoint) -> Endpoint:
    async def checked(request: Request) -> Response:
        expected = request.app.state.team_key.encode()
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        offered = [token if scheme.lower() == "bearer" else "", request.headers.get("x-api-key")]
        if not any(key and hmac.compare_digest(key.strip().encode(), expected) for key in offered):
            message = "Invalid or missing API key"
            raise _ApiError(401, message, "invalid_api_key", type="authentication_error")
        return await endpoint(request)

    return checked


def _model_view(m: Json, detailed: bool) -> Json:
    view = {"id": m["id"], "object": "model", "created": m["created"], "owned_by": m["owned_by"]}
    extra = {k: v for k, v in m.items() if k not in view and k not in _INTERNAL}
    return {**view, **extra} if detailed else view


def _models_endpoint(select: Callable[[Json], bool]) -> Endpoint:
    async def list_models(request: Request) -> Response:
        detailed = request.query_params.get("detailed", "").lower() in ("true", "1")
        data = [_model_view(m, detailed) for m in cat.TEXT_MODELS if select(m)]
        return JSONResponse({"object": "list", "data": data})

    return _authed(list_models)


def _fixed(payload: Json) -> Endpoint:
    async def fixed(request: Request) -> Response:
        return JSONResponse(payload)

    return _authed(fixed)


async def _parse(request: Request, known: Collection[str]) -> tuple[Json, str]:
    """The JSON object body and its `model`, which must be one of `known`."""
    try:
        body = await request.json()
    except ValueError:  # covers JSONDecodeError and UnicodeDecodeError
        raise _ApiError(400, "Request body is not valid JSON", "invalid_json") from None
    if not isinstance(body, dict):
        raise _ApiError(400, "Request body must be a JSON object", "invalid_request")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _ApiError(400, "'model' is required and must be a string", "missing_model")
    if model not in known:
        raise _ApiError(404, f"The model '{model}' does not exist", "model_not_found")
    return body, model


def _strings(value: Any, field: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(s, str) for s in items):
        raise _ApiError(400, f"'{field}' must be a string or a list of strings", "invalid_value")
    return items


def _text(content: Any) -> str:
    """Text of a message's content: a string, or the `text` parts of a content-part list."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    texts = [p.get("text") for p in parts if isinstance(p, dict) and p.get("type") == "text"]
    return " ".join(t for t in texts if isinstance(t, str))


def _reply(body: Json, said: str) -> tuple[str, str]:
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise _ApiError(400, "'max_tokens' must be a positive integer", "invalid_value")
    words = f"Hello from the NanoGPT demo upstream. You said: {said[:200]}".split()
    finish = "length" if limit is not None and len(words) > limit else "stop"
    return " ".join(words[:limit]), finish


def _usage(prompt: int, content: str, model: str) -> Json:
    reasoning = len(_REASONING.split()) if model.endswith(":thinking") else 0
    out = len(content.split()) + reasoning
    usage: Json = {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out}
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def _pieces(content: str) -> list[str]:
    words = content.split()
    return [w + " " for w in words[:-1]] + words[-1:]


def _base(prefix: str, obj: str, model: str) -> Json:
    ident = f"{prefix}-{uuid.uuid4().hex}"
    return {"id": ident, "object": obj, "created": int(time.time()), "model": model}


def _stream(request: Request, body: Json, base: Json, choices: list[Json], usage: Json) -> Response:
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    extra = {"usage": None} if include_usage else {}
    events = [{**base, "choices": [choice], **extra} for choice in choices]
    if include_usage:
        events.append({**base, "choices": [], "usage": usage})
    delay: float = request.app.state.chunk_delay_seconds

    async def sse() -> AsyncIterator[str]:
        for i, event in enumerate(events):
            if i and delay > 0:
                await asyncio.sleep(delay)
            yield f"data: {json.dumps(event)}\n\n"
        yield "data: [DONE]\n\n"

    headers = {"Cache-Control": "no-cache"}
    return StreamingResponse(sse(), media_type="text/event-stream", headers=headers)


async def chat_completions(request: Request) -> Response:
    body, model = await _parse(request, _TEXT_IDS)
    msgs = body.get("messages")
    if not (isinstance(msgs, list) and msgs and all(isinstance(m, dict) for m in msgs)):
        raise _ApiError(400, "'messages' must be a non-empty list of messages", "invalid_value")
    said = [_text(m.get("content")) for m in msgs if m.get("role") == "user"]
    content, finish = _reply(body, said[-1] if said else "")
    usage = _usage(sum(len(_text(m.get("content")).split()) + 3 for m in msgs), content, model)
    if body.get("stream") is True:
        deltas = [{"role": "assistant", "content": ""}] + [{"content": p} for p in _pieces(content)]
        choices: list[Json] = [{"index": 0, "delta": d, "finish_reason": None} for d in deltas]
        choices.append({"index": 0, "delta": {}, "finish_reason": finish})
        base = _base("chatcmpl", "chat.completion.chunk", model)
        return _stream(request, body, base, choices, usage)
    message = {"role": "assistant", "content": content}
    if model.endswith(":thinking"):
        message["reasoning_content"] = _REASONING
    choice = {"index": 0, "message": message, "finish_reason": finish}
    base = _base("chatcmpl", "chat.completion", model)
    return JSONResponse({**base, "choices": [choice], "usage": usage})


async def completions(request: Request) -> Response:
    body, model = await _parse(request, _TEXT_IDS)
    prompts = _strings(body.get("prompt"), "prompt")
    text, finish = _reply(body, prompts[-1])
    usage = _usage(sum(len(p.split()) for p in prompts), text, model)
    base = _base("cmpl", "text_completion", model)
    if body.get("stream") is True:
        pieces = [*_pieces(text), ""]
        choices = [{"text": t, "index": 0, "logprobs": None, "finish_reason": None} for t in pieces]
        choices[-1]["finish_reason"] = finish
        return _stream(request, body, base, choices, usage)
    choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
    return JSONResponse({**base, "choices": [choice], "usage": usage})


def _vector(text: str) -> list[float]:
    """Eight deterministic floats in [-1, 1) derived from the text's SHA-256."""
    halves = struct.unpack(">8h", hashlib.sha256(text.encode()).digest()[:16])
    return [round(n / 32768, 6) for n in halves]


async def embeddings(request: Request) -> Response:
    body, model = await _parse(request, _EMBEDDING_IDS)
    texts = _strings(body.get("input"), "input")
    data = [
        {"object": "embedding", "index": i, "embedding": _vector(s)} for i, s in enumerate(texts)
    ]
    words = sum(len(s.split()) for s in texts)
    usage = {"prompt_tokens": words, "total_tokens": words}
    return JSONResponse({"object": "list", "data": data, "model": model, "usage": usage})


def create_demo_upstream(
    *, team_key: str = DEMO_TEAM_KEY, chunk_delay_seconds: float = 0.0
) -> Starlette:
    """Build the stand-in app; every route lives under `/api` and requires `team_key`."""
    post = ["POST"]
    routes = [
        Route("/api/v1/models", _models_endpoint(lambda m: True)),
        Route("/api/subscription/v1/models", _models_endpoint(lambda m: m["subscription"])),
        Route("/api/paid/v1/models", _models_endpoint(lambda m: not m["subscription"])),
        Route("/api/personalized/v1/models", _models_endpoint(lambda m: m["visible"])),
        Route(
            "/api/v1/embedding-models", _fixed({"object": "list", "data": [*cat.EMBEDDING_MODELS]})
        ),
        Route("/api/v1/chat/completions", _authed(chat_completions), methods=post),
        Route("/api/v1/completions", _authed(completions), methods=post),
        Route("/api/v1/embeddings", _authed(embeddings), methods=post),
        Route("/api/check-balance", _fixed(cat.BALANCE), methods=post),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _error_response})
    app.state.team_key = team_key
    app.state.chunk_delay_seconds = chunk_delay_seconds
    return app
