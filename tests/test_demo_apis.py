"""The demo upstream's newer APIs, as NanoGPT shapes them: Responses and Anthropic Messages
(named-event streams), images, audio and moderations with their catalogs."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from gateway.demo_upstream import DEMO_TEAM_KEY, create_demo_upstream
from tests.conftest import sdk_over
from tests.test_demo_upstream import AUTH, BASIC_KEYS, HELLO, anyio_backend, client

__all__ = ["anyio_backend", "client"]  # fixtures, used by name


# --- named-event streams (Responses, Messages) --------------------------------------------------


def named_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of an SSE body whose events each have an `event:` line; a trailing
    `data: [DONE]` is dropped."""
    blocks = text.split("\n\n")
    assert blocks.pop() == ""
    if blocks[-1] == "data: [DONE]":
        blocks.pop()
    events = []
    for block in blocks:
        name, data = block.split("\n")
        events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    assert all(name == data["type"] for name, data in events)
    return events


# --- responses ----------------------------------------------------------------------------------


async def respond(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/api/v1/responses", json={"model": "openai/gpt-5.2", **body})


@pytest.mark.anyio
async def test_response_to_a_string_input(client: httpx.AsyncClient) -> None:
    body = (await respond(client, input="Hi there friend")).json()
    assert body["object"] == "response" and body["id"].startswith("resp_")
    assert body["status"] == "completed" and body["model"] == "openai/gpt-5.2"
    [message] = body["output"]
    assert message["type"] == "message" and message["role"] == "assistant"
    [part] = message["content"]
    assert part["type"] == "output_text" and part["text"] == body["output_text"]
    assert body["output_text"].endswith("You said: Hi there friend")
    usage = body["usage"]
    assert usage == {
        "input_tokens": 3 + 3,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": len(part["text"].split()),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage["input_tokens"] + usage["output_tokens"],
    }
    assert "x_nanogpt_pricing" not in body


@pytest.mark.anyio
async def test_response_to_input_items_with_instructions(client: httpx.AsyncClient) -> None:
    items = [
        {"type": "message", "role": "user", "content": "first question"},
        {"type": "message", "role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "input_text", "text": "latest words"}]},
    ]
    model = "deepseek/deepseek-v3.2:thinking"
    body = (await respond(client, model=model, input=items, instructions="Be brief.")).json()
    assert body["instructions"] == "Be brief."
    assert body["output_text"].endswith("You said: latest words")
    assert body["usage"]["input_tokens"] == (2 + 3) + (2 + 3) + (2 + 3) + 2
    reasoning = body["usage"]["output_tokens_details"]["reasoning_tokens"]
    assert 0 < reasoning < body["usage"]["output_tokens"]


@pytest.mark.anyio
async def test_response_cut_by_max_output_tokens(client: httpx.AsyncClient) -> None:
    long = " ".join(["word"] * 30)
    body = (await respond(client, input=long, max_output_tokens=16)).json()
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["usage"]["output_tokens"] == 16
    response = await respond(client, input="hi", max_output_tokens=15)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_output_tokens"


@pytest.mark.anyio
async def test_response_stream_is_the_standard_event_sequence(client: httpx.AsyncClient) -> None:
    plain = (await respond(client, input="Hi there friend")).json()
    response = await respond(client, input="Hi there friend", stream=True)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n")
    events = named_events(response.text)
    names = [name for name, _ in events]
    deltas = names.count("response.output_text.delta")
    assert names == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", *["response.output_text.delta"] * deltas,
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    created, completed = events[0][1]["response"], events[-1][1]["response"]
    assert created["status"] == "in_progress" and created["usage"] is None
    assert created["id"] == completed["id"]
    text = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert text == completed["output_text"] == plain["output_text"]
    assert completed["usage"] == plain["usage"]


# --- messages (Anthropic) -----------------------------------------------------------------------

ANTHROPIC_HEADERS = {"x-api-key": DEMO_TEAM_KEY, "anthropic-version": "2023-06-01"}


async def message(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    request = {"model": "anthropic/claude-opus-4.6", "max_tokens": 256, "messages": HELLO[1:]}
    return await client.post("/api/v1/messages", json={**request, **body})


@pytest.mark.anyio
@pytest.mark.parametrize("headers", [ANTHROPIC_HEADERS, AUTH])
async def test_message(headers: dict[str, str]) -> None:
    transport = httpx.ASGITransport(app=create_demo_upstream())
    async with httpx.AsyncClient(transport=transport, base_url="http://demo", headers=headers) as c:
        body = (await message(c, system="Be brief.")).json()
    assert body["type"] == "message" and body["role"] == "assistant"
    assert body["id"].startswith("msg_") and body["model"] == "anthropic/claude-opus-4.6"
    [block] = body["content"]
    assert block["type"] == "text" and block["text"].endswith("You said: Hi there friend")
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    assert body["usage"] == {
        "input_tokens": 2 + (3 + 3),
        "output_tokens": len(block["text"].split()),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "service_tier": "standard",
    }


@pytest.mark.anyio
async def test_message_reads_the_cached_prefix_from_cache(client: httpx.AsyncClient) -> None:
    system = [
        {"type": "text", "text": "a long static handbook", "cache_control": {"type": "ephemeral"}}
    ]
    usage = (await message(client, system=system)).json()["usage"]
    assert usage["cache_read_input_tokens"] == 4
    assert usage["input_tokens"] == 3 + 3
    counted = await client.post(
        "/api/v1/messages/count_tokens",
        json={"model": "anthropic/claude-opus-4.6", "system": system, "messages": HELLO[1:]},
    )
    assert counted.json() == {"input_tokens": 4 + 3 + 3}


@pytest.mark.anyio
async def test_message_max_tokens_and_thinking(client: httpx.AsyncClient) -> None:
    cut = (await message(client, max_tokens=3)).json()
    assert cut["stop_reason"] == "max_tokens" and cut["usage"]["output_tokens"] == 3
    thought = (await message(client, model="anthropic/claude-opus-4.6:thinking")).json()
    assert [b["type"] for b in thought["content"]] == ["thinking", "text"]
    words = len(thought["content"][0]["thinking"].split())
    assert thought["usage"]["output_tokens"] == words + len(thought["content"][1]["text"].split())


@pytest.mark.anyio
@pytest.mark.parametrize("model", ["anthropic/claude-opus-4.6", "deepseek/deepseek-v3.2:thinking"])
async def test_message_stream_is_anthropic_event_sequence(
    client: httpx.AsyncClient, model: str
) -> None:
    plain = (await message(client, model=model)).json()
    response = await message(client, model=model, stream=True)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = named_events(response.text)
    assert "[DONE]" not in response.text
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == plain["usage"]["input_tokens"]
    assert start["usage"]["output_tokens"] == 0
    _, delta = events[-2]
    assert delta["delta"]["stop_reason"] == "end_turn"
    # NanoGPT repeats the whole usage on message_delta, input tokens included
    keys = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    assert delta["usage"] == {k: plain["usage"][k] for k in (*keys, "output_tokens")}
    for index, block in enumerate(plain["content"]):
        kind = block["type"]
        own = [(n, d) for n, d in events[1:-2] if d["index"] == index]
        assert [n for n, _ in own[:1] + own[-1:]] == ["content_block_start", "content_block_stop"]
        assert own[0][1]["content_block"] == {**block, kind: ""} | (
            {"signature": ""} if kind == "thinking" else {}
        )
        deltas = [d["delta"] for _, d in own[1:-1]]
        if kind == "thinking":  # the signature comes last, as its own delta
            assert deltas.pop() == {"type": "signature_delta", "signature": block["signature"]}
        assert "".join(d[kind] for d in deltas) == block[kind]
        assert {d["type"] for d in deltas} == {f"{kind}_delta"}


@pytest.mark.anyio
async def test_messages_errors_are_anthropic_shaped(client: httpx.AsyncClient) -> None:
    request = {"model": "anthropic/claude-opus-4.6", "messages": HELLO[1:]}
    response = await client.post("/api/v1/messages", json=request)
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "max_tokens is required",
            "param": "max_tokens",
        },
    }
    response = await message(client, model="nobody/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    bad_key = {"Authorization": "", "x-api-key": "nope"}
    response = await client.post("/api/v1/messages", json=request, headers=bad_key)
    assert response.status_code == 401
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "authentication_error"


# --- images, audio, moderations -----------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/api/v1/images/generations", "/v1/images/generations"])
async def test_image_generation_answers_with_the_cost(client: httpx.AsyncClient, path: str) -> None:
    request = {"model": "flux-schnell", "prompt": "a lighthouse", "n": 2, "size": "512x512"}
    body = (await client.post(path, json=request)).json()
    assert isinstance(body["created"], int)
    assert [set(item) for item in body["data"]] == [{"b64_json"}, {"b64_json"}]
    assert base64.b64decode(body["data"][0]["b64_json"]).startswith(b"\x89PNG\r\n\x1a\n")
    assert body["cost"] == pytest.approx(2 * 0.003)
    assert body["paymentSource"] == "USD"
    assert body["remainingBalance"] == pytest.approx(129.46956147 - body["cost"])


@pytest.mark.anyio
async def test_image_url_and_defaults(client: httpx.AsyncClient) -> None:
    request = {"prompt": "a lighthouse", "response_format": "url"}
    body = (await client.post("/api/v1/images/generations", json=request)).json()
    [item] = body["data"]
    assert body["cost"] == 0.04  # the default model, `hidream`, at 1024x1024
    image = await client.get(item["url"])
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")
    bad = {"prompt": "x", "size": "999x999"}
    response = await client.post("/api/v1/images/generations", json=bad)
    assert response.status_code == 400 and response.json()["error"]["param"] == "size"


@pytest.mark.anyio
async def test_image_models_catalog(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/image-models")).json()
    assert body["object"] == "list" and body["meta"]["count"] == len(body["data"]) == 3
    for model in body["data"]:
        assert model["object"] == "model" and model["category"] == "image"
        assert model["pricing"]["currency"] == "USD"
        assert set(model["pricing"]["per_image"]) == set(
            model["supported_parameters"]["resolutions"]
        )
        assert model["architecture"]["output_modalities"] == ["image"]
        assert {"image_generation", "image_to_image"} <= set(model["capabilities"])
    basic = (await client.get("/api/v1/image-models", params={"detailed": "false"})).json()
    assert all(set(m) == BASIC_KEYS for m in basic["data"])


def upload(model: str = "Whisper-Large-V3", audio: bytes = b"\xff\xfb" * 16_000) -> dict[str, Any]:
    return {"files": {"file": ("meeting.mp3", audio, "audio/mpeg")}, "data": {"model": model}}


@pytest.mark.anyio
async def test_transcription_of_a_multipart_upload(client: httpx.AsyncClient) -> None:
    body = (await client.post("/api/v1/audio/transcriptions", **upload())).json()
    assert body == {
        "text": "Demo transcription of meeting.mp3 (32000 bytes).",
        "language": "en",
        "duration": 2.0,
    }
    response = await client.post("/api/v1/audio/transcriptions", **upload("tts-1"))
    assert response.status_code == 404
    response = await client.post("/api/v1/audio/transcriptions", data={"model": "Wizper"})
    assert response.status_code == 400
    response = await client.post("/api/v1/audio/transcriptions", json={"model": "Wizper"})
    assert response.json()["error"]["code"] == "invalid_multipart_body"


@pytest.mark.anyio
async def test_speech_returns_audio_bytes(client: httpx.AsyncClient) -> None:
    request = {"model": "tts-1", "input": "Hello team", "voice": "alloy"}
    mp3 = await client.post("/api/v1/audio/speech", json=request)
    assert mp3.headers["content-type"] == "audio/mpeg" and mp3.content.startswith(b"ID3")
    wav = await client.post("/api/v1/audio/speech", json={**request, "response_format": "wav"})
    assert wav.headers["content-type"] == "audio/wav" and wav.content.startswith(b"RIFF")
    flac = await client.post("/api/v1/audio/speech", json={**request, "response_format": "flac"})
    assert flac.status_code == 400 and flac.json()["error"]["code"] == "unsupported_format"


@pytest.mark.anyio
async def test_audio_models_catalog(client: httpx.AsyncClient) -> None:
    everything = (await client.get("/api/v1/audio-models")).json()["data"]
    stt = (await client.get("/api/v1/audio-models", params={"type": "stt"})).json()
    tts = (await client.get("/api/v1/audio-models", params={"type": "tts"})).json()
    assert stt["meta"]["filter"] == {"type": "stt"}
    assert len(stt["data"]) + len(tts["data"]) == len(everything) == 4
    assert all(set(m["pricing"]) == {"per_minute", "currency"} for m in stt["data"])
    assert all(set(m["pricing"]) == {"per_thousand_chars", "currency"} for m in tts["data"])
    response = await client.get("/api/v1/audio-models", params={"type": "music"})
    assert response.status_code == 400


@pytest.mark.anyio
async def test_moderations(client: httpx.AsyncClient) -> None:
    request = {"input": ["a kind word", "I will kill the process"]}
    body = (await client.post("/api/v1/moderations", json=request)).json()
    assert body["id"].startswith("modr-") and body["model"] == "omni-moderation-latest"
    calm, harsh = body["results"]
    assert not calm["flagged"] and harsh["flagged"]
    assert harsh["categories"]["violence"] and not harsh["categories"]["hate"]
    assert set(calm["categories"]) == set(calm["category_scores"]) >= {"violence", "sexual"}
    usage = body["usage"]
    assert usage["prompt_tokens"] == (3 + 3) + (5 + 3) and usage["completion_tokens"] == 2
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    parts = [{"type": "text", "text": "hello"}, {"type": "image_url", "image_url": {"url": "x"}}]
    one = (await client.post("/api/v1/moderations", json={"input": parts})).json()
    assert len(one["results"]) == 1
    empty = await client.post("/api/v1/moderations", json={"input": "  "})
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_input"
    models = (await client.get("/api/v1/moderation-models")).json()["data"]
    assert {m["pricing"]["unit"] for m in models} == {"per_million_tokens"}


@pytest.mark.anyio
async def test_the_openai_sdk_reads_every_new_shape(anyio_backend: str) -> None:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_demo_upstream()))
    async with sdk_over(http, "http://demo/api/v1", DEMO_TEAM_KEY) as sdk:
        answer = await sdk.responses.create(model="openai/gpt-5.2", input="Hi there")
        assert answer.output_text.endswith("You said: Hi there") and answer.usage
        stream = await sdk.responses.create(model="openai/gpt-5.2", input="Hi", stream=True)
        kinds = [event.type async for event in stream]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        images = await sdk.images.generate(model="hidream", prompt="a lighthouse")
        assert images.data and images.data[0].b64_json
        audio = ("a.mp3", b"\xff\xfb" * 100, "audio/mpeg")
        text = await sdk.audio.transcriptions.create(model="Wizper", file=audio)
        assert text.text.startswith("Demo transcription of a.mp3")
        spoken = await sdk.audio.speech.create(model="Kokoro-82m", voice="af_bella", input="Hi")
        assert spoken.content.startswith(b"ID3")
        verdict = await sdk.moderations.create(input="a kind word")
        assert verdict.results[0].flagged is False
