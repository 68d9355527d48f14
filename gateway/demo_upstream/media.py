"""Embeddings, images, audio and moderations as NanoGPT answers them: deterministic vectors, the
demo PNG with NanoGPT's `cost` and balance left, a canned transcription, canned audio bytes, and
OpenAI's moderation results with the token usage NanoGPT bills by.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
import uuid
from email.parser import BytesParser
from email.policy import HTTP

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.demo_upstream import catalog as cat
from gateway.demo_upstream import wire
from gateway.demo_upstream.text import words
from gateway.demo_upstream.wire import ApiError, Json

EMBEDDING_IDS = frozenset(m["id"] for m in cat.EMBEDDING_MODELS)
IMAGES = {m["id"]: m for m in cat.IMAGE_MODELS}
STT_IDS = frozenset(m["id"] for m in cat.AUDIO_MODELS if m["category"] == "audio_stt")
TTS_IDS = frozenset(m["id"] for m in cat.AUDIO_MODELS if m["category"] == "audio_tts")
MODERATION_IDS = frozenset(m["id"] for m in cat.MODERATION_MODELS)
HARMS = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
         "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
         "sexual/minors", "violence", "violence/graphic")  # fmt: skip
TRIGGERS = {"kill": "violence", "hate": "hate", "steal": "illicit"}  # words the demo flags


def vector(text: str) -> list[float]:
    """Eight deterministic floats in [-1, 1) derived from the text's SHA-256."""
    halves = struct.unpack(">8h", hashlib.sha256(text.encode()).digest()[:16])
    return [round(n / 32768, 6) for n in halves]


def moderation_result(text: str) -> Json:
    """OpenAI's moderation result for one input: flagged when it holds a trigger word."""
    hits = {TRIGGERS[w] for w in text.lower().split() if w in TRIGGERS}
    return {"flagged": bool(hits), "categories": {c: c in hits for c in HARMS},
            "category_scores": {c: 0.97 if c in hits else 0.0001 for c in HARMS}}  # fmt: skip


def encoded(floats: list[float]) -> str:
    """An embedding as `encoding_format: base64` sends it: little-endian float32s, base64."""
    return base64.b64encode(struct.pack(f"<{len(floats)}f", *floats)).decode()


async def embeddings(request: Request) -> Response:
    """Vectors as lists of floats, or base64 when asked (the openai SDKs ask by default)."""
    body, model = await wire.parse(request, EMBEDDING_IDS)
    texts = wire.strings(body.get("input"), "input")
    form = body.get("encoding_format", "float")
    if form not in ("float", "base64"):
        raise wire.invalid("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    vectors = [vector(s) for s in texts]
    data = [
        {"object": "embedding", "index": i, "embedding": encoded(v) if form == "base64" else v}
        for i, v in enumerate(vectors)
    ]
    tokens = sum(words(s) for s in texts)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return JSONResponse({"object": "list", "data": data, "model": model, "usage": usage})


async def image_generations(request: Request) -> Response:
    """OpenAI-style image generation, answered with NanoGPT's `cost` (USD) and balance left."""
    body, model = await wire.parse(request, IMAGES, default="hidream")
    prompt, n = body.get("prompt"), body.get("n", 1)
    size, kind = body.get("size", "1024x1024"), body.get("response_format", "b64_json")
    if not isinstance(prompt, str) or not prompt.strip():
        raise wire.invalid("'prompt' is required and must be a non-empty string", "prompt")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 4:
        raise wire.invalid("'n' must be an integer from 1 to 4", "n")
    prices = IMAGES[model]["pricing"]["per_image"]
    if size not in prices:
        raise wire.invalid(f"'size' must be one of: {', '.join(prices)}", "size")
    if kind not in ("b64_json", "url"):
        raise wire.invalid("'response_format' must be 'b64_json' or 'url'", "response_format")
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
        raise ApiError(400, "Multipart body could not be parsed", "invalid_multipart_body")
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
    wire.model_of(text.get("model"), STT_IDS)
    if "file" not in fields:
        raise wire.invalid("'file' is required", "file", "missing_required_parameter")
    name, size = fields["file"][0] or "audio", len(fields["file"][1])
    said = f"Demo transcription of {name} ({size} bytes)."
    duration = round(size / 16_000, 2)  # as if a 128 kbit/s MP3
    return JSONResponse(
        {"text": said, "language": text.get("language") or "en", "duration": duration}
    )


async def speech(request: Request) -> Response:
    body, _ = await wire.parse(request, TTS_IDS)
    if not isinstance(body.get("input"), str) or not body["input"]:
        raise wire.invalid("'input' is required and must be a non-empty string", "input")
    kind = body.get("response_format", "mp3")
    if kind not in cat.SOUND:
        formats = ", ".join(cat.SOUND)
        message = f"'response_format' must be one of: {formats}"
        raise wire.invalid(message, "response_format", "unsupported_format")
    media_type, audio = cat.SOUND[kind]
    return Response(audio, media_type=media_type)


async def moderations(request: Request) -> Response:
    """OpenAI's moderation results, one per input, plus the token usage NanoGPT bills by."""
    body, model = await wire.parse(request, MODERATION_IDS, default="omni-moderation-latest")
    given = body.get("input")
    if isinstance(given, list) and given and all(isinstance(p, dict) for p in given):
        inputs = [wire.text_of(given)]  # content parts: one (possibly multimodal) input
    else:
        inputs = wire.strings(given, "input")
        if not any(s.strip() for s in inputs):
            raise wire.invalid("'input' has nothing to moderate", "input", "empty_input")
    tokens_in, tokens_out = sum(words(s) + 3 for s in inputs), len(inputs)
    usage = {"prompt_tokens": tokens_in, "completion_tokens": tokens_out}
    results = [moderation_result(s) for s in inputs]
    answer = {"id": f"modr-{uuid.uuid4().hex}", "model": model, "results": results}
    return JSONResponse({**answer, "usage": {**usage, "total_tokens": tokens_in + tokens_out}})
