"""Chat and text completions as NanoGPT answers them: one JSON body with `x_nanogpt_pricing` on
top, or `chat.completion.chunk` / `text_completion` SSE frames whose finish frame carries the
charge (and `usage`, when asked with `stream_options.include_usage`), then `data: [DONE]`.
Chat offers tool calls (`tools`, `tool_choice`) and JSON output (`response_format`).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.demo_upstream import catalog as cat
from gateway.demo_upstream import wire
from gateway.demo_upstream.text import (
    REASONING,
    cut,
    json_reply,
    output_tokens,
    pieces,
    reply,
    words,
)
from gateway.demo_upstream.tools import Call, Mode, Tool, call, fragments, pick
from gateway.demo_upstream.wire import Json

TEXT_IDS = frozenset(m["id"] for m in cat.TEXT_MODELS)


def chat_usage(prompt: int, content: str, model: str) -> Json:
    out, reasoning = output_tokens(content, model)
    usage: Json = {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out}
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def nanogpt_pricing(model: str, usage: Json) -> Json:
    """NanoGPT's `x_nanogpt_pricing`: the USD charged, from the catalog's per-million prices."""
    tokens_in, tokens_out = usage["prompt_tokens"], usage["completion_tokens"]
    price = cat.TEXT_PRICES.get(model, {})
    usd = (tokens_in * price.get("prompt", 0) + tokens_out * price.get("completion", 0)) / 1e6
    cost = round(usd, 12)
    return {"amount": cost, "currency": "USD", "cost": cost, "costUsd": cost,
            "inputTokens": tokens_in, "outputTokens": tokens_out, "cacheCost": 0,
            "paymentSource": "USD", "billedToTeam": False, "billedTeamId": None,
            "billedTeamName": None}  # fmt: skip


def _stream(request: Request, body: Json, base: Json, choices: list[Json], usage: Json) -> Response:
    """Chunks as NanoGPT streams them: the finish chunk itself carries `x_nanogpt_pricing` and,
    when asked with `stream_options.include_usage`, `usage`; no empty-choices chunk follows."""
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    *content, last = choices
    events = [
        {**base, "choices": [c], **({"usage": None} if include_usage else {})} for c in content
    ]
    final = {**base, "choices": [last], **({"usage": usage} if include_usage else {})}
    events.append({**final, "x_nanogpt_pricing": nanogpt_pricing(base["model"], usage)})
    return wire.sse(request, [*map(wire.frame, events), wire.frame("[DONE]")])


def _answer(request: Request, body: Json, base: Json, choices: list[Json], usage: Json) -> Response:
    """Chat or text completion: streamed, or one JSON answer with `x_nanogpt_pricing` on top."""
    if body.get("stream") is True:
        return _stream(request, body, base, choices, usage)
    pricing = nanogpt_pricing(base["model"], usage)
    return JSONResponse({**base, "choices": choices, "usage": usage, "x_nanogpt_pricing": pricing})


def _tools(body: Json) -> tuple[list[Tool], Mode, str | None]:
    """`tools` and `tool_choice` as OpenAI spells them: function tools only (NanoGPT's rule)."""
    given = body.get("tools") or []
    listed = given if isinstance(given, list) else [None]
    specs: list[Any] = [t.get("function") if isinstance(t, dict) else None for t in listed]
    if not all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in specs):
        message = "'tools' must be a list of {type: 'function', function: {name, parameters}}"
        raise wire.invalid(message, "tools", "invalid_tool_spec")
    tools = [Tool(f["name"], f.get("parameters")) for f in specs]
    choice = body.get("tool_choice", "auto")
    if choice in ("none", "auto", "required"):
        return tools, choice, None
    named = choice.get("function") if isinstance(choice, dict) else None
    name = named.get("name") if isinstance(named, dict) else None
    if not isinstance(name, str) or name not in {t.name for t in tools}:
        message = "'tool_choice' must be 'none', 'auto', 'required' or a function in 'tools'"
        raise wire.invalid(message, "tool_choice")
    return tools, "required", name


def _schema(body: Json) -> tuple[bool, Any]:
    """Whether `response_format` asks for JSON, and the schema it must follow (None: any object)."""
    given = body.get("response_format")
    kind = given.get("type") if isinstance(given, dict) else given
    if given is None or kind == "text":
        return False, None
    if kind == "json_object":
        return True, None
    spec = given.get("json_schema") if kind == "json_schema" else None
    if not isinstance(spec, dict):
        message = "'response_format' must be text, json_object or json_schema with a 'json_schema'"
        raise wire.invalid(message, "response_format")
    return True, spec.get("schema")


def _heard(msgs: list[Json]) -> tuple[str, bool]:
    """What the reply answers: a tool's result when the conversation ends with one, else the
    user's last words; and whether it is a tool's result."""
    if msgs[-1].get("role") == "tool":
        return wire.text_of(msgs[-1].get("content")), True
    return wire.last_user_text(msgs), False


def _deltas(content: str | None, made: Call | None) -> list[Json]:
    """The deltas of a streamed answer: text word by word, or (OpenAI's way) a tool call's id,
    type and name with empty arguments first, then the arguments in fragments."""
    if made is None:
        return [
            {"role": "assistant", "content": ""},
            *({"content": p} for p in pieces(content or "")),
        ]
    function = {"name": made.name, "arguments": ""}
    head = {"index": 0, "id": f"call_{made.id}", "type": "function", "function": function}
    rest = [
        {"tool_calls": [{"index": 0, "function": {"arguments": f}}]}
        for f in fragments(made.arguments)
    ]
    return [{"role": "assistant", "content": None, "tool_calls": [head]}, *rest]


async def chat_completions(request: Request) -> Response:
    body, model = await wire.parse(request, TEXT_IDS)
    msgs = wire.messages_of(body.get("messages"))
    limit = wire.limit_of(body.get("max_completion_tokens", body.get("max_tokens")))
    tools, mode, named = _tools(body)
    structured, schema = _schema(body)
    prompt = sum(words(wire.text_of(m.get("content"))) + 3 for m in msgs)
    tool = pick(tools, mode, named, user_turn=msgs[-1].get("role") == "user")
    made = call(tool, len(msgs)) if tool else None
    content: str | None = None
    if made is not None:
        finish, usage = "tool_calls", chat_usage(prompt, f"{made.name} {made.arguments}", model)
    else:
        said, from_tool = _heard(msgs)
        if structured:
            content, was_cut = cut(json_reply(said, schema), limit)
        else:
            content, was_cut = reply(said, limit, tool_result=from_tool)
        finish, usage = "length" if was_cut else "stop", chat_usage(prompt, content, model)
    if body.get("stream") is True:
        deltas = [*_deltas(content, made), {}]
        choices: list[Json] = [{"index": 0, "delta": d, "finish_reason": None} for d in deltas]
        choices[-1]["finish_reason"] = finish
        base = wire.base("chatcmpl", "chat.completion.chunk", model)
        return _stream(request, body, base, choices, usage)
    message: Json = {"role": "assistant", "content": content}
    if made is not None:
        function = {"name": made.name, "arguments": made.arguments}
        message["tool_calls"] = [
            {"id": f"call_{made.id}", "type": "function", "function": function}
        ]
    if model.endswith(":thinking"):
        message["reasoning_content"] = REASONING
    choice = {"index": 0, "message": message, "finish_reason": finish}
    return _answer(request, body, wire.base("chatcmpl", "chat.completion", model), [choice], usage)


async def completions(request: Request) -> Response:
    body, model = await wire.parse(request, TEXT_IDS)
    prompts = wire.strings(body.get("prompt"), "prompt")
    text, was_cut = reply(prompts[-1], wire.limit_of(body.get("max_tokens")))
    usage = chat_usage(sum(words(p) for p in prompts), text, model)
    streaming = body.get("stream") is True
    texts = [*pieces(text), ""] if streaming else [text]
    choices = [{"text": t, "index": 0, "logprobs": None, "finish_reason": None} for t in texts]
    choices[-1]["finish_reason"] = "length" if was_cut else "stop"
    return _answer(request, body, wire.base("cmpl", "text_completion", model), choices, usage)
