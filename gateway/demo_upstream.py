"""An offline stand-in for the NanoGPT API (https://nano-gpt.com/api), shaped like the real one.

Used by the gateway's demo mode and tests: fixed catalog, deterministic replies, SSE streaming.
It imports nothing from the `gateway` package, so it stays an honest, independent upstream.
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

Json = dict[str, Any]
Endpoint = Callable[[Request], Awaitable[Response]]

DEMO_TEAM_KEY: str = "demo-team-key"


# fmt: off
def _usd(prompt: float, completion: float) -> Json:
    return {"prompt": prompt, "completion": completion, "currency": "USD",
            "unit": "per_million_tokens"}


def _thinking(base: Json, **changes: Any) -> Json:
    """The `:thinking` variant of a catalog entry: the same model with reasoning switched on."""
    return {**base, "id": f"{base['id']}:thinking", "name": f"{base['name']} (Thinking)",
            "description": f"{base['description']}, with extended thinking", "visible": False,
            "capabilities": {**base["capabilities"], "reasoning": True}, "category": "reasoning",
            **changes}


_OPEN = {"status": "allowed", "label": "License permits distillation",
         "basis": "permissive-open-weights", "sourceUrl": "https://huggingface.co/models",
         "note": "Open-weights license allows output-based training."}
_OPENAI = {"status": "disallowed", "label": "Provider terms prohibit distillation",
           "basis": "provider-terms", "sourceUrl": "https://openai.com/policies/terms-of-use",
           "note": "Outputs may not be used to develop competing models."}
_ANTHROPIC = {**_OPENAI, "sourceUrl": "https://www.anthropic.com/legal/commercial-terms"}
_UNREVIEWED = {"status": "unknown", "label": "Distillation status unknown", "basis": "unreviewed",
               "sourceUrl": "https://huggingface.co/moonshotai/Kimi-K2.5",
               "note": "This variant's terms have not been reviewed yet."}
_TOOLS = {"vision": False, "reasoning": False, "tool_calling": True, "structured_output": True}
_ALL = {**_TOOLS, "vision": True, "parallel_tool_calls": True, "pdf_upload": True}
_OPUS = {"id": "anthropic/claude-opus-4.6", "created": 1770249600, "owned_by": "anthropic",
         "name": "Claude Opus 4.6", "description": "Anthropic's top-tier model for deep work",
         "context_length": 200000, "max_output_tokens": 64000, "capabilities": _ALL,
         "pricing": _usd(15.0, 75.0), "icon_url": "/icons/Anthropic.svg", "cost_estimate": "$$$",
         "category": "flagship", "distillationPolicy": _ANTHROPIC, "subscription": False,
         "visible": True}
_DEEPSEEK = {"id": "deepseek/deepseek-v3.2", "created": 1764547200, "owned_by": "deepseek",
             "name": "DeepSeek V3.2", "description": "Efficient open-weights chat model",
             "context_length": 163840, "max_output_tokens": 65536, "capabilities": _TOOLS,
             "pricing": _usd(0.28, 0.42), "icon_url": "/icons/DeepSeek.svg",
             "cost_estimate": {"cheap": True}, "category": "flagship",
             "distillationPolicy": _OPEN, "subscription": True, "visible": True}
_KIMI = {"id": "moonshotai/kimi-k2.5", "created": 1769472000, "owned_by": "moonshotai",
         "name": "Kimi K2.5", "description": "Moonshot's multimodal agentic MoE model",
         "context_length": 262144, "max_output_tokens": 32768, "pricing": _usd(0.6, 2.5),
         "capabilities": {**_TOOLS, "vision": True, "parallel_tool_calls": True},
         "icon_url": "/icons/Moonshot.svg", "cost_estimate": "$", "category": "flagship",
         "distillationPolicy": _OPEN, "subscription": True, "visible": True}

# Fixed demo catalog, varied like the real one; `subscription`/`visible` are never emitted.
TEXT_MODELS: tuple[Json, ...] = (
    {"id": "openai/gpt-5.2", "created": 1765324800, "owned_by": "openai", "name": "GPT-5.2",
     "description": "OpenAI's flagship general-purpose model", "context_length": 400000,
     "max_output_tokens": 128000, "capabilities": {**_ALL, "reasoning": True},
     "pricing": _usd(1.25, 10.0), "icon_url": "/icons/OpenAI.svg", "cost_estimate": "$$",
     "category": "flagship", "distillationPolicy": _OPENAI, "subscription": False, "visible": True},
    _OPUS,
    _thinking(_OPUS),
    _DEEPSEEK,
    _thinking(_DEEPSEEK, beta_flags={"interleaved_thinking": True}, visible=True),
    {"id": "qwen/qwen3-coder-next", "created": 1769904000, "owned_by": "qwen",
     "name": "Qwen3 Coder Next", "description": "Agentic coding model from the Qwen team",
     "context_length": 262144, "max_output_tokens": 65536, "pricing": _usd(0.2, 1.5),
     "icon_url": "/icons/Qwen.svg", "cost_estimate": "$", "category": "coding",
     "distillationPolicy": _OPEN, "subscription": True, "visible": True},
    _KIMI,
    _thinking(_KIMI, context_length=None, max_output_tokens=None, cost_estimate="$$",
              distillationPolicy=_UNREVIEWED),
    {"id": "zai-org/glm-4.7", "created": 1766448000, "owned_by": "zai-org", "name": "GLM 4.7",
     "description": "Zhipu's open-weights model for coding and agents", "context_length": 202752,
     "max_output_tokens": 131072, "capabilities": {**_TOOLS, "reasoning": True},
     "icon_url": "/icons/Zhipu.svg", "cost_estimate": "$", "category": "flagship",
     "distillationPolicy": _OPEN, "subscription": True, "visible": False},
    {"id": "meta-llama/llama-3.3-70b-instruct", "created": 1733443200, "owned_by": "meta",
     "name": "Llama 3.3 70B Instruct", "description": "Meta's multilingual 70B instruct model",
     "context_length": 131072, "max_output_tokens": 16384, "pricing": _usd(0.13, 0.39),
     "capabilities": {"vision": False, "tool_calling": True}, "icon_url": "/icons/Meta.svg",
     "cost_estimate": {"cheap": True}, "category": "mini", "subscription": True, "visible": False},
)
EMBEDDING_MODELS: tuple[Json, ...] = tuple(
    {"id": mid, "object": "model", "created": 1705948997, "owned_by": "openai", "name": name,
     "dimensions": dims, "max_input_tokens": 8191, "pricing": _usd(price, 0)}
    for mid, name, dims, price in (("text-embedding-3-small", "Text Embedding 3 Small", 1536, 0.02),
                                   ("text-embedding-3-large", "Text Embedding 3 Large", 3072, 0.13))
)
_BALANCE = {"usd_balance": "129.46956147", "nano_balance": "26.71801147",
            "nanoDepositAddress": "nano_1demo3dep0sit4ddress5tand1n8x9nan0gpt7gateway6offline1"}
# fmt: on
_INTERNAL = ("subscription", "visible")
_TEXT_IDS = frozenset(m["id"] for m in TEXT_MODELS)
_EMBEDDING_IDS = frozenset(m["id"] for m in EMBEDDING_MODELS)
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
        data = [_model_view(m, detailed) for m in TEXT_MODELS if select(m)]
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
        Route("/api/v1/embedding-models", _fixed({"object": "list", "data": [*EMBEDDING_MODELS]})),
        Route("/api/v1/chat/completions", _authed(chat_completions), methods=post),
        Route("/api/v1/completions", _authed(completions), methods=post),
        Route("/api/v1/embeddings", _authed(embeddings), methods=post),
        Route("/api/check-balance", _fixed(_BALANCE), methods=post),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _error_response})
    app.state.team_key = team_key
    app.state.chunk_delay_seconds = chunk_delay_seconds
    return app
