"""The demo upstream's fixed catalogs (text, embedding, image, audio and moderation models, with
NanoGPT's per-million, per-image, per-minute prices), the team balance and the canned media bytes,
in the forms NanoGPT documents. Pure data: imports nothing but the standard library.
"""

from __future__ import annotations

import base64
import struct
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
# fmt: on
TEXT_PRICES: dict[str, Json] = {m["id"]: m.get("pricing", {}) for m in TEXT_MODELS}
