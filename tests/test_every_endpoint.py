"""Every kind of endpoint end to end: the real `openai` SDK (and Claude Code's request shape)
through the gateway in front of the demo upstream, which answers in NanoGPT's shapes, and the
ledger row each call leaves."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ledger_rows
from tests.test_openai_sdk import clients

pytestmark = pytest.mark.anyio
CLAUDE = "anthropic/claude-opus-4.6"


def rows(tmp_path: Path) -> list[dict[str, Any]]:
    return ledger_rows(tmp_path / "gateway-usage.db")


async def test_responses_json_and_streamed(tmp_path: Path) -> None:
    async with clients(tmp_path) as (sdk, _):
        answer = await sdk.responses.create(model="deepseek/deepseek-v3.2", input="Hello")
        assert answer.output_text
        stream = await sdk.responses.create(model="deepseek/deepseek-v3.2", input="Hi", stream=True)
        events = [event.type async for event in stream]
        assert events[-1] == "response.completed"
    for row in rows(tmp_path):
        assert (row["endpoint"], row["outcome"], row["unmetered"]) == ("responses", "ok", None)
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
        assert row["cost_source"] in ("charged", "catalog") and Decimal(row["cost_usd"]) > 0


async def test_claude_code_messages_json_and_streamed(tmp_path: Path) -> None:
    async with clients(tmp_path) as (sdk, _):
        base = str(sdk.base_url).removesuffix("/v1/")
        headers = {"x-api-key": sdk.api_key, "anthropic-version": "2023-06-01"}
        body = {"model": CLAUDE, "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}
        async with httpx.AsyncClient(base_url=base, headers=headers) as http:
            plain = await http.post("/v1/messages?beta=true", json=body)
            assert plain.status_code == 200 and plain.json()["type"] == "message"
            streamed = await http.post("/v1/messages?beta=true", json={**body, "stream": True})
            assert b"event: message_stop" in streamed.content
            count = await http.post("/v1/messages/count_tokens", json=body)
            assert count.json()["input_tokens"] > 0
    first, second, counted = rows(tmp_path)
    for row in (first, second):
        assert (row["endpoint"], row["model"], row["unmetered"]) == ("messages", CLAUDE, None)
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
        assert Decimal(row["cost_usd"]) > 0
    assert (first["prompt_tokens"], first["completion_tokens"]) == (
        second["prompt_tokens"],
        second["completion_tokens"],
    )
    assert (counted["endpoint"], counted["cost_usd"], counted["unmetered"]) == (
        "messages/count_tokens",
        None,
        None,
    )


async def test_an_image_is_generated_and_charged(tmp_path: Path) -> None:
    async with clients(tmp_path) as (sdk, _):
        image = await sdk.images.generate(model="hidream", prompt="a cat", size="1024x1024")
        assert image.data and image.data[0].b64_json
        with pytest.raises(openai.NotFoundError):  # not in the image catalog
            await sdk.images.generate(model="deepseek/deepseek-v3.2", prompt="a cat")
    generated, refused = rows(tmp_path)
    assert (generated["endpoint"], generated["cost_source"]) == ("images/generations", "charged")
    assert Decimal(generated["cost_usd"]) > 0 and generated["unmetered"] is None
    assert (refused["status"], refused["outcome"]) == (404, "refused")


async def test_audio_and_moderations(tmp_path: Path) -> None:
    async with clients(tmp_path) as (sdk, _):
        audio = io.BytesIO(b"ID3" + bytes(4000))
        text = await sdk.audio.transcriptions.create(
            model="Whisper-Large-V3", file=("hello.mp3", audio, "audio/mpeg")
        )
        assert text.text
        speech = await sdk.audio.speech.create(model="tts-1", voice="alloy", input="Hello team")
        assert speech.content
        moderation = await sdk.moderations.create(model="omni-moderation-latest", input="hi")
        assert moderation.results[0].flagged is False
        with pytest.raises(openai.PermissionDeniedError):  # the config denies openai/*
            await sdk.audio.transcriptions.create(
                model="openai/whisper-1", file=("a.mp3", io.BytesIO(b"ID3"), "audio/mpeg")
            )
    transcription, spoken, moderated, denied = rows(tmp_path)
    assert (transcription["endpoint"], transcription["unmetered"]) == (
        "audio/transcriptions",
        "not_reported",
    )
    assert (spoken["endpoint"], spoken["unmetered"]) == ("audio/speech", "not_reported")
    assert moderated["endpoint"] == "moderations" and Decimal(moderated["cost_usd"]) >= 0
    assert moderated["unmetered"] is None
    assert (denied["status"], denied["model"]) == (403, "openai/whisper-1")


async def test_every_row_names_its_request(tmp_path: Path) -> None:
    async with clients(tmp_path) as (sdk, _):
        raw = await sdk.chat.completions.with_raw_response.create(
            model="deepseek/deepseek-v3.2", messages=[{"role": "user", "content": "hi"}]
        )
    (row,) = rows(tmp_path)
    assert row["request_id"] == raw.headers["x-gateway-request-id"]
    assert json.loads(raw.content)["x_nanogpt_pricing"]
    assert row["cost_source"] == "charged"
