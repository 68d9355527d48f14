"""Cursor's Responses-shaped chat body -> Chat Completions: every rule, the captured client
bodies, a 400 naming the item for anything untranslatable, and the result checked against the
openai SDK's own request types and accepted by the demo NanoGPT."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import typing_extensions
from openai.types.chat import completion_create_params as params

from gateway.compat import is_responses_shaped, to_chat
from gateway.demo_upstream import DEMO_TEAM_KEY, create_demo_upstream
from gateway.errors import InvalidRequest

CLIENTS = Path(__file__).parent / "fixtures" / "clients"
RESPONSES_ONLY = {"input", "include", "instructions", "store"}
Json = dict[str, Any]


def translate(**body: Any) -> Json:
    return to_chat({"model": "openai/gpt-5.2", **body})


def messages(input: Any, **body: Any) -> list[Json]:
    said: list[Json] = translate(input=input, **body)["messages"]
    return said


def client_body(name: str) -> Json:
    body: Json = json.loads((CLIENTS / f"{name}.json").read_text())
    assert body.pop("_source")
    return body


def refusal(body: Json) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        to_chat(body)
    assert caught.value.status_code == 400
    return caught.value


# --- detection ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "shaped"),
    [
        ({"model": "m", "input": "hi"}, True),
        ({"model": "m", "input": [], "stream": True}, True),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, False),
        ({"model": "m", "messages": [], "input": "hi"}, False),  # a chat body: left alone
        ({"model": "m"}, False),
    ],
)
def test_responses_shaped_means_input_and_no_messages(body: Json, shaped: bool) -> None:
    assert is_responses_shaped(body) is shaped


# --- input -> messages --------------------------------------------------------------------------

CALL = {"type": "function_call", "call_id": "call_1", "name": "read", "arguments": '{"f":"a"}'}
CALL_2 = {**CALL, "call_id": "call_2", "arguments": '{"f":"b"}'}
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "read", "arguments": '{"f":"a"}'}}  # fmt: skip
TOOL_CALL_2 = {**TOOL_CALL, "id": "call_2", "function": {"name": "read", "arguments": '{"f":"b"}'}}
TEXT = {"type": "text", "text": "hello"}


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        pytest.param("hello", [{"role": "user", "content": "hello"}], id="string input"),
        pytest.param(
            [{"role": "user", "content": "hello"}],
            [{"role": "user", "content": "hello"}],
            id="message without type",
        ),
        pytest.param(
            [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}],
            [{"role": "user", "content": [TEXT]}],
            id="typed message with input_text",
        ),
        pytest.param(
            [{"role": "developer", "content": "be brief"}, {"role": "system", "content": "be kind"}],
            [{"role": "system", "content": "be brief"}, {"role": "system", "content": "be kind"}],
            id="developer and system become system",
        ),
        pytest.param(
            [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
              "content": [{"type": "output_text", "text": "hello", "annotations": []}]}],
            [{"role": "assistant", "content": [TEXT]}],
            id="assistant output_text, id and status dropped",
        ),
        pytest.param(
            [{"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}],
            [{"role": "assistant", "content": [{"type": "text", "text": "no"}]}],
            id="refusal becomes text",
        ),
        pytest.param(
            [{"role": "user", "content": [
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
                {"type": "input_image", "image_url": {"url": "https://x/y.png"}},
            ]}],
            [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
            ]}],
            id="images as a string or {url}, detail kept",
        ),
        pytest.param(
            [CALL, CALL_2],
            [{"role": "assistant", "content": None, "tool_calls": [TOOL_CALL, TOOL_CALL_2]}],
            id="consecutive calls are one assistant message",
        ),
        pytest.param(
            [{"role": "assistant", "content": "let me look"}, CALL],
            [{"role": "assistant", "content": "let me look", "tool_calls": [TOOL_CALL]}],
            id="a call joins the assistant text before it",
        ),
        pytest.param(
            [{"role": "assistant", "content": []}, CALL],
            [{"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}],
            id="empty assistant content beside a call is null",
        ),
        pytest.param(
            [{"role": "user", "content": "go"}, CALL],
            [{"role": "user", "content": "go"},
             {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}],
            id="a call after a user message opens an assistant message",
        ),
        pytest.param(
            [CALL, {"type": "function_call_output", "call_id": "call_1", "output": "42"}, CALL_2],
            [{"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
             {"role": "tool", "tool_call_id": "call_1", "content": "42"},
             {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL_2]}],
            id="calls split by an output are two turns",
        ),
        pytest.param(
            [{"type": "function_call_output", "call_id": "call_1",
              "output": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]}],
            [{"role": "tool", "tool_call_id": "call_1", "content": "a\nb"}],
            id="output parts become text",
        ),
        pytest.param(
            [{"role": "user", "content": "go"},
             {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"},
             CALL],
            [{"role": "user", "content": "go"},
             {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}],
            id="reasoning dropped",
        ),
    ],
)  # fmt: skip
def test_input_items_become_chat_messages(items: Any, expected: list[Json]) -> None:
    assert messages(items) == expected


def test_instructions_are_the_first_system_message() -> None:
    assert messages("hi", instructions="Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert messages("hi", instructions="") == [{"role": "user", "content": "hi"}]


# --- refusals: a 400 naming the item ------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "param", "words"),
    [
        ([{"role": "user", "content": "a"}, {"type": "web_search_call", "id": "ws"}], "input[1]", "'web_search_call'"),
        ([{"type": "item_reference", "id": "msg_1"}], "input[0]", "'item_reference'"),
        ([{"type": "custom_tool_call", "call_id": "c", "name": "ApplyPatch", "input": "*"}], "input[0]", "'custom_tool_call'"),
        (["hello"], "input[0]", "unsupported item"),
        ([{"content": "no role, no type"}], "input[0]", "unsupported item"),
        ([{"role": "tool", "content": "x"}], "input[0]", "'tool'"),
        ([{"role": ["user"], "content": "x"}], "input[0]", "role"),
        ([{"role": "user", "content": 7}], "input[0]", "'content'"),
        ([{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}], "input[0].content[0]", "'input_file'"),
        ([{"role": "user", "content": ["text"]}], "input[0].content[0]", "'type'"),
        ([{"role": "user", "content": [{"type": ["input_text"]}]}], "input[0].content[0]", "'type'"),
        ([{"role": "user", "content": [{"type": "input_text"}]}], "input[0].content[0]", "malformed"),
        ([{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}], "input[0].content[0]", "image_url"),
        ([{"role": "assistant", "content": [{"type": "input_image", "image_url": "u"}]}], "input[0].content[0]", "assistant"),
        ([{"role": "system", "content": [{"type": "input_image", "image_url": "u"}]}], "input[0].content[0]", "system"),
        ([{**CALL, "arguments": {"f": "a"}}], "input[0]", "'arguments'"),
        ([{"type": "function_call", "name": "read", "arguments": "{}"}], "input[0]", "'call_id'"),
        ([{"type": "function_call_output", "output": "x"}], "input[0]", "'call_id'"),
        ([{"type": "function_call_output", "call_id": "c", "output": {"x": 1}}], "input[0]", "'output'"),
        ([{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image", "image_url": "u"}]}], "input[0].output[0]", "tool"),
        ([{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_text"}]}], "input[0].output[0]", "malformed"),
    ],
)  # fmt: skip
def test_untranslatable_input_is_a_400_naming_the_item(items: Any, param: str, words: str) -> None:
    error = refusal({"model": "m", "input": items})
    assert error.param == param
    assert error.message.startswith(f"{param.split('.')[0]}: ")
    assert words in error.message
    assert error.body()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": {"role": "user"}}, "input"),
        ({"input": None}, "input"),
        ({}, "input"),
        ({"input": []}, "input"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input"),
        ({"input": "hi", "instructions": ["x"]}, "instructions"),
        ({"input": "hi", "reasoning": "high"}, "reasoning"),
        ({"input": "hi", "text": "json"}, "text"),
        ({"input": "hi", "text": {"format": {"type": "grammar"}}}, "text.format"),
        ({"input": "hi", "text": {"format": {}}}, "text.format"),
        ({"input": "hi", "text": {"format": "json_schema"}}, "text.format"),
        ({"input": "hi", "tools": {"type": "function"}}, "tools"),
        ({"input": "hi", "tools": ["read"]}, "tools[0]"),
        ({"input": "hi", "tools": [{"type": "function"}]}, "tools[0]"),
        ({"input": "hi", "tools": [{"type": "function", "name": "f"}], "tool_choice": "any"}, "tool_choice"),
        ({"input": "hi", "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "custom", "name": "ApplyPatch"}}, "tool_choice"),
        ({"input": "hi", "tools": [{"type": "function", "name": "f"}], "tool_choice": ["auto"]}, "tool_choice"),
    ],
)  # fmt: skip
def test_malformed_fields_are_a_400_naming_the_field(body: Json, param: str) -> None:
    assert refusal({"model": "m", **body}).param == param


# --- top-level fields ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"max_output_tokens": 256}, {"max_tokens": 256}),
        ({"reasoning": {"effort": "high", "summary": "auto"}}, {"reasoning_effort": "high"}),
        ({"reasoning": {"summary": "auto"}}, {}),
        ({"text": {"verbosity": "low"}}, {}),
        ({"text": {"format": {"type": "text"}}}, {}),
        ({"text": {"format": {"type": "json_object"}}}, {"response_format": {"type": "json_object"}}),
        (
            {"text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}}},
            {"response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True}}},
        ),
        (
            {"include": ["reasoning.encrypted_content"], "store": False, "previous_response_id": "resp_1",
             "truncation": "auto", "prompt_cache_key": "k", "prompt_cache_retention": "24h", "metadata": {"a": "b"},
             "service_tier": "auto", "background": False, "conversation": "conv_1", "safety_identifier": "s",
             "max_tool_calls": 3, "prompt": {"id": "pmpt_1"}},
            {},
        ),
        (
            {"stream": True, "stream_options": {"include_usage": True}, "temperature": 0.2, "top_p": 0.9,
             "user": "u", "seed": 7, "stop": ["\n"], "presence_penalty": 0.1, "frequency_penalty": 0.2,
             "logprobs": True, "top_logprobs": 2},
            {"stream": True, "stream_options": {"include_usage": True}, "temperature": 0.2, "top_p": 0.9,
             "user": "u", "seed": 7, "stop": ["\n"], "presence_penalty": 0.1, "frequency_penalty": 0.2,
             "logprobs": True, "top_logprobs": 2},
        ),
    ],
)  # fmt: skip
def test_top_level_fields(fields: Json, expected: Json) -> None:
    chat = translate(input="hi", **fields)
    assert chat == {
        "model": "openai/gpt-5.2",
        "messages": [{"role": "user", "content": "hi"}],
        **expected,
    }


FLAT = {"type": "function", "name": "read", "description": "Read a file", "parameters": {"type": "object"}, "strict": True}  # fmt: skip
NESTED = {"type": "function", "function": {"name": "read", "description": "Read a file", "parameters": {"type": "object"}, "strict": True}}  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"tools": [FLAT]}, {"tools": [NESTED]}),
        ({"tools": [{"type": "function", "name": "ls"}]}, {"tools": [{"type": "function", "function": {"name": "ls"}}]}),
        (
            {"tools": [{"type": "web_search"}, FLAT, {"type": "file_search", "vector_store_ids": ["v"]},
                       {"type": "computer_use_preview", "display_width": 1, "display_height": 1, "environment": "mac"},
                       {"type": "custom", "name": "ApplyPatch", "format": {"type": "grammar"}}]},
            {"tools": [NESTED]},
        ),
        ({"tools": [FLAT], "tool_choice": "required"}, {"tools": [NESTED], "tool_choice": "required"}),
        ({"tools": [FLAT], "tool_choice": "none"}, {"tools": [NESTED], "tool_choice": "none"}),
        (
            {"tools": [FLAT], "tool_choice": {"type": "function", "name": "read"}, "parallel_tool_calls": False},
            {"tools": [NESTED], "tool_choice": {"type": "function", "function": {"name": "read"}}, "parallel_tool_calls": False},
        ),
        # OpenAI's chat refuses tool_choice / parallel_tool_calls without tools
        ({"tools": [{"type": "web_search"}], "tool_choice": "auto", "parallel_tool_calls": True}, {}),
        ({"tools": [], "tool_choice": "auto"}, {}),
        ({"parallel_tool_calls": True}, {}),
    ],
)  # fmt: skip
def test_tools_and_tool_choice(fields: Json, expected: Json) -> None:
    chat = translate(input="hi", **fields)
    assert {k: v for k, v in chat.items() if k not in {"model", "messages"}} == expected


def test_fields_the_gateway_does_not_know_pass_through() -> None:
    assert translate(input="hi", x_nanogpt_option={"a": 1})["x_nanogpt_option"] == {"a": 1}


def test_the_payload_is_not_changed() -> None:
    body = client_body("cursor_follow_up")
    before = json.dumps(body)
    to_chat(body)
    assert json.dumps(body) == before


# --- what Cursor sends --------------------------------------------------------------------------

SYSTEM = {"role": "system", "content": [{"type": "text", "text": "You are an AI coding assistant, powered by GPT-5.2. You operate in Cursor."}]}  # fmt: skip
USER = {"role": "user", "content": [
    {"type": "text", "text": "<user_info>OS: darwin 25.3.0, shell: zsh, workspace: /Users/dev/shop</user_info>"},
    {"type": "text", "text": "<user_query>Why does test_checkout fail?</user_query>"},
]}  # fmt: skip
CURSOR_TOOLS = [
    {"type": "function", "function": {
        "name": "read_file", "description": "Read the contents of a file.",
        "parameters": {"type": "object", "properties": {"target_file": {"type": "string"}, "offset": {"type": "integer"}, "limit": {"type": "integer"}},
                       "required": ["target_file"], "additionalProperties": False},
        "strict": False}},
    {"type": "function", "function": {
        "name": "run_terminal_cmd", "description": "Run a command in the user's terminal.",
        "parameters": {"type": "object", "properties": {"command": {"type": "string"}, "is_background": {"type": "boolean"}},
                       "required": ["command", "is_background"]},
        "strict": False}},
]  # fmt: skip
CURSOR_CHAT = {
    "model": "openai/gpt-5.2", "stream": True, "stream_options": {"include_usage": True},
    "tools": CURSOR_TOOLS, "tool_choice": "auto", "parallel_tool_calls": True, "reasoning_effort": "medium",
}  # fmt: skip
FOLLOW_UP = [
    SYSTEM, USER,
    {"role": "assistant", "content": [{"type": "text", "text": "Let me look at the test first."}],
     "tool_calls": [{"id": "call_Xy12", "type": "function",
                     "function": {"name": "read_file", "arguments": '{"target_file":"tests/test_checkout.py"}'}}]},
    {"role": "tool", "tool_call_id": "call_Xy12", "content": "def test_checkout():\n    assert total([3, 4]) == 8\n"},
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cursor_first_turn", {**CURSOR_CHAT, "messages": [SYSTEM, USER]}),
        ("cursor_follow_up", {**CURSOR_CHAT, "messages": FOLLOW_UP}),
    ],
)
def test_cursor_bodies_become_the_chat_bodies_they_mean(name: str, expected: Json) -> None:
    body = client_body(name)
    assert is_responses_shaped(body)
    assert to_chat(body) == expected


# --- properties ---------------------------------------------------------------------------------

JUNK: list[Any] = [None, 0, "", "x", [], {}, [None], {"type": None}, ["x"], True]


def mutations(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """(path, junk) for every position in `value` and every junk value."""
    for junk in JUNK:
        yield path, junk
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()  # fmt: skip
    for key, child in children:
        yield from mutations(child, (*path, key))


def replaced(value: Any, path: tuple[Any, ...], junk: Any) -> Any:
    if not path:
        return junk
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], junk)
    return copy


def test_any_corruption_of_cursors_input_is_translated_or_refused_never_a_crash() -> None:
    body = client_body("cursor_follow_up")
    checked = refused = 0
    for path, junk in mutations(body["input"]):
        mutated = {**body, "input": replaced(body["input"], path, junk)}
        try:
            chat = to_chat(mutated)
        except InvalidRequest as error:
            assert error.param is not None and error.param.startswith("input"), (path, junk)
            refused += 1
        else:
            assert not RESPONSES_ONLY & set(chat), (path, junk)
            assert chat["messages"], (path, junk)
        checked += 1
    assert checked > 400 and 0 < refused < checked


@pytest.mark.parametrize("name", ["cursor_first_turn", "cursor_follow_up"])
@pytest.mark.parametrize("instructions", [None, "Be brief."])
def test_no_responses_only_field_survives(name: str, instructions: str | None) -> None:
    body = client_body(name) | {"instructions": instructions, "metadata": {}}
    chat = to_chat(body)
    assert not RESPONSES_ONLY & set(chat)
    assert not {"reasoning", "text", "truncation", "prompt_cache_key", "max_output_tokens"} & set(chat)  # fmt: skip


# --- the openai SDK's request types -------------------------------------------------------------


def conforms(value: Any, tp: Any, path: str = "body") -> list[str]:
    """Where `value` breaks the openai SDK's typed-dict request type `tp`: like the SDK's own
    types but eager (pydantic checks `Iterable` fields lazily) and no unknown keys allowed."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Required, typing.NotRequired, typing.Annotated):
        return conforms(value, args[0], path)
    if origin is typing.Union:
        failures = [conforms(value, arg, path) for arg in args]
        return [] if [] in failures else min(failures, key=len)
    if origin is typing.Literal:
        return [] if value in args else [f"{path}: {value!r} not in {args}"]
    if typing_extensions.is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{path}: expected an object for {tp.__name__}"]
        hints = typing.get_type_hints(tp, include_extras=True)
        required = {k for k, t in hints.items() if typing.get_origin(t) is typing.Required}
        problems = [f"{path}: unknown key {k!r} for {tp.__name__}" for k in value.keys() - hints]
        problems += [f"{path}: {tp.__name__} needs {k!r}" for k in required - value.keys()]
        for key in value.keys() & hints:
            problems += conforms(value[key], hints[key], f"{path}.{key}")
        return problems
    if origin in (list, Iterable, Sequence) or getattr(origin, "__name__", "") == "SequenceNotStr":
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [p for i, item in enumerate(value) for p in conforms(item, args[0], f"{path}[{i}]")]
    if origin is dict:
        return [] if isinstance(value, dict) else [f"{path}: expected an object"]
    if tp is object:
        return []
    if tp is type(None):
        return [] if value is None else [f"{path}: expected null"]
    if tp is float:
        tp = (int, float)
    return [] if isinstance(value, tp) and not (isinstance(value, bool) and tp is int) else [f"{path}: expected {tp}"]  # fmt: skip


def test_the_conformance_check_can_fail() -> None:
    request = params.CompletionCreateParamsStreaming
    good = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    assert conforms(good, request) == []
    assert conforms({**good, "input": "hi"}, request) == ["body: unknown key 'input' for CompletionCreateParamsStreaming"]  # fmt: skip
    assert conforms({**good, "messages": [{"role": "developer", "content": [{"type": "input_text", "text": "x"}]}]}, request)  # fmt: skip
    assert conforms({**good, "tools": [FLAT]}, request)
    assert conforms({"model": "m", "stream": True}, request)


@pytest.mark.parametrize("name", ["cursor_first_turn", "cursor_follow_up"])
def test_cursor_bodies_translate_to_what_the_openai_sdk_would_send(name: str) -> None:
    assert conforms(to_chat(client_body(name)), params.CompletionCreateParamsStreaming) == []


def every_rule_body() -> Json:
    """One body that exercises every translation rule at once."""
    items = [
        {"role": "developer", "content": "d"}, {"role": "user", "content": [
            {"type": "input_text", "text": "u"}, {"type": "input_image", "image_url": "https://x/i.png", "detail": "high"}]},
        {"type": "reasoning", "id": "rs", "summary": [], "encrypted_content": "e"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a"}, {"type": "refusal", "refusal": "r"}]},
        CALL, CALL_2,
        {"type": "function_call_output", "call_id": "call_1", "output": "o"},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "p"}]},
    ]  # fmt: skip
    return {
        "model": "openai/gpt-5.2", "input": items, "instructions": "i", "stream": False,
        "max_output_tokens": 64, "reasoning": {"effort": "low"}, "tools": [FLAT, {"type": "web_search"}],
        "tool_choice": {"type": "function", "name": "read"}, "parallel_tool_calls": False,
        "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}, "strict": True}},
        "temperature": 0.5, "user": "u", "seed": 1, "stop": "x", "include": [], "store": True,
    }  # fmt: skip


def test_every_rule_at_once_is_what_the_openai_sdk_would_send() -> None:
    chat = to_chat(every_rule_body())
    assert conforms(chat, params.CompletionCreateParamsNonStreaming) == []
    assert [m["role"] for m in chat["messages"]] == ["system", "system", "user", "assistant", "tool", "tool"]  # fmt: skip


# --- the demo NanoGPT accepts it ----------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def post_chat(body: Json) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_demo_upstream())
    headers = {"Authorization": f"Bearer {DEMO_TEAM_KEY}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://demo", headers=headers) as c:
        return await c.post("/api/v1/chat/completions", json=body)


@pytest.mark.anyio
async def test_the_untranslated_body_is_what_nanogpt_refuses() -> None:
    response = await post_chat(client_body("cursor_first_turn"))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["cursor_first_turn", "cursor_follow_up"])
async def test_nanogpt_streams_chat_chunks_for_a_translated_cursor_body(name: str) -> None:
    response = await post_chat(to_chat(client_body(name)))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(frame) for frame in frames[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[-1]["usage"]["prompt_tokens"] > 0  # include_usage kept


@pytest.mark.anyio
async def test_nanogpt_answers_the_every_rule_body() -> None:
    response = await post_chat(to_chat(every_rule_body()))
    assert response.status_code == 200
    assert response.json()["object"] == "chat.completion"
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"  # the body forces the `read` tool
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "read"
