"""The OpenAI Responses API as NanoGPT answers it: a `response` object, or its typed event stream
(`response.created` ... `response.completed`, each with a `sequence_number`) ending in
`data: [DONE]`; usage rides on the terminal event's `response`. Offered function tools, the demo
answers with a `function_call` item (arguments streamed as `function_call_arguments` events); after
a `function_call_output` it answers in text; `text.format` asks for JSON output.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.demo_upstream import wire
from gateway.demo_upstream.chat import TEXT_IDS
from gateway.demo_upstream.text import cut, json_reply, output_tokens, pieces, reply, words
from gateway.demo_upstream.tools import Call, Mode, Tool, call, fragments, pick
from gateway.demo_upstream.wire import Json

# Fields of a Responses API object that echo settings the stand-in does not act on.
RESPONSE_ECHO: Json = {
    "previous_response_id": None, "truncation": "disabled", "reasoning": None, "temperature": 1,
    "top_p": 1, "presence_penalty": 0, "frequency_penalty": 0, "top_logprobs": 0,
    "max_tool_calls": None, "user": None, "background": False, "safety_identifier": None,
    "prompt_cache_key": None, "service_tier": "auto"}  # fmt: skip


def _echo(body: Json) -> Json:
    """The request's tool and text settings as the response repeats them: function tools with
    NanoGPT's nullable fields filled in."""
    given = body.get("tools") or []
    fields = ("description", "parameters", "strict")
    tools = [
        {**t, **{k: t.get(k) for k in fields}} if t.get("type") == "function" else t for t in given
    ]
    text = body.get("text")
    text = text if isinstance(text, dict) else {}
    return {
        "tools": tools,
        "tool_choice": body.get("tool_choice", "auto"),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "text": {"format": {"type": "text"}, "verbosity": "medium", **text},
    }


def message_item(content: str, status: str) -> Json:
    text = {"type": "output_text", "text": content, "annotations": [], "logprobs": []}
    return {"type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": status,
            "role": "assistant", "content": [text]}  # fmt: skip


def call_item(made: Call) -> Json:
    return {"type": "function_call", "id": f"fc_{made.id}", "call_id": f"call_{made.id}",
            "name": made.name, "arguments": made.arguments, "status": "completed"}  # fmt: skip


def response_object(body: Json, model: str, item: Json, tokens_in: int, spent: str) -> Json:
    """A finished Responses API object answering `body` with one output `item`, whose output
    tokens are the words of `spent`."""
    tokens_out, reasoning = output_tokens(spent, model)
    now, status = int(time.time()), "incomplete" if item["status"] == "incomplete" else "completed"
    content = item.get("content") or [{}]
    usage = {"input_tokens": tokens_in, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": tokens_out, "output_tokens_details": {"reasoning_tokens": reasoning},
             "total_tokens": tokens_in + tokens_out}  # fmt: skip
    return {"id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": now,
            "completed_at": now, "model": model, "status": status, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status != "completed" else None,
            "instructions": body.get("instructions"), **RESPONSE_ECHO, **_echo(body),
            "max_output_tokens": body.get("max_output_tokens"), "store": body.get("store") is True,
            "output": [item], "output_text": content[0].get("text", ""), "usage": usage,
            "metadata": body.get("metadata") or {}}  # fmt: skip


def _item_events(index: int, item: Json) -> list[Json]:
    """The events that build one output item: a message's text part word by word, or a
    function call's arguments in fragments."""
    at = {"item_id": item["id"], "output_index": index}
    if item["type"] == "function_call":
        arguments = item["arguments"]
        return [{"type": "response.output_item.added", "output_index": index,
                 "item": {**item, "arguments": "", "status": "in_progress"}},
                *({"type": "response.function_call_arguments.delta", **at, "delta": piece}
                  for piece in fragments(arguments)),
                {"type": "response.function_call_arguments.done", **at, "arguments": arguments},
                {"type": "response.output_item.done", "output_index": index, "item": item}]  # fmt: skip
    [part] = item["content"]
    text, at = part["text"], {**at, "content_index": 0}
    return [{"type": "response.output_item.added", "output_index": index,
             "item": {**item, "status": "in_progress", "content": []}},
            {"type": "response.content_part.added", **at, "part": {**part, "text": ""}},
            *({"type": "response.output_text.delta", **at, "delta": piece, "logprobs": []}
              for piece in pieces(text)),
            {"type": "response.output_text.done", **at, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **at, "part": part},
            {"type": "response.output_item.done", "output_index": index, "item": item}]  # fmt: skip


def response_events(response: Json) -> list[Json]:
    """The Responses API stream of a finished `response`, event by event: usage comes on the
    last, `response.completed` (or `response.incomplete`)."""
    start = {**response, "status": "in_progress", "completed_at": None, "output": [],
             "output_text": "", "usage": None, "incomplete_details": None}  # fmt: skip
    events: list[Json] = [{"type": "response.created", "response": start},
                          {"type": "response.in_progress", "response": start}]  # fmt: skip
    for index, item in enumerate(response["output"]):
        events += _item_events(index, item)
    events.append({"type": f"response.{response['status']}", "response": response})
    return [{**event, "sequence_number": n} for n, event in enumerate(events)]


def _tools(body: Json) -> tuple[list[Tool], Mode, str | None]:
    """Function tools (others, like web search, the demo cannot run) and `tool_choice`, as the
    Responses API spells them, `allowed_tools` included."""
    given = body.get("tools") or []
    if not isinstance(given, list) or not all(isinstance(t, dict) for t in given):
        raise wire.invalid("'tools' must be a list of tools", "tools", "invalid_tool_spec")
    functions = [t for t in given if t.get("type") == "function"]
    if not all(isinstance(t.get("name"), str) for t in functions):
        message = "function tools need a 'name': {type: 'function', name, parameters}"
        raise wire.invalid(message, "tools", "invalid_tool_spec")
    tools = [Tool(t["name"], t.get("parameters")) for t in functions]
    choice = body.get("tool_choice", "auto")
    kind = choice.get("type") if isinstance(choice, dict) else None
    if choice in ("none", "auto", "required"):
        return tools, choice, None
    if kind == "function" and choice.get("name") in {t.name for t in tools}:
        return tools, "required", choice["name"]
    if kind == "allowed_tools" and choice.get("mode", "auto") in ("auto", "required"):
        listed = choice.get("tools") if isinstance(choice.get("tools"), list) else []
        allowed = {t.get("name") for t in listed if isinstance(t, dict)}
        return [t for t in tools if t.name in allowed], choice.get("mode", "auto"), None
    message = "'tool_choice' must be none, auto, required, a function in 'tools' or allowed_tools"
    raise wire.invalid(message, "tool_choice")


def _schema(body: Json) -> tuple[bool, Any]:
    """Whether `text.format` asks for JSON, and its schema: OpenAI's flat `json_schema` format
    (`name`, `schema`) or NanoGPT's documented nesting under `json_schema`."""
    text = body.get("text")
    form = text.get("format") if isinstance(text, dict) else None
    kind = form.get("type") if isinstance(form, dict) else None
    if form is None or kind == "text":
        return False, None
    if kind == "json_object":
        return True, None
    nested = form.get("json_schema")
    schema = nested.get("schema") if isinstance(nested, dict) else form.get("schema")
    if kind != "json_schema" or not isinstance(schema, dict):
        message = "'text.format' must be text, json_object or json_schema with a 'schema'"
        raise wire.invalid(message, "text.format")
    return True, schema


def _heard(items: list[Json]) -> tuple[str, bool]:
    """What the reply answers: the output of a function call when the input ends with one, else
    the user's last words; and whether it is a function's output."""
    if items[-1].get("type") == "function_call_output":
        return wire.text_of(items[-1].get("output")), True
    return wire.last_user_text(items), False


def _read(item: Json) -> str:
    """What the model reads of an input item: a message's text, a call's arguments, an output."""
    output = item.get("output")
    parts = [wire.text_of(item.get("content")), item.get("arguments"), wire.text_of(output)]
    return " ".join(p for p in parts if isinstance(p, str) and p)


def _answer(body: Json, model: str, items: list[Json], tokens_in: int) -> Json:
    limit = wire.limit_of(body.get("max_output_tokens"), "max_output_tokens", 16)
    tools, mode, named = _tools(body)
    structured, schema = _schema(body)
    last = items[-1]
    user_turn = last.get("type", "message") == "message" and last.get("role") == "user"
    tool = pick(tools, mode, named, user_turn)
    if tool is not None:
        made = call(tool, len(items))
        return response_object(body, model, call_item(made), tokens_in, made.arguments)
    said, from_tool = _heard(items)
    if structured:
        content, was_cut = cut(json_reply(said, schema), limit)
    else:
        content, was_cut = reply(said, limit, tool_result=from_tool)
    item = message_item(content, "incomplete" if was_cut else "completed")
    return response_object(body, model, item, tokens_in, content)


async def responses(request: Request) -> Response:
    """The OpenAI Responses API: `input` as a string or a list of items, `instructions`."""
    body, model = await wire.parse(request, TEXT_IDS)
    instructions, items = body.get("instructions"), body.get("input")
    if instructions is not None and not isinstance(instructions, str):
        raise wire.invalid("'instructions' must be a string", "instructions")
    items = [{"role": "user", "content": items}] if isinstance(items, str) else items
    if not (isinstance(items, list) and items and all(isinstance(i, dict) for i in items)):
        raise wire.invalid("'input' must be a string or a non-empty list of input items", "input")
    tokens_in = sum(words(_read(i)) + 3 for i in items) + words(instructions)
    response = _answer(body, model, items, tokens_in)
    if body.get("stream") is not True:
        return JSONResponse(response)
    events = [wire.frame(event, event["type"]) for event in response_events(response)]
    return wire.sse(request, [*events, wire.frame("[DONE]")])
