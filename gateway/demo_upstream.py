"""An offline stand-in for the NanoGPT API (https://nano-gpt.com/api), shaped like the real one.

Used by the gateway's demo mode and tests: deterministic replies from a fixed catalog, SSE
streaming, NanoGPT's `x_nanogpt_pricing` charge on chat and text completions, the Responses and
Anthropic Messages APIs, images, audio and moderations. This module is the HTTP side; the
catalog and the shapes of the answers live in `demo_catalog`. Neither imports anything else of
the `gateway` package, so the stand-in stays an honest, independent upstream.

Every route needs the team key and lives under `/api`, except `/v1/images/generations`, which
NanoGPT documents at the host root, and the image file its `url` answers point at.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from email.parser import BytesParser
from email.policy import HTTP
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
_BASIC = ("id", "object", "created", "owned_by")
_TEXT_IDS = frozenset(m["id"] for m in cat.TEXT_MODELS)
_EMBEDDING_IDS = frozenset(m["id"] for m in cat.EMBEDDING_MODELS)
_IMAGES = {m["id"]: m for m in cat.IMAGE_MODELS}
_STT_IDS = frozenset(m["id"] for m in cat.AUDIO_MODELS if m["category"] == "audio_stt")
_TTS_IDS = frozenset(m["id"] for m in cat.AUDIO_MODELS if m["category"] == "audio_tts")
_MODERATION_IDS = frozenset(m["id"] for m in cat.MODERATION_MODELS)


class _ApiError(HTTPException):
    def __init__(self, status: int, message: str, code: str, **kwargs: Any) -> None:
        super().__init__(status, message, headers=kwargs.get("headers"))
        self.code, self.type = code, kwargs.get("type", "invalid_request_error")
        self.param: str | None = kwargs.get("param")


def _invalid(message: str, param: str, code: str = "invalid_value") -> _ApiError:
    return _ApiError(400, message, code, param=param)


async def _error_response(request: Request, exc: Exception) -> Response:
    """OpenAI's error envelope, or Anthropic's on the Messages API, as NanoGPT answers."""
    assert isinstance(exc, HTTPException)
    if not isinstance(exc, _ApiError):  # starlette's own 404 / 405 for unknown routes
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        message = f"No route for {request.method} {request.url.path}"
        exc = _ApiError(exc.status_code, message, code, headers=exc.headers)
    param = {"param": exc.param} if exc.param else {}
    if request.url.path.startswith("/api/v1/messages"):
        kind = cat.ANTHROPIC_ERRORS.get(exc.status_code, "api_error")
        body: Json = {"type": "error", "error": {"type": kind, "message": exc.detail, **param}}
    else:
        body = {"error": {"message": exc.detail, "type": exc.type, "code": exc.code, **param}}
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


def _catalog(models: tuple[Json, ...], types: dict[str, str] | None = None) -> Endpoint:
    """A media catalog: `detailed` defaults to true, `meta` counts, `type` picks a category."""
    types = types or {}

    async def listing(request: Request) -> Response:
        chosen = request.query_params.get("type", "all")
        if chosen != "all" and chosen not in types:
            raise _invalid(f"'type' must be one of: all, {', '.join(types)}", "type")
        data = [m for m in models if chosen == "all" or m["category"] == types[chosen]]
        if request.query_params.get("detailed", "true").lower() in ("false", "0"):
            data = [{k: m[k] for k in _BASIC} for m in data]
        meta = {"count": len(data), "generated_at": "2026-01-01T00:00:00.000Z"}
        meta |= {"filter": {"type": chosen}} if chosen != "all" else {}
        return JSONResponse({"object": "list", "data": data, "meta": meta})

    return _authed(listing)


def _fixed(payload: Json) -> Endpoint:
    async def fixed(request: Request) -> Response:
        return JSONResponse(payload)

    return _authed(fixed)


def _model(model: Any, known: Collection[str]) -> str:
    if not isinstance(model, str) or not model:
        raise _invalid("'model' is required and must be a string", "model", "missing_model")
    if model not in known:
        raise _ApiError(
            404, f"The model '{model}' does not exist", "model_not_found", param="model"
        )
    return model


async def _parse(
    request: Request, known: Collection[str], default: str | None = None
) -> tuple[Json, str]:
    """The JSON object body and its `model` (or `default`), which must be one of `known`."""
    try:
        body = await request.json()
    except ValueError:  # covers JSONDecodeError and UnicodeDecodeError
        raise _ApiError(400, "Request body is not valid JSON", "invalid_json") from None
    if not isinstance(body, dict):
        raise _ApiError(400, "Request body must be a JSON object", "invalid_request")
    return body, _model(body.get("model", default), known)


def _strings(value: Any, field: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(s, str) for s in items):
        raise _invalid(f"'{field}' must be a string or a list of strings", field)
    return items


def _messages(value: Any) -> list[Json]:
    if not (isinstance(value, list) and value and all(isinstance(m, dict) for m in value)):
        raise _invalid("'messages' must be a non-empty list of messages", "messages")
    return value


def _text(content: Any) -> str:
    """Text of a message's content: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    kinds = ("text", "input_text", "output_text")
    texts = [p.get("text") for p in parts if isinstance(p, dict) and p.get("type") in kinds]
    return " ".join(t for t in texts if isinstance(t, str))


def _last_user_text(items: list[Json]) -> str:
    said = [_text(m.get("content")) for m in items if m.get("role") == "user"]
    return said[-1] if said else ""


def _reply(said: str, limit: Any, field: str = "max_tokens", least: int = 1) -> tuple[str, bool]:
    """The demo reply to `said`, cut to `limit` words, and whether it was cut."""
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or limit < least
    ):
        raise _invalid(f"'{field}' must be an integer of at least {least}", field)
    words = f"Hello from the NanoGPT demo upstream. You said: {said[:200]}".split()
    return " ".join(words[:limit]), limit is not None and len(words) > limit


def _frame(payload: Any, event: str | None = None) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"event: {event}\ndata: {data}\n\n" if event else f"data: {data}\n\n"


def _sse(request: Request, frames: list[str]) -> Response:
    delay: float = request.app.state.chunk_delay_seconds

    async def sse() -> AsyncIterator[str]:
        for i, frame in enumerate(frames):
            if i and delay > 0:
                await asyncio.sleep(delay)
            yield frame

    headers = {"Cache-Control": "no-cache"}
    return StreamingResponse(sse(), media_type="text/event-stream", headers=headers)


def _stream(request: Request, body: Json, base: Json, choices: list[Json], usage: Json) -> Response:
    """Chunks as NanoGPT streams them: the finish chunk itself carries `x_nanogpt_pricing` and,
    when asked with `stream_options.include_usage`, `usage`; no empty-choices chunk follows."""
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    *content, last = choices
    events = [
        {**base, "choices": [c], **({"usage": None} if include_usage else {})} for c in content
    ]
    final = {**base, "choices": [last], **({"usage": usage} if include_usage else {})}
    events.append({**final, "x_nanogpt_pricing": cat.nanogpt_pricing(base["model"], usage)})
    return _sse(request, [*map(_frame, events), _frame("[DONE]")])


def _answer(request: Request, body: Json, base: Json, choices: list[Json], usage: Json) -> Response:
    """Chat or text completion: streamed, or one JSON answer with `x_nanogpt_pricing` on top."""
    if body.get("stream") is True:
        return _stream(request, body, base, choices, usage)
    pricing = cat.nanogpt_pricing(base["model"], usage)
    return JSONResponse({**base, "choices": choices, "usage": usage, "x_nanogpt_pricing": pricing})


async def chat_completions(request: Request) -> Response:
    body, model = await _parse(request, _TEXT_IDS)
    msgs = _messages(body.get("messages"))
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    content, cut = _reply(_last_user_text(msgs), limit)
    finish = "length" if cut else "stop"
    usage = cat.chat_usage(
        sum(cat.words(_text(m.get("content"))) + 3 for m in msgs), content, model
    )
    if body.get("stream") is True:
        deltas: list[Json] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": p} for p in cat.pieces(content)] + [{}]
        choices: list[Json] = [{"index": 0, "delta": d, "finish_reason": None} for d in deltas]
        choices[-1]["finish_reason"] = finish
        base = _base("chatcmpl", "chat.completion.chunk", model)
        return _stream(request, body, base, choices, usage)
    message = {"role": "assistant", "content": content}
    if model.endswith(":thinking"):
        message["reasoning_content"] = cat.REASONING
    choice = {"index": 0, "message": message, "finish_reason": finish}
    return _answer(request, body, _base("chatcmpl", "chat.completion", model), [choice], usage)


async def completions(request: Request) -> Response:
    body, model = await _parse(request, _TEXT_IDS)
    prompts = _strings(body.get("prompt"), "prompt")
    text, cut = _reply(prompts[-1], body.get("max_tokens"))
    usage = cat.chat_usage(sum(cat.words(p) for p in prompts), text, model)
    streaming = body.get("stream") is True
    texts = [*cat.pieces(text), ""] if streaming else [text]
    choices = [{"text": t, "index": 0, "logprobs": None, "finish_reason": None} for t in texts]
    choices[-1]["finish_reason"] = "length" if cut else "stop"
    return _answer(request, body, _base("cmpl", "text_completion", model), choices, usage)


def _base(prefix: str, obj: str, model: str) -> Json:
    ident = f"{prefix}-{uuid.uuid4().hex}"
    return {"id": ident, "object": obj, "created": int(time.time()), "model": model}


async def responses(request: Request) -> Response:
    """The OpenAI Responses API: `input` as a string or a list of items, `instructions`."""
    body, model = await _parse(request, _TEXT_IDS)
    instructions, items = body.get("instructions"), body.get("input")
    if instructions is not None and not isinstance(instructions, str):
        raise _invalid("'instructions' must be a string", "instructions")
    items = [{"role": "user", "content": items}] if isinstance(items, str) else items
    if not (isinstance(items, list) and items and all(isinstance(i, dict) for i in items)):
        raise _invalid("'input' must be a string or a non-empty list of input items", "input")
    limit = body.get("max_output_tokens")
    content, cut = _reply(_last_user_text(items), limit, "max_output_tokens", 16)
    tokens_in = sum(cat.words(_text(i.get("content"))) + 3 for i in items)
    response = cat.response_object(body, model, content, cut, tokens_in + cat.words(instructions))
    if body.get("stream") is not True:
        return JSONResponse(response)
    events = [_frame(event, event["type"]) for event in cat.response_events(response)]
    return _sse(request, [*events, _frame("[DONE]")])


def _anthropic_input(body: Json) -> tuple[int, int, str]:
    """Input tokens read fresh and from cache (everything up to the last `cache_control`
    block), and the last user text, of an Anthropic Messages request."""
    msgs = _messages(body.get("messages"))
    contents = [body.get("system"), *(m.get("content") for m in msgs)]
    blocks = [b for c in contents for b in ([{"text": c}] if isinstance(c, str) else c or [])]
    blocks = [b for b in blocks if isinstance(b, dict) and isinstance(b.get("text"), str)]
    marked = [i for i, b in enumerate(blocks) if b.get("cache_control")]
    cached = sum(cat.words(b["text"]) for b in blocks[: marked[-1] + 1]) if marked else 0
    total = sum(cat.words(b["text"]) for b in blocks) + 3 * len(msgs)
    return total - cached, cached, _last_user_text(msgs)


async def messages(request: Request) -> Response:
    """Anthropic's Messages API (any text model), with Anthropic's named stream events."""
    body, model = await _parse(request, _TEXT_IDS)
    if "max_tokens" not in body:
        raise _invalid("max_tokens is required", "max_tokens")
    tokens_in, cached, said = _anthropic_input(body)
    content, cut = _reply(said, body["max_tokens"])
    message = cat.anthropic_message(model, content, cut, tokens_in, cached)
    if body.get("stream") is not True:
        return JSONResponse(message)
    return _sse(request, [_frame(e, e["type"]) for e in cat.anthropic_events(message)])


async def count_tokens(request: Request) -> Response:
    body, _ = await _parse(request, _TEXT_IDS)
    tokens_in, cached, _said = _anthropic_input(body)
    return JSONResponse({"input_tokens": tokens_in + cached})


async def embeddings(request: Request) -> Response:
    body, model = await _parse(request, _EMBEDDING_IDS)
    texts = _strings(body.get("input"), "input")
    data = [
        {"object": "embedding", "index": i, "embedding": cat.vector(s)} for i, s in enumerate(texts)
    ]
    words = sum(cat.words(s) for s in texts)
    usage = {"prompt_tokens": words, "total_tokens": words}
    return JSONResponse({"object": "list", "data": data, "model": model, "usage": usage})


async def image_generations(request: Request) -> Response:
    """OpenAI-style image generation, answered with NanoGPT's `cost` (USD) and balance left."""
    body, model = await _parse(request, _IMAGES, default="hidream")
    prompt, n = body.get("prompt"), body.get("n", 1)
    size, kind = body.get("size", "1024x1024"), body.get("response_format", "b64_json")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _invalid("'prompt' is required and must be a non-empty string", "prompt")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 4:
        raise _invalid("'n' must be an integer from 1 to 4", "n")
    prices = _IMAGES[model]["pricing"]["per_image"]
    if size not in prices:
        raise _invalid(f"'size' must be one of: {', '.join(prices)}", "size")
    if kind not in ("b64_json", "url"):
        raise _invalid("'response_format' must be 'b64_json' or 'url'", "response_format")
    image = {"b64_json": base64.b64encode(cat.DEMO_PNG).decode()}
    if kind == "url":
        image = {"url": f"{request.base_url}demo/image.png"}
    cost = round(prices[size] * n, 8)
    left = round(float(cat.BALANCE["usd_balance"]) - cost, 8)
    data = [dict(image) for _ in range(n)]
    answer = {"created": int(time.time()), "data": data, "cost": cost, "paymentSource": "USD"}
    return JSONResponse({**answer, "remainingBalance": left})


async def demo_image(request: Request) -> Response:
    return Response(cat.DEMO_PNG, media_type="image/png")


async def _form(request: Request) -> dict[str, tuple[str | None, bytes]]:
    """A multipart/form-data body's fields by name: (file name or None, bytes). Read with the
    standard library: starlette's `request.form()` needs python-multipart, not a dependency."""
    head = f"Content-Type: {request.headers.get('content-type', '')}\r\n\r\n".encode()
    form = BytesParser(policy=HTTP).parsebytes(head + await request.body())
    if not form.is_multipart():
        raise _ApiError(400, "Multipart body could not be parsed", "invalid_multipart_body")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in form.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            fields[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


async def transcriptions(request: Request) -> Response:
    """Speech to text from a multipart/form-data `file` and `model` (`language` optional)."""
    fields = await _form(request)
    text = {k: v.decode(errors="replace") for k, (file, v) in fields.items() if file is None}
    _model(text.get("model"), _STT_IDS)
    if "file" not in fields:
        raise _invalid("'file' is required", "file", "missing_required_parameter")
    name, size = fields["file"][0] or "audio", len(fields["file"][1])
    said = f"Demo transcription of {name} ({size} bytes)."
    duration = round(size / 16_000, 2)  # as if a 128 kbit/s MP3
    return JSONResponse(
        {"text": said, "language": text.get("language") or "en", "duration": duration}
    )


async def speech(request: Request) -> Response:
    body, _ = await _parse(request, _TTS_IDS)
    if not isinstance(body.get("input"), str) or not body["input"]:
        raise _invalid("'input' is required and must be a non-empty string", "input")
    kind = body.get("response_format", "mp3")
    if kind not in cat.SOUND:
        formats = ", ".join(cat.SOUND)
        message = f"'response_format' must be one of: {formats}"
        raise _invalid(message, "response_format", "unsupported_format")
    media_type, audio = cat.SOUND[kind]
    return Response(audio, media_type=media_type)


async def moderations(request: Request) -> Response:
    """OpenAI's moderation results, one per input, plus the token usage NanoGPT bills by."""
    body, model = await _parse(request, _MODERATION_IDS, default="omni-moderation-latest")
    given = body.get("input")
    if isinstance(given, list) and given and all(isinstance(p, dict) for p in given):
        inputs = [_text(given)]  # content parts: one (possibly multimodal) input
    else:
        inputs = _strings(given, "input")
        if not any(s.strip() for s in inputs):
            raise _invalid("'input' has nothing to moderate", "input", "empty_input")
    tokens_in, tokens_out = sum(cat.words(s) + 3 for s in inputs), len(inputs)
    usage = {"prompt_tokens": tokens_in, "completion_tokens": tokens_out}
    results = [cat.moderation_result(s) for s in inputs]
    answer = {"id": f"modr-{uuid.uuid4().hex}", "model": model, "results": results}
    return JSONResponse({**answer, "usage": {**usage, "total_tokens": tokens_in + tokens_out}})


def create_demo_upstream(
    *, team_key: str = DEMO_TEAM_KEY, chunk_delay_seconds: float = 0.0
) -> Starlette:
    """Build the stand-in app; every route but the demo image file requires `team_key`."""
    post = ["POST"]
    audio_types = {"stt": "audio_stt", "tts": "audio_tts"}
    routes = [
        Route("/api/v1/models", _models_endpoint(lambda m: True)),
        Route("/api/subscription/v1/models", _models_endpoint(lambda m: m["subscription"])),
        Route("/api/paid/v1/models", _models_endpoint(lambda m: not m["subscription"])),
        Route("/api/personalized/v1/models", _models_endpoint(lambda m: m["visible"])),
        Route(
            "/api/v1/embedding-models", _fixed({"object": "list", "data": [*cat.EMBEDDING_MODELS]})
        ),
        Route("/api/v1/image-models", _catalog(cat.IMAGE_MODELS)),
        Route("/api/v1/audio-models", _catalog(cat.AUDIO_MODELS, audio_types)),
        Route("/api/v1/moderation-models", _catalog(cat.MODERATION_MODELS)),
        Route("/api/v1/chat/completions", _authed(chat_completions), methods=post),
        Route("/api/v1/completions", _authed(completions), methods=post),
        Route("/api/v1/responses", _authed(responses), methods=post),
        Route("/api/v1/messages", _authed(messages), methods=post),
        Route("/api/v1/messages/count_tokens", _authed(count_tokens), methods=post),
        Route("/api/v1/embeddings", _authed(embeddings), methods=post),
        Route("/api/v1/images/generations", _authed(image_generations), methods=post),
        Route("/v1/images/generations", _authed(image_generations), methods=post),
        Route("/demo/image.png", demo_image),
        Route("/api/v1/audio/transcriptions", _authed(transcriptions), methods=post),
        Route("/api/v1/audio/speech", _authed(speech), methods=post),
        Route("/api/v1/moderations", _authed(moderations), methods=post),
        Route("/api/check-balance", _fixed(cat.BALANCE), methods=post),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _error_response})
    app.state.team_key = team_key
    app.state.chunk_delay_seconds = chunk_delay_seconds
    return app
