"""What the demo upstream answers with: its fixed catalogs and prices, and the pure shapes of its
answers (usage, NanoGPT's `x_nanogpt_pricing`, Responses and Anthropic Messages bodies and event
sequences, moderation verdicts), in the forms NanoGPT documents.

Used only by `demo_upstream`, which owns the HTTP side. Imports nothing from `gateway`.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
import uuid
from typing import Any

Json = dict[str, Any]


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

# Text models (GET /api/v1/models), varied like the real catalog; `subscription`/`visible` are
# the stand-in's own bookkeeping and never emitted.
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


def _media(mid: str, owner: str, name: str, modality: str, **rest: Any) -> Json:
    """A media catalog entry (image/audio models): `architecture` spelled like the real one."""
    source, _, target = modality.partition("->")
    return {"id": mid, "object": "model", "created": 1735689600, "owned_by": owner, "name": name,
            "description": f"{name} (demo)", "architecture": {
                "modality": modality, "input_modalities": source.split("+"),
                "output_modalities": [target]}, **rest}


_SIZES = ("256x256", "512x512", "1024x1024")
# GET /api/v1/image-models: USD per image, by output size (`pricing.per_image`).
IMAGE_MODELS: tuple[Json, ...] = tuple(
    _media(mid, owner, name, modality, category="image",
           pricing={"per_image": dict(zip(_SIZES, prices, strict=True)), "currency": "USD"},
           capabilities={"image_generation": True, "image_to_image": "image" in modality,
                         "inpainting": False, "nsfw": False},
           supported_parameters={"resolutions": list(_SIZES), "max_images": 4})
    for mid, owner, name, modality, prices in (
        ("hidream", "hidream", "HiDream I1 Full", "text->image", (0.01, 0.02, 0.04)),
        ("flux-schnell", "bfl", "FLUX.1 Schnell", "text->image", (0.002, 0.003, 0.003)),
        ("gpt-image-1", "openai", "GPT Image 1", "text+image->image", (0.02, 0.03, 0.042)))
)
# GET /api/v1/audio-models: speech-to-text per minute, text-to-speech per thousand characters.
AUDIO_MODELS: tuple[Json, ...] = (
    _media("Whisper-Large-V3", "openai", "Whisper Large V3", "audio->text", category="audio_stt",
           pricing={"per_minute": 0.01, "currency": "USD"},
           capabilities={"speech_to_text": True, "word_timestamps": True},
           supported_parameters={"supported_formats": ["MP3", "OGG", "WAV", "M4A", "AAC"],
                                 "max_file_size_mb": 500}),
    _media("Wizper", "fal", "Wizper", "audio->text", category="audio_stt",
           pricing={"per_minute": 0.01, "currency": "USD"}, capabilities={"speech_to_text": True},
           supported_parameters={"supported_formats": ["MP3", "WAV"]}),
    _media("tts-1", "openai", "OpenAI TTS", "text->audio", category="audio_tts",
           pricing={"per_thousand_chars": 0.015, "currency": "USD"},
           capabilities={"text_to_speech": True},
           supported_parameters={"max_chars": 4096, "voices": ["alloy", "echo", "nova"]}),
    _media("Kokoro-82m", "hexgrad", "Kokoro 82M", "text->audio", category="audio_tts",
           pricing={"per_thousand_chars": 0.001, "currency": "USD"},
           capabilities={"text_to_speech": True},
           supported_parameters={"max_chars": 5000, "voices": ["af_bella", "am_adam"]}),
)
# GET /api/v1/moderation-models
MODERATION_MODELS: tuple[Json, ...] = (
    {"id": "omni-moderation-latest", "object": "model", "created": 1704067200,
     "owned_by": "openai", "context_length": 32768,
     "capabilities": {"text": True, "image": True, "batch": True}, "pricing": _usd(0.1, 0)},
    {"id": "meta-llama/llama-guard-4-12b", "object": "model", "created": 1745971200,
     "owned_by": "meta", "context_length": 163840,
     "capabilities": {"text": True, "image": False, "batch": True}, "pricing": _usd(0.18, 0.18)},
)
BALANCE = {"usd_balance": "129.46956147", "nano_balance": "26.71801147",
           "nanoDepositAddress": "nano_1demo3dep0sit4ddress5tand1n8x9nan0gpt7gateway6offline1"}
# A 1x1 PNG.
DEMO_PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwA"
                            "ChwGA60e6kgAAAABJRU5ErkJggg==")
# The first bytes of an MP3: an ID3 tag and one silent MPEG frame header.
DEMO_MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + bytes(28)
# A WAV of 8 silent 16-bit samples at 8 kHz, mono.
DEMO_WAV = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 52, b"WAVE", b"fmt ", 16, 1, 1, 8000, 16000,
                       2, 16, b"data", 16) + bytes(16)
SOUND = {"mp3": ("audio/mpeg", DEMO_MP3), "wav": ("audio/wav", DEMO_WAV)}
ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
HARMS = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
         "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
         "sexual/minors", "violence", "violence/graphic")
TRIGGERS = {"kill": "violence", "hate": "hate", "steal": "illicit"}  # words the demo flags
# Fields of a Responses API object that echo settings the stand-in does not act on.
RESPONSE_ECHO: Json = {
    "previous_response_id": None, "tools": [], "tool_choice": "auto", "parallel_tool_calls": True,
    "truncation": "disabled", "text": {"format": {"type": "text"}, "verbosity": "medium"},
    "reasoning": None, "temperature": 1, "top_p": 1, "presence_penalty": 0,
    "frequency_penalty": 0, "top_logprobs": 0, "max_tool_calls": None, "user": None,
    "background": False, "safety_identifier": None, "prompt_cache_key": None,
    "service_tier": "auto"}
REASONING = "The user wants a reply; answer with the demo greeting and echo their words."
# fmt: on
_TEXT_PRICES = {m["id"]: m.get("pricing", {}) for m in TEXT_MODELS}


# --- the shapes of answers ----------------------------------------------------------------------


def words(text: Any) -> int:
    """The stand-in's token count: whitespace-separated words."""
    return len(text.split()) if isinstance(text, str) else 0


def pieces(content: str) -> list[str]:
    """`content` cut into the deltas a stream sends, one word each."""
    parts = content.split()
    return [w + " " for w in parts[:-1]] + parts[-1:]


def output_tokens(content: str, model: str) -> tuple[int, int]:
    """Output tokens of a reply (reasoning included) and the reasoning part of them."""
    reasoning = words(REASONING) if model.endswith(":thinking") else 0
    return words(content) + reasoning, reasoning


def chat_usage(prompt: int, content: str, model: str) -> Json:
    out, reasoning = output_tokens(content, model)
    usage: Json = {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out}
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def nanogpt_pricing(model: str, usage: Json) -> Json:
    """NanoGPT's `x_nanogpt_pricing`: the USD charged, from the catalog's per-million prices."""
    tokens_in, tokens_out = usage["prompt_tokens"], usage["completion_tokens"]
    price = _TEXT_PRICES.get(model, {})
    usd = (tokens_in * price.get("prompt", 0) + tokens_out * price.get("completion", 0)) / 1e6
    cost = round(usd, 12)
    return {"amount": cost, "currency": "USD", "cost": cost, "costUsd": cost,
            "inputTokens": tokens_in, "outputTokens": tokens_out, "cacheCost": 0,
            "paymentSource": "USD", "billedToTeam": False, "billedTeamId": None,
            "billedTeamName": None}  # fmt: skip


def vector(text: str) -> list[float]:
    """Eight deterministic floats in [-1, 1) derived from the text's SHA-256."""
    halves = struct.unpack(">8h", hashlib.sha256(text.encode()).digest()[:16])
    return [round(n / 32768, 6) for n in halves]


def response_object(body: Json, model: str, content: str, cut: bool, tokens_in: int) -> Json:
    """A finished Responses API object answering `body` with `content`."""
    tokens_out, reasoning = output_tokens(content, model)
    now, hexes, status = int(time.time()), uuid.uuid4().hex, "incomplete" if cut else "completed"
    text = {"type": "output_text", "text": content, "annotations": [], "logprobs": []}
    message = {"type": "message", "id": f"msg_{hexes}", "status": status, "role": "assistant",
               "content": [text]}  # fmt: skip
    usage = {"input_tokens": tokens_in, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": tokens_out, "output_tokens_details": {"reasoning_tokens": reasoning},
             "total_tokens": tokens_in + tokens_out}  # fmt: skip
    return {"id": f"resp_{hexes}", "object": "response", "created_at": now, "completed_at": now,
            "model": model, "status": status, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
            "instructions": body.get("instructions"), **RESPONSE_ECHO,
            "max_output_tokens": body.get("max_output_tokens"), "store": body.get("store") is True,
            "output": [message], "output_text": content, "usage": usage,
            "metadata": body.get("metadata") or {}}  # fmt: skip


def response_events(response: Json) -> list[Json]:
    """The Responses API stream of a finished `response`, event by event: usage comes on the
    last, `response.completed` (or `response.incomplete`)."""
    start = {**response, "status": "in_progress", "completed_at": None, "output": [],
             "output_text": "", "usage": None, "incomplete_details": None}  # fmt: skip
    events: list[Json] = [{"type": "response.created", "response": start},
                          {"type": "response.in_progress", "response": start}]  # fmt: skip
    for index, item in enumerate(response["output"]):
        events.append({"type": "response.output_item.added", "output_index": index,
                       "item": {**item, "status": "in_progress", "content": []}})  # fmt: skip
        for part in item["content"]:
            at = {"item_id": item["id"], "output_index": index, "content_index": 0}
            text = part["text"]
            events.append({"type": "response.content_part.added", **at,
                           "part": {**part, "text": ""}})  # fmt: skip
            events += [{"type": "response.output_text.delta", **at, "delta": piece,
                        "logprobs": []} for piece in pieces(text)]  # fmt: skip
            events.append({"type": "response.output_text.done", **at, "text": text,
                           "logprobs": []})  # fmt: skip
            events.append({"type": "response.content_part.done", **at, "part": part})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append({"type": f"response.{response['status']}", "response": response})
    return [{**event, "sequence_number": n} for n, event in enumerate(events)]


def anthropic_message(model: str, content: str, cut: bool, tokens_in: int, cached: int) -> Json:
    """An Anthropic Messages answer; `:thinking` models open with a thinking block."""
    tokens_out, reasoning = output_tokens(content, model)
    blocks: list[Json] = [{"type": "text", "text": content}]
    if reasoning:
        blocks.insert(0, {"type": "thinking", "thinking": REASONING, "signature": "demo"})
    usage = {"input_tokens": tokens_in, "output_tokens": tokens_out,
             "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached,
             "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
             "service_tier": "standard"}  # fmt: skip
    return {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant",
            "model": model, "content": blocks, "stop_reason": "max_tokens" if cut else "end_turn",
            "stop_sequence": None, "usage": usage}  # fmt: skip


def anthropic_events(message: Json) -> list[Json]:
    """The Messages stream of `message`: input usage on `message_start`, output tokens on
    `message_delta`."""
    usage = message["usage"]
    opening = {k: usage[k] for k in ("input_tokens", "cache_creation_input_tokens",
                                     "cache_read_input_tokens")} | {"output_tokens": 0}  # fmt: skip
    start = {**message, "content": [], "stop_reason": None, "usage": opening}
    events: list[Json] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        events.append({"type": "content_block_start", "index": index,
                       "content_block": {**block, kind: ""}})  # fmt: skip
        events += [{"type": "content_block_delta", "index": index,
                    "delta": {"type": f"{kind}_delta", kind: piece}}
                   for piece in pieces(block[kind])]  # fmt: skip
        events.append({"type": "content_block_stop", "index": index})
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    events.append({"type": "message_delta", "delta": delta,
                   "usage": {"output_tokens": usage["output_tokens"]}})  # fmt: skip
    return [*events, {"type": "message_stop"}]


def moderation_result(text: str) -> Json:
    """OpenAI's moderation result for one input: flagged when it holds a trigger word."""
    hits = {TRIGGERS[w] for w in text.lower().split() if w in TRIGGERS}
    return {"flagged": bool(hits), "categories": {c: c in hits for c in HARMS},
            "category_scores": {c: 0.97 if c in hits else 0.0001 for c in HARMS}}  # fmt: skip
