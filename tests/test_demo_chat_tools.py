"""Chat completions on the demo upstream as an agent uses them, through the real `openai` SDK:
tool calls (JSON and streamed the way OpenAI streams them), `tool_choice`, answering after a tool's
result, and structured output (`response_format`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pydantic
import pytest
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
)

from gateway.demo_upstream import DEMO_TEAM_KEY, create_demo_upstream
from tests.conftest import sdk_over
from tests.test_demo_upstream import AUTH, anyio_backend, chunks, client

__all__ = ["anyio_backend", "client"]  # fixtures, used by name

pytestmark = pytest.mark.anyio
MODEL = "deepseek/deepseek-v3.2"
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Weather in Oslo?"}]
WEATHER: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "lookup_weather",
        "description": "Fetch the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["c", "f"]},
                "days": {"type": "integer", "minimum": 1},
            },
            "required": ["city", "unit", "days"],
        },
    },
}
CLOCK: ChatCompletionFunctionToolParam = {"type": "function", "function": {"name": "read_clock"}}


@pytest.fixture
async def sdk(anyio_backend: str) -> AsyncIterator[openai.AsyncOpenAI]:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_demo_upstream()))
    async with sdk_over(http, "http://demo/api/v1", DEMO_TEAM_KEY) as sdk:
        yield sdk


async def ask(sdk: openai.AsyncOpenAI, **request: Any) -> ChatCompletion:
    answer: ChatCompletion = await sdk.chat.completions.create(
        **{"model": MODEL, "messages": ASK, **request}
    )
    return answer


def function_calls(answer: ChatCompletion) -> list[ChatCompletionMessageFunctionToolCall]:
    """The answer's tool calls, each of which must be a function call (the demo makes no
    custom tool calls)."""
    calls = answer.choices[0].message.tool_calls or []
    found = [c for c in calls if isinstance(c, ChatCompletionMessageFunctionToolCall)]
    assert len(found) == len(calls), calls
    return found


async def test_a_tool_call_then_an_answer_from_its_result(sdk: openai.AsyncOpenAI) -> None:
    first = await ask(sdk, tools=[WEATHER, CLOCK])
    [choice] = first.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [called] = choice.message.tool_calls or []
    assert called.type == "function" and called.id.startswith("call_")
    assert called.function.name == "lookup_weather"
    assert json.loads(called.function.arguments) == {"city": "demo", "unit": "c", "days": 1}
    assert first.usage and first.usage.completion_tokens > 0
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens

    said = [
        *ASK,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": called.id, "content": "Sunny, 21 C"},
    ]
    second = await ask(sdk, tools=[WEATHER, CLOCK], messages=said)
    assert second.choices[0].finish_reason == "stop"
    assert not second.choices[0].message.tool_calls
    assert (second.choices[0].message.content or "").endswith("The tool returned: Sunny, 21 C")
    assert second.usage and second.usage.prompt_tokens > first.usage.prompt_tokens


async def test_a_streamed_tool_call_assembles_to_the_same_call(sdk: openai.AsyncOpenAI) -> None:
    plain = await ask(sdk, tools=[WEATHER])
    async with sdk.chat.completions.stream(
        model=MODEL, messages=ASK, tools=[WEATHER], stream_options={"include_usage": True}
    ) as stream:
        streamed = await stream.get_final_completion()
    assert streamed.choices[0].finish_reason == "tool_calls"

    def calls(answer: ChatCompletion) -> list[tuple[str, str, str]]:
        return [(c.id, c.function.name, c.function.arguments) for c in function_calls(answer)]

    assert calls(streamed) == calls(plain) and calls(plain)
    assert streamed.usage == plain.usage


async def test_tool_call_frames_are_openais(client: httpx.AsyncClient) -> None:
    request = {"model": MODEL, "messages": ASK, "tools": [WEATHER], "stream": True}
    options = {"stream_options": {"include_usage": True}}
    response = await client.post("/api/v1/chat/completions", json={**request, **options})
    first, *middle, last = chunks(response.text)
    [head] = first["choices"][0]["delta"]["tool_calls"]
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert head == {
        "index": 0,
        "id": head["id"],
        "type": "function",
        "function": {"name": "lookup_weather", "arguments": ""},
    }
    assert len(middle) > 1, "arguments arrive in fragments"
    calls = [c["choices"][0]["delta"]["tool_calls"] for c in middle]
    assert all(set(call) == {"index", "function"} and call["index"] == 0 for [call] in calls)
    arguments = "".join(call["function"]["arguments"] for [call] in calls)
    assert json.loads(arguments) == {"city": "demo", "unit": "c", "days": 1}
    assert last["choices"] == [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]
    assert last["usage"]["completion_tokens"] > 0 and last["x_nanogpt_pricing"]["cost"] > 0
    assert all(c["usage"] is None for c in [first, *middle])


@pytest.mark.parametrize(
    ("tool_choice", "messages", "called"),
    [
        ("auto", ASK, "lookup_weather"),
        ("none", ASK, None),
        ("required", ASK, "lookup_weather"),
        ({"type": "function", "function": {"name": "read_clock"}}, ASK, "read_clock"),
        # after a tool's result: text, unless a call is forced
        ("auto", [*ASK, {"role": "tool", "tool_call_id": "x", "content": "ok"}], None),
        (
            "required",
            [*ASK, {"role": "tool", "tool_call_id": "x", "content": "ok"}],
            "lookup_weather",
        ),
        # the conversation ends with the assistant's own words: nothing to call a tool for
        ("auto", [*ASK, {"role": "assistant", "content": "Let me"}], None),
    ],
)
async def test_tool_choice(
    sdk: openai.AsyncOpenAI, tool_choice: Any, messages: list[Any], called: str | None
) -> None:
    answer = await ask(sdk, tools=[WEATHER, CLOCK], tool_choice=tool_choice, messages=messages)
    calls = function_calls(answer)
    assert [c.function.name for c in calls] == ([called] if called else [])
    assert answer.choices[0].finish_reason == ("tool_calls" if called else "stop")
    assert (answer.choices[0].message.content is None) == bool(called)
    if called == "read_clock":
        assert calls[0].function.arguments == "{}"


async def test_ids_differ_between_turns_and_repeat_within_one(sdk: openai.AsyncOpenAI) -> None:
    def call_id(answer: ChatCompletion) -> str:
        return (answer.choices[0].message.tool_calls or [])[0].id

    once, again = await ask(sdk, tools=[WEATHER]), await ask(sdk, tools=[WEATHER])
    later = await ask(sdk, tools=[WEATHER], messages=[*ASK, *ASK])
    assert call_id(once) == call_id(again) != call_id(later)


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"tools": "lookup_weather"}, "tools"),
        ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
         "tool_choice"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"response_format": {"type": "xml"}}, "response_format"),
    ],
)  # fmt: skip
async def test_malformed_tools_and_formats_are_400(
    client: httpx.AsyncClient, request_: dict[str, Any], param: str
) -> None:
    body = {"model": MODEL, "messages": ASK, **request_}
    response = await client.post("/api/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


class Weather(pydantic.BaseModel):
    city: str
    unit: str
    days: int = pydantic.Field(ge=1)


async def test_sdk_parses_the_arguments_into_the_tools_model(sdk: openai.AsyncOpenAI) -> None:
    answer = await sdk.chat.completions.parse(
        model=MODEL, messages=ASK, tools=[openai.pydantic_function_tool(Weather)]
    )
    [called] = answer.choices[0].message.tool_calls or []
    assert isinstance(called.function.parsed_arguments, Weather)
    assert called.function.parsed_arguments.days == 1


# --- structured output ------------------------------------------------------------------------


async def test_json_object_is_a_json_object(sdk: openai.AsyncOpenAI) -> None:
    answer = await ask(sdk, response_format={"type": "json_object"})
    said = json.loads(answer.choices[0].message.content or "")
    assert said == {
        "reply": "Hello from the NanoGPT demo upstream.",
        "you_said": "Weather in Oslo?",
    }
    assert answer.usage and answer.usage.completion_tokens > 0


class Report(pydantic.BaseModel):
    title: str
    weather: list[Weather]
    severity: int = pydantic.Field(ge=1, le=5)


async def test_json_schema_answer_parses_into_the_model(sdk: openai.AsyncOpenAI) -> None:
    answer = await sdk.chat.completions.parse(model=MODEL, messages=ASK, response_format=Report)
    report = answer.choices[0].message.parsed
    assert isinstance(report, Report)
    assert report.severity == 1 and report.weather[0].days == 1
    async with sdk.chat.completions.stream(
        model=MODEL, messages=ASK, response_format=Report
    ) as stream:
        streamed = await stream.get_final_completion()
    assert streamed.choices[0].message.parsed == report


async def test_a_cut_json_answer_says_length(sdk: openai.AsyncOpenAI) -> None:
    answer = await ask(sdk, response_format={"type": "json_object"}, max_tokens=2)
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.content == '{"reply": "Hello'
