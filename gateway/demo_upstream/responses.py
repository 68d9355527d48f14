"""The OpenAI Responses API as NanoGPT answers it: a `response` object, or its typed event stream
(`response.created` ... `response.completed`, each with a `sequence_number`) ending in
`data: [DONE]`; usage rides on the terminal event's `response`.
"""

from __future__ import annotations

import time
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.demo_upstream import wire
from gateway.demo_upstream.chat import TEXT_IDS
from gateway.demo_upstream.text import output_tokens, pieces, reply, words
from gateway.demo_upstream.wire import Json

# Fields of a Responses API object that echo settings the stand-in does not act on.
RESPONSE_ECHO: Json = {
    "previous_response_id": None, "tools": [], "tool_choice": "auto", "parallel_tool_calls": True,
    "truncation": "disabled", "text": {"format": {"type": "text"}, "verbosity": "medium"},
    "reasoning": None, "temperature": 1, "top_p": 1, "presence_penalty": 0,
    "frequency_penalty": 0, "top_logprobs": 0, "max_tool_calls": None, "user": None,
    "background": False, "safety_identifier": None, "prompt_cache_key": None,
    "service_tier": "auto"}  # fmt: skip


def response_object(body: Json, model: str, content: str, cut: bool, tokens_in: int) -> Json:
    """A finished Responses API object answering `body` with `content`."""
    tokens_out, reasoning = output_tokens(content, model)
    now, hexes, status = int(time.time()), uuid.uuid4().hex, "incomplete" if cut else "completed"
    text = {"type": "output_text", "text": content, "annotations": [], "logprobs": []}
    message = {"type": "message", "id": f"msg_{hexes}", "status": status, "role": "assistant",
               "content": [text]}  # fmt: skip
    usage = {"input_tokens": tokens_in, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": tokens_out, "output_tokens_details": {"reasoning_tokens": reasoning},
             "total_tokens": tokens_in + tokens_out}  # fmt: skip
    return {"id": f"resp_{hexes}", "object": "response", "created_at": now, "completed_at": now,
            "model": model, "status": status, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
            "instructions": body.get("instructions"), **RESPONSE_ECHO,
            "max_output_tokens": body.get("max_output_tokens"), "store": body.get("store") is True,
            "output": [message], "output_text": content, "usage": usage,
            "metadata": body.get("metadata") or {}}  # fmt: skip


def response_events(response: Json) -> list[Json]:
    """The Responses API stream of a finished `response`, event by event: usage comes on the
    last, `response.completed` (or `response.incomplete`)."""
    start = {**response, "status": "in_progress", "completed_at": None, "output": [],
             "output_text": "", "usage": None, "incomplete_details": None}  # fmt: skip
    events: list[Json] = [{"type": "response.created", "response": start},
                          {"type": "response.in_progress", "response": start}]  # fmt: skip
    for index, item in enumerate(response["output"]):
        events.append({"type": "response.output_item.added", "output_index": index,
                       "item": {**item, "status": "in_progress", "content": []}})  # fmt: skip
        for part in item["content"]:
            at = {"item_id": item["id"], "output_index": index, "content_index": 0}
            text = part["text"]
            events.append({"type": "response.content_part.added", **at,
                           "part": {**part, "text": ""}})  # fmt: skip
            events += [{"type": "response.output_text.delta", **at, "delta": piece,
                        "logprobs": []} for piece in pieces(text)]  # fmt: skip
            events.append({"type": "response.output_text.done", **at, "text": text,
                           "logprobs": []})  # fmt: skip
            events.append({"type": "response.content_part.done", **at, "part": part})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append({"type": f"response.{response['status']}", "response": response})
    return [{**event, "sequence_number": n} for n, event in enumerate(events)]


async def responses(request: Request) -> Response:
    """The OpenAI Responses API: `input` as a string or a list of items, `instructions`."""
    body, model = await wire.parse(request, TEXT_IDS)
    instructions, items = body.get("instructions"), body.get("input")
    if instructions is not None and not isinstance(instructions, str):
        raise wire.invalid("'instructions' must be a string", "instructions")
    items = [{"role": "user", "content": items}] if isinstance(items, str) else items
    if not (isinstance(items, list) and items and all(isinstance(i, dict) for i in items)):
        raise wire.invalid("'input' must be a string or a non-empty list of input items", "input")
    limit = wire.limit_of(body.get("max_output_tokens"), "max_output_tokens", 16)
    content, cut = reply(wire.last_user_text(items), limit)
    tokens_in = sum(words(wire.text_of(i.get("content"))) + 3 for i in items)
    response = response_object(body, model, content, cut, tokens_in + words(instructions))
    if body.get("stream") is not True:
        return JSONResponse(response)
    events = [wire.frame(event, event["type"]) for event in response_events(response)]
    return wire.sse(request, [*events, wire.frame("[DONE]")])
