"""Chat and text completions as NanoGPT answers them: one JSON body with `x_nanogpt_pricing` on
top, or `chat.completion.chunk` / `text_completion` SSE frames whose finish frame carries the
charge (and `usage`, when asked with `stream_options.include_usage`), then `data: [DONE]`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.demo_upstream import catalog as cat
from gateway.demo_upstream import wire
from gateway.demo_upstream.text import REASONING, output_tokens, pieces, reply, words
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


async def chat_completions(request: Request) -> Response:
    body, model = await wire.parse(request, TEXT_IDS)
    msgs = wire.messages_of(body.get("messages"))
    limit = wire.limit_of(body.get("max_completion_tokens", body.get("max_tokens")))
    content, cut = reply(wire.last_user_text(msgs), limit)
    finish = "length" if cut else "stop"
    usage = chat_usage(sum(words(wire.text_of(m.get("content"))) + 3 for m in msgs), content, model)
    if body.get("stream") is True:
        deltas: list[Json] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": p} for p in pieces(content)] + [{}]
        choices: list[Json] = [{"index": 0, "delta": d, "finish_reason": None} for d in deltas]
        choices[-1]["finish_reason"] = finish
        base = wire.base("chatcmpl", "chat.completion.chunk", model)
        return _stream(request, body, base, choices, usage)
    message = {"role": "assistant", "content": content}
    if model.endswith(":thinking"):
        message["reasoning_content"] = REASONING
    choice = {"index": 0, "message": message, "finish_reason": finish}
    return _answer(request, body, wire.base("chatcmpl", "chat.completion", model), [choice], usage)


async def completions(request: Request) -> Response:
    body, model = await wire.parse(request, TEXT_IDS)
    prompts = wire.strings(body.get("prompt"), "prompt")
    text, cut = reply(prompts[-1], wire.limit_of(body.get("max_tokens")))
    usage = chat_usage(sum(words(p) for p in prompts), text, model)
    streaming = body.get("stream") is True
    texts = [*pieces(text), ""] if streaming else [text]
    choices = [{"text": t, "index": 0, "logprobs": None, "finish_reason": None} for t in texts]
    choices[-1]["finish_reason"] = "length" if cut else "stop"
    return _answer(request, body, wire.base("cmpl", "text_completion", model), choices, usage)
