"""Anthropic's Messages API as NanoGPT answers it for any text model: a `message`, or the named
event stream (`message_start`, `content_block_*`, `message_delta` with usage, `message_stop`);
and `count_tokens`. Offered tools, the demo answers a `tool_use` block (its input streamed as
`input_json_delta`, `stop_reason` `tool_use`); after a `tool_result` it answers in text. Errors
on these paths use Anthropic's envelope (`wire`). Query strings (Claude Code's `?beta=true`) are
accepted and ignored.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.demo_upstream import wire
from gateway.demo_upstream.chat import TEXT_IDS
from gateway.demo_upstream.text import REASONING, output_tokens, pieces, reply, words
from gateway.demo_upstream.tools import Mode, Tool, call, fragments, pick
from gateway.demo_upstream.wire import Json

_USAGE_KEYS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def _blocks(content: Any) -> list[Json]:
    """A message's content (or `system`) as blocks: a string is one text block."""
    listed = [{"type": "text", "text": content}] if isinstance(content, str) else content
    return [b for b in listed if isinstance(b, dict)] if isinstance(listed, list) else []


def _read(block: Json) -> str:
    """What the model reads of a block: text, a tool's result, a tool call's input."""
    if block.get("type") == "tool_result":
        return wire.text_of(block.get("content"))
    if block.get("type") == "tool_use":
        return json.dumps(block.get("input"))
    return block["text"] if isinstance(block.get("text"), str) else ""


def anthropic_input(body: Json) -> tuple[int, int]:
    """Input tokens read fresh and from cache (everything up to the last `cache_control`
    block) of an Anthropic Messages request."""
    msgs = wire.messages_of(body.get("messages"))
    blocks = [
        b for c in [body.get("system"), *(m.get("content") for m in msgs)] for b in _blocks(c)
    ]
    marked = [i for i, b in enumerate(blocks) if b.get("cache_control")]
    cached = sum(words(_read(b)) for b in blocks[: marked[-1] + 1]) if marked else 0
    total = sum(words(_read(b)) for b in blocks) + 3 * len(msgs)
    return total - cached, cached


def _heard(msgs: list[Json]) -> tuple[str, bool]:
    """What the reply answers: the tool results in the last message if it carries any, else
    the user's last words; and whether they are tool results."""
    results = [b for b in _blocks(msgs[-1].get("content")) if b.get("type") == "tool_result"]
    if results:
        return " ".join(_read(b) for b in results), True
    return wire.last_user_text(msgs), False


def _tools(body: Json) -> tuple[list[Tool], Mode, str | None]:
    """Client tools (`name`, `input_schema`; Anthropic's own server tools the demo cannot run)
    and `tool_choice`: Anthropic's objects, or NanoGPT's documented strings."""
    given = body.get("tools") or []
    if not isinstance(given, list) or not all(isinstance(t, dict) for t in given):
        raise wire.invalid("'tools' must be a list of tools", "tools")
    custom = [t for t in given if t.get("type", "custom") == "custom"]
    if not all(isinstance(t.get("name"), str) for t in custom):
        raise wire.invalid("every tool needs a 'name' and an 'input_schema'", "tools")
    tools = [Tool(t["name"], t.get("input_schema")) for t in custom]
    choice = body.get("tool_choice", {"type": "auto"})
    kind = choice.get("type") if isinstance(choice, dict) else choice
    modes: dict[Any, Mode] = {
        "auto": "auto",
        "none": "none",
        "any": "required",
        "required": "required",
    }
    if kind in modes:
        return tools, modes[kind], None
    if kind == "tool" and choice.get("name") in {t.name for t in tools}:
        return tools, "required", choice["name"]
    message = "'tool_choice' must be auto, any, none, or a tool named in 'tools'"
    raise wire.invalid(message, "tool_choice")


def anthropic_message(model: str, blocks: list[Json], stop: str, spent: str, usage: Json) -> Json:
    """An Anthropic Messages answer of `blocks`, whose output tokens are the words of `spent`;
    `:thinking` models open with a thinking block."""
    tokens_out, reasoning = output_tokens(spent, model)
    if reasoning:
        blocks = [{"type": "thinking", "thinking": REASONING, "signature": "demo"}, *blocks]
    usage = {**usage, "output_tokens": tokens_out, "cache_creation_input_tokens": 0,
             "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
             "service_tier": "standard"}  # fmt: skip
    return {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant",
            "model": model, "content": blocks, "stop_reason": stop, "stop_sequence": None,
            "usage": usage}  # fmt: skip


def _block_events(index: int, block: Json) -> list[Json]:
    """One content block as Anthropic streams it: opened empty, filled by deltas, stopped."""
    kind, at = block["type"], {"index": index}
    if kind == "tool_use":
        opened = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": f}
                  for f in fragments(json.dumps(block["input"], separators=(",", ":")))]  # fmt: skip
    else:
        opened = {**block, kind: ""} | ({"signature": ""} if kind == "thinking" else {})
        deltas = [{"type": f"{kind}_delta", kind: piece} for piece in pieces(block[kind])]
        if kind == "thinking":
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
    return [{"type": "content_block_start", **at, "content_block": opened},
            *({"type": "content_block_delta", **at, "delta": d} for d in deltas),
            {"type": "content_block_stop", **at}]  # fmt: skip


def anthropic_events(message: Json) -> list[Json]:
    """The Messages stream of `message`: usage but output tokens on `message_start`, the token
    counts again on `message_delta` (NanoGPT sends input and output tokens there)."""
    usage = message["usage"]
    opening = {**usage, "output_tokens": 0}
    start = {**message, "content": [], "stop_reason": None, "usage": opening}
    events: list[Json] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(message["content"]):
        events += _block_events(index, block)
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    closing = {k: usage[k] for k in (*_USAGE_KEYS, "output_tokens")}
    return [*events, {"type": "message_delta", "delta": delta, "usage": closing},
            {"type": "message_stop"}]  # fmt: skip


async def messages(request: Request) -> Response:
    """Anthropic's Messages API (any text model), with Anthropic's named stream events."""
    body, model = await wire.parse(request, TEXT_IDS)
    if "max_tokens" not in body:
        raise wire.invalid("max_tokens is required", "max_tokens")
    tokens_in, cached = anthropic_input(body)
    limit = wire.limit_of(body["max_tokens"])
    tools, mode, named = _tools(body)
    msgs = body["messages"]
    said, from_tool = _heard(msgs)
    tool = pick(tools, mode, named, user_turn=msgs[-1].get("role") == "user" and not from_tool)
    usage = {"input_tokens": tokens_in, "cache_read_input_tokens": cached}
    if tool is not None:
        made = call(tool, len(msgs))
        use = {"type": "tool_use", "id": f"toolu_{made.id}", "name": made.name, "input": made.input}
        message = anthropic_message(model, [use], "tool_use", made.arguments, usage)
    else:
        content, was_cut = reply(said, limit, tool_result=from_tool)
        stop = "max_tokens" if was_cut else "end_turn"
        message = anthropic_message(
            model, [{"type": "text", "text": content}], stop, content, usage
        )
    if body.get("stream") is not True:
        return JSONResponse(message)
    return wire.sse(request, [wire.frame(e, e["type"]) for e in anthropic_events(message)])


async def count_tokens(request: Request) -> Response:
    body, _ = await wire.parse(request, TEXT_IDS)
    tokens_in, cached = anthropic_input(body)
    return JSONResponse({"input_tokens": tokens_in + cached})
