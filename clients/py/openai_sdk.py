"""The `openai` Python SDK through the gateway: one check per run (argv[1]); exits non-zero when
the answer is not what its user expects."""

from __future__ import annotations

import os
import sys
from typing import Any

from openai import OpenAI
from pydantic import BaseModel

client = OpenAI(
    base_url=os.environ["GATEWAY_BASE_URL"], api_key=os.environ["GATEWAY_KEY"], max_retries=0
)
MODEL = os.environ["GATEWAY_MODEL"]
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
    return (
        client.chat.completions.create(model=MODEL, messages=ASK).choices[0].message.content or ""
    )


def stream() -> str:
    chunks = client.chat.completions.create(
        model=MODEL, messages=ASK, stream=True, stream_options={"include_usage": True}
    )
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def tools() -> str:
    offered: Any = [{"type": "function", "function": WEATHER}]
    first = (
        client.chat.completions.create(model=MODEL, messages=ASK, tools=offered).choices[0].message
    )
    [call] = first.tool_calls or []
    result = {"role": "tool", "tool_call_id": call.id, "content": "Sunny"}
    messages = [*ASK, first.model_dump(exclude_none=True), result]
    answer = client.chat.completions.create(model=MODEL, messages=messages, tools=offered)
    text = answer.choices[0].message.content or ""
    assert "Sunny" in text, text
    return text


def responses() -> str:
    offered: Any = [{"type": "function", **WEATHER}]
    with client.responses.stream(model=MODEL, input="Weather in Oslo?", tools=offered) as events:
        first = events.get_final_response()
    [call] = [item for item in first.output if item.type == "function_call"]
    follow_up: Any = [
        *ASK,
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"},
    ]
    text = client.responses.create(model=MODEL, input=follow_up, tools=offered).output_text
    assert "Sunny" in text, text
    return text


class Weather(BaseModel):
    city: str
    sunny: bool


def structured() -> str:
    # The SDK's parse helpers: a strict json_schema response_format, the answer validated.
    chat = client.chat.completions.parse(model=MODEL, messages=ASK, response_format=Weather)
    assert isinstance(chat.choices[0].message.parsed, Weather)
    answer = client.responses.parse(model=MODEL, input="Weather in Oslo?", text_format=Weather)
    assert isinstance(answer.output_parsed, Weather)
    return answer.output_parsed.model_dump_json()


def embeddings() -> str:
    vector = (
        client.embeddings.create(model="text-embedding-3-small", input="hello").data[0].embedding
    )
    return f"{len(vector)} dimensions"


if __name__ == "__main__":
    answer = globals()[sys.argv[1]]()
    assert answer, "empty answer"
    print(answer)
