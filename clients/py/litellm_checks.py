"""LiteLLM's Python SDK through the gateway, as an `openai/`-prefixed model with `api_base`:
`completion` (plain, streamed, with tools), `responses` and `embedding`. One check per run."""

from __future__ import annotations

import os
import sys
from typing import Any

import litellm
from pydantic import BaseModel

SETTINGS: dict[str, Any] = {
    "api_base": os.environ["GATEWAY_BASE_URL"],
    "api_key": os.environ["GATEWAY_KEY"],
}
MODEL = "openai/" + os.environ["GATEWAY_MODEL"]
ASK: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
WEATHER = {
    "name": "lookup_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def chat() -> str:
    return litellm.completion(model=MODEL, messages=ASK, **SETTINGS).choices[0].message.content


def stream() -> str:
    chunks = litellm.completion(model=MODEL, messages=ASK, stream=True, **SETTINGS)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def tools() -> str:
    offered = [{"type": "function", "function": WEATHER}]
    first = (
        litellm.completion(model=MODEL, messages=ASK, tools=offered, **SETTINGS).choices[0].message
    )
    [call] = first.tool_calls
    messages = [
        *ASK,
        first.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny"},
    ]
    text = (
        litellm.completion(model=MODEL, messages=messages, tools=offered, **SETTINGS)
        .choices[0]
        .message.content
    )
    assert "Sunny" in text, text
    return text


def responses() -> str:
    offered = [{"type": "function", **WEATHER}]
    events = litellm.responses(
        model=MODEL, input="Weather in Oslo?", tools=offered, stream=True, **SETTINGS
    )
    calls = [
        e.item
        for e in events
        if e.type == "response.output_item.done" and e.item.type == "function_call"
    ]
    [call] = calls
    follow_up = [
        *ASK,
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"},
    ]
    answer = litellm.responses(model=MODEL, input=follow_up, tools=offered, **SETTINGS)
    text = "".join(
        part.text for item in answer.output if item.type == "message" for part in item.content
    )
    assert "Sunny" in text, text
    return text


class Weather(BaseModel):
    city: str
    sunny: bool


def structured() -> str:
    answer = litellm.completion(model=MODEL, messages=ASK, response_format=Weather, **SETTINGS)
    return Weather.model_validate_json(answer.choices[0].message.content).model_dump_json()


def embeddings() -> str:
    answer = litellm.embedding(model="openai/text-embedding-3-small", input=["hello"], **SETTINGS)
    return f"{len(answer.data[0]['embedding'])} dimensions"


if __name__ == "__main__":
    answer = globals()[sys.argv[1]]()
    assert answer, "empty answer"
    print(answer)
