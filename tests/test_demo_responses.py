"""The Responses API on the demo upstream as agents use it, through the real `openai` SDK and raw:
`function_call` items (JSON and streamed with `function_call_arguments` events), text after a
`function_call_output`, `tool_choice`, and JSON output through `text.format`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
import openai
import pydantic
import pytest
from openai.types.responses import FunctionToolParam, Response

from gateway.demo_upstream import DEMO_TEAM_KEY, create_demo_upstream
from tests.conftest import sdk_over
from tests.test_demo_apis import named_events
from tests.test_demo_upstream import anyio_backend, client

__all__ = ["anyio_backend", "client"]  # fixtures, used by name

pytestmark = pytest.mark.anyio
MODEL = "openai/gpt-5.2"
ASK = "What is the weather in Tokyo?"
WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "Get current weather for a location",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["location", "days"],
    },
    "strict": None,
}
# without the nullable fields NanoGPT fills in (`test_tools_are_echoed_with_nullable_fields`)
CLOCK: dict[str, Any] = {"type": "function", "name": "read_clock"}
SEARCH = {"type": "web_search_preview"}


@pytest.fixture
async def sdk(anyio_backend: str) -> AsyncIterator[openai.AsyncOpenAI]:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_demo_upstream()))
    async with sdk_over(http, "http://demo/api/v1", DEMO_TEAM_KEY) as sdk:
        yield sdk


async def respond(sdk: openai.AsyncOpenAI, **request: Any) -> Response:
    answer: Response = await sdk.responses.create(**{"model": MODEL, "input": ASK, **request})
    return answer


async def test_a_function_call_then_text_from_its_output(sdk: openai.AsyncOpenAI) -> None:
    first = await respond(sdk, tools=[SEARCH, WEATHER, CLOCK])
    assert first.status == "completed" and first.output_text == ""
    [called] = first.output
    assert called.type == "function_call" and called.status == "completed"
    assert called.name == "get_weather" and called.call_id.startswith("call_")
    assert called.id and called.id.startswith("fc_")
    assert json.loads(called.arguments) == {"location": "demo", "days": 1}
    assert first.usage and first.usage.output_tokens > 0
    assert first.usage.total_tokens == first.usage.input_tokens + first.usage.output_tokens

    follow_up = [
        {"type": "message", "role": "user", "content": ASK},
        called.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": called.call_id, "output": "18 C, cloudy"},
    ]
    second = await respond(sdk, tools=[WEATHER], input=follow_up)
    [message] = second.output
    assert message.type == "message" and second.status == "completed"
    assert second.output_text.endswith("The tool returned: 18 C, cloudy")
    assert second.usage and second.usage.input_tokens > first.usage.input_tokens


async def test_function_call_stream_is_the_standard_event_sequence(
    client: httpx.AsyncClient,
) -> None:
    request = {"model": MODEL, "input": ASK, "tools": [WEATHER]}
    plain = (await client.post("/api/v1/responses", json=request)).json()
    response = await client.post("/api/v1/responses", json={**request, "stream": True})
    assert response.text.endswith("data: [DONE]\n\n")
    events = named_events(response.text)
    names = [name for name, _ in events]
    deltas = names.count("response.function_call_arguments.delta")
    assert deltas > 1
    assert names == [
        "response.created", "response.in_progress", "response.output_item.added",
        *["response.function_call_arguments.delta"] * deltas,
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    added, done = events[2][1]["item"], events[-2][1]["item"]
    assert added["arguments"] == "" and added["status"] == "in_progress"
    assert {k: v for k, v in added.items() if k not in ("arguments", "status")} == {
        k: v for k, v in done.items() if k not in ("arguments", "status")
    }
    arguments = "".join(d["delta"] for n, d in events if n.endswith("arguments.delta"))
    assert arguments == events[-3][1]["arguments"] == done["arguments"]
    assert all(d["item_id"] == done["id"] for n, d in events if "arguments" in n)
    completed = events[-1][1]["response"]
    assert completed["output"] == [done] and completed["usage"] == plain["usage"]
    assert done["call_id"] == plain["output"][0]["call_id"]


async def test_the_sdk_stream_helper_assembles_the_call(sdk: openai.AsyncOpenAI) -> None:
    plain = await respond(sdk, tools=[WEATHER])
    async with sdk.responses.stream(model=MODEL, input=ASK, tools=[WEATHER]) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert "response.function_call_arguments.done" in kinds
    [called] = final.output
    assert called.type == "function_call" and plain.output[0].type == "function_call"
    assert (called.call_id, called.arguments) == (
        plain.output[0].call_id,
        plain.output[0].arguments,
    )


TOOL_RESULT = [
    {"role": "user", "content": ASK},
    {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "call_1", "output": "ok"},
]


@pytest.mark.parametrize(
    ("tools", "tool_choice", "input_", "called"),
    [
        ([WEATHER, CLOCK], "auto", ASK, "get_weather"),
        ([WEATHER, CLOCK], "none", ASK, None),
        ([SEARCH], "auto", ASK, None),  # no function the demo could call
        ([WEATHER, CLOCK], {"type": "function", "name": "read_clock"}, ASK, "read_clock"),
        ([WEATHER, CLOCK], "auto", TOOL_RESULT, None),
        ([WEATHER, CLOCK], "required", TOOL_RESULT, "get_weather"),
        (
            [WEATHER, CLOCK],
            {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "read_clock"}]},
            ASK,
            "read_clock",
        ),
    ],
)  # fmt: skip
async def test_tool_choice(
    sdk: openai.AsyncOpenAI, tools: list[Any], tool_choice: Any, input_: Any, called: str | None
) -> None:
    answer = await respond(sdk, tools=tools, tool_choice=tool_choice, input=input_)
    [item] = answer.output
    assert item.type == ("function_call" if called else "message")
    if item.type == "function_call":
        assert item.name == called


async def test_tools_are_echoed_with_nullable_fields(client: httpx.AsyncClient) -> None:
    request = {"model": MODEL, "input": ASK, "tools": [CLOCK, SEARCH], "tool_choice": "none"}
    body = (await client.post("/api/v1/responses", json=request)).json()
    assert body["tools"] == [
        {"type": "function", "name": "read_clock", "description": None, "parameters": None,
         "strict": None},
        SEARCH,
    ]  # fmt: skip
    assert body["tool_choice"] == "none"


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"tools": {"type": "function"}}, "tools"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"text": {"format": {"type": "json_schema"}}}, "text.format"),
    ],
)
async def test_malformed_tools_and_formats_are_400(
    client: httpx.AsyncClient, request_: dict[str, Any], param: str
) -> None:
    response = await client.post(
        "/api/v1/responses", json={"model": MODEL, "input": ASK, **request_}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


class Forecast(pydantic.BaseModel):
    location: str
    highs: list[int]
    unit: Literal["c", "f"] = "f"


async def test_text_format_json_schema_parses_into_the_model(sdk: openai.AsyncOpenAI) -> None:
    parsed = await sdk.responses.parse(model=MODEL, input=ASK, text_format=Forecast)
    # the SDK's strict schema requires every field, so `unit` comes too: its first choice
    assert parsed.output_parsed == Forecast(location="demo", highs=[0], unit="c")
    assert parsed.text and parsed.text.format and parsed.text.format.type == "json_schema"


async def test_json_formats_as_nanogpt_documents_them(client: httpx.AsyncClient) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    for form, expected in [
        (
            {"type": "json_object"},
            {"reply": "Hello from the NanoGPT demo upstream.", "you_said": ASK},
        ),
        ({"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}, {"n": 0}),
    ]:
        request = {"model": MODEL, "input": ASK, "text": {"format": form}, "stream": True}
        events = named_events((await client.post("/api/v1/responses", json=request)).text)
        text = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
        assert json.loads(text) == expected
        assert events[-1][1]["response"]["text"]["format"] == form
