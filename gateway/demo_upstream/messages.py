"""Anthropic's Messages API as NanoGPT answers it for any text model: a `message`, or the named
event stream (`message_start`, `content_block_*`, `message_delta` with output usage,
`message_stop`); and `count_tokens`. Errors on these paths use Anthropic's envelope (`wire`).
"""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.demo_upstream import wire
from gateway.demo_upstream.chat import TEXT_IDS
from gateway.demo_upstream.text import REASONING, output_tokens, pieces, reply, words
from gateway.demo_upstream.wire import Json


def anthropic_input(body: Json) -> tuple[int, int, str]:
    """Input tokens read fresh and from cache (everything up to the last `cache_control`
    block), and the last user text, of an Anthropic Messages request."""
    msgs = wire.messages_of(body.get("messages"))
    contents = [body.get("system"), *(m.get("content") for m in msgs)]
    blocks = [b for c in contents for b in ([{"text": c}] if isinstance(c, str) else c or [])]
    blocks = [b for b in blocks if isinstance(b, dict) and isinstance(b.get("text"), str)]
    marked = [i for i, b in enumerate(blocks) if b.get("cache_control")]
    cached = sum(words(b["text"]) for b in blocks[: marked[-1] + 1]) if marked else 0
    total = sum(words(b["text"]) for b in blocks) + 3 * len(msgs)
    return total - cached, cached, wire.last_user_text(msgs)


def anthropic_message(model: str, content: str, cut: bool, tokens_in: int, cached: int) -> Json:
    """An Anthropic Messages answer; `:thinking` models open with a thinking block."""
    tokens_out, reasoning = output_tokens(content, model)
    blocks: list[Json] = [{"type": "text", "text": content}]
    if reasoning:
        blocks.insert(0, {"type": "thinking", "thinking": REASONING, "signature": "demo"})
    usage = {"input_tokens": tokens_in, "output_tokens": tokens_out,
             "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached,
             "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
             "service_tier": "standard"}  # fmt: skip
    return {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant",
            "model": model, "content": blocks, "stop_reason": "max_tokens" if cut else "end_turn",
            "stop_sequence": None, "usage": usage}  # fmt: skip


def anthropic_events(message: Json) -> list[Json]:
    """The Messages stream of `message`: input usage on `message_start`, output tokens on
    `message_delta`."""
    usage = message["usage"]
    opening = {k: usage[k] for k in ("input_tokens", "cache_creation_input_tokens",
                                     "cache_read_input_tokens")} | {"output_tokens": 0}  # fmt: skip
    start = {**message, "content": [], "stop_reason": None, "usage": opening}
    events: list[Json] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        events.append({"type": "content_block_start", "index": index,
                       "content_block": {**block, kind: ""}})  # fmt: skip
        events += [{"type": "content_block_delta", "index": index,
                    "delta": {"type": f"{kind}_delta", kind: piece}}
                   for piece in pieces(block[kind])]  # fmt: skip
        events.append({"type": "content_block_stop", "index": index})
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    events.append({"type": "message_delta", "delta": delta,
                   "usage": {"output_tokens": usage["output_tokens"]}})  # fmt: skip
    return [*events, {"type": "message_stop"}]


async def messages(request: Request) -> Response:
    """Anthropic's Messages API (any text model), with Anthropic's named stream events."""
    body, model = await wire.parse(request, TEXT_IDS)
    if "max_tokens" not in body:
        raise wire.invalid("max_tokens is required", "max_tokens")
    tokens_in, cached, said = anthropic_input(body)
    content, cut = reply(said, wire.limit_of(body["max_tokens"]))
    message = anthropic_message(model, content, cut, tokens_in, cached)
    if body.get("stream") is not True:
        return JSONResponse(message)
    return wire.sse(request, [wire.frame(e, e["type"]) for e in anthropic_events(message)])


async def count_tokens(request: Request) -> Response:
    body, _ = await wire.parse(request, TEXT_IDS)
    tokens_in, cached, _said = anthropic_input(body)
    return JSONResponse({"input_tokens": tokens_in + cached})
