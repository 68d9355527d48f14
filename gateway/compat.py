"""Cursor's Responses-shaped body on `/v1/chat/completions` -> a Chat Completions body.

Cursor's agent mode posts `input`, `instructions`, flat tools and Responses-only fields to the
chat endpoint and reads Chat Completions SSE back; NanoGPT answers 400 "Missing required
parameter: 'messages'". Pure: takes a dict, returns a dict, imports only `gateway.errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

from gateway.errors import InvalidRequest

Json = dict[str, Any]

# Not copied as they are: Responses-only fields, and those rebuilt below in chat form (`reasoning`
# and `text` are read for the parts chat has, `reasoning_effort` and `response_format`).
DROPPED = frozenset(
    {
        "input", "instructions", "include", "store", "reasoning", "text",
        "previous_response_id", "truncation", "prompt_cache_key", "prompt_cache_retention",
        "metadata", "service_tier", "background", "conversation", "safety_identifier",
        "max_output_tokens", "max_tool_calls", "prompt", "tools", "tool_choice",
    }
)  # fmt: skip
TOOL_CHOICES = frozenset({"auto", "none", "required"})
# `developer` becomes "system": the role arrived with OpenAI's o1 models and many providers behind
# NanoGPT reject or ignore it; every chat provider knows `system`, and OpenAI reads `system` as
# `developer` on the models that have one.
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TEXT_PARTS = frozenset({"input_text", "output_text"})
ITEM_PARTS = TEXT_PARTS | {"refusal", "input_image"}


def is_responses_shaped(payload: Mapping[str, Any]) -> bool:
    """Whether a chat completions body is Responses-shaped: `input` and no `messages`."""
    return "messages" not in payload and "input" in payload


def to_chat(payload: dict[str, Any]) -> dict[str, Any]:
    """The Chat Completions body meaning what the Responses-shaped `payload` asks for.

    Fields valid in both APIs (and any the gateway does not know) pass through; Responses-only
    fields are dropped or mapped. Raises `InvalidRequest` naming the `input` item it cannot
    translate rather than forward a conversation with parts silently missing.
    """
    chat = {key: value for key, value in payload.items() if key not in DROPPED}
    chat["messages"] = _messages(payload.get("instructions"), payload.get("input"))
    if (tools := _tools(payload.get("tools"))) is not None:
        chat["tools"] = tools
        if "tool_choice" in payload:
            chat["tool_choice"] = _tool_choice(payload["tool_choice"])
    else:  # OpenAI refuses either without `tools`; the conversation means the same without
        chat.pop("parallel_tool_calls", None)
    if "max_output_tokens" in payload:
        chat["max_tokens"] = payload["max_output_tokens"]
    if (effort := _object(payload, "reasoning").get("effort")) is not None:
        chat["reasoning_effort"] = effort
    if (response_format := _response_format(_object(payload, "text").get("format"))) is not None:
        chat["response_format"] = response_format
    return chat


# --- input items -> messages --------------------------------------------------------------------


def _messages(instructions: Any, items: Any) -> list[Json]:
    messages: list[Json] = []
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest("'instructions' must be a string", param="instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise InvalidRequest("'input' must be a string or a list of items", param="input")
    for index, item in enumerate(items):
        kind = item.get("type", "message" if "role" in item else None) if _is(item) else None
        convert = ITEMS.get(kind) if isinstance(kind, str) else None
        if convert is None:
            what = f"item type {kind!r}" if isinstance(kind, str) else "item"
            raise _bad(
                index,
                f"unsupported {what}; only messages, function calls and their outputs translate to chat",
            )
        convert(messages, item, index)
    if not messages:
        raise InvalidRequest("'input' holds no messages", param="input")
    return messages


def _message(messages: list[Json], item: Json, index: int) -> None:
    role = _lookup(ROLES, item.get("role"))
    if role is None:
        raise _bad(index, f"unsupported role {item.get('role')!r}")
    content = item.get("content")
    if isinstance(content, str):
        messages.append({"role": role, "content": content})
        return
    if not isinstance(content, list):
        raise _bad(index, "'content' must be a string or a list of parts")
    parts = [_part(part, index, f"content[{at}]", role) for at, part in enumerate(content)]
    if role == "assistant" and not parts:  # Cursor sends `[]` beside its tool calls
        messages.append({"role": role, "content": None})
        return
    messages.append({"role": role, "content": parts})


def _part(part: Any, index: int, where: str, role: str) -> Json:
    kind = part.get("type") if _is(part) else None
    kind = kind if isinstance(kind, str) else None
    if kind in TEXT_PARTS and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image" and role == "user":
        url = part.get("image_url")
        url = url.get("url") if _is(url) else url
        if not isinstance(url, str):  # a `file_id` names a file only OpenAI holds
            raise _bad(index, f"{where}: an image needs 'image_url'", where)
        image = {"url": url} | ({"detail": part["detail"]} if "detail" in part else {})
        return {"type": "image_url", "image_url": image}
    if kind in ITEM_PARTS:
        problem = f"malformed or misplaced {kind!r} part in a {role} message"
    else:
        problem = (
            f"unsupported content part {kind!r}" if kind else "a part is an object with a 'type'"
        )
    raise _bad(index, f"{where}: {problem}", where)


def _function_call(messages: list[Json], item: Json, index: int) -> None:
    fields = [item.get(name) for name in ("call_id", "name", "arguments")]
    if not all(isinstance(field, str) for field in fields):
        raise _bad(index, "a function_call needs string 'call_id', 'name' and 'arguments'")
    call_id, name, arguments = fields
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _function_call_output(messages: list[Json], item: Json, index: int) -> None:
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str):
        raise _bad(index, "a function_call_output needs a string 'call_id'")
    if isinstance(output, list):
        parts = [_part(part, index, f"output[{at}]", "tool") for at, part in enumerate(output)]
        texts = [part["text"] for part in parts]
        output = "\n".join(texts)
    if not isinstance(output, str):
        raise _bad(index, "'output' must be a string or a list of text parts")
    messages.append({"role": "tool", "tool_call_id": call_id, "content": output})


def _reasoning(messages: list[Json], item: Json, index: int) -> None:
    """Dropped: `encrypted_content` opens only at OpenAI's Responses API, and chat has no field
    that hands a past turn's reasoning to every provider."""


ITEMS: dict[str, Callable[[list[Json], Json, int], None]] = {
    "message": _message,
    "function_call": _function_call,
    "function_call_output": _function_call_output,
    "reasoning": _reasoning,
}


# --- tools, tool_choice, text.format ------------------------------------------------------------


def _tools(tools: Any) -> list[Json] | None:
    """Function tools in chat form; hosted ones (web_search, file_search, computer_use...) and
    Cursor's grammar `custom` tool have no chat equivalent NanoGPT is known to take: dropped."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be a list", param="tools")
    chat = []
    for index, tool in enumerate(tools):
        if not _is(tool) or not isinstance(tool.get("type"), str):
            raise InvalidRequest(
                f"tools[{index}]: a tool is an object with a 'type'", param=f"tools[{index}]"
            )
        if tool["type"] != "function":
            continue
        if not isinstance(tool.get("name"), str):
            raise InvalidRequest(
                f"tools[{index}]: a function tool needs a 'name'", param=f"tools[{index}]"
            )
        keys = ("name", "description", "parameters", "strict")
        chat.append({"type": "function", "function": {k: tool[k] for k in keys if k in tool}})
    return chat or None


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str) and choice in TOOL_CHOICES:
        return choice
    if _is(choice) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest(
        "'tool_choice' must be auto, none, required or a function", param="tool_choice"
    )


def _response_format(fmt: Any) -> Json | None:
    if fmt is None:
        return None
    if not _is(fmt):
        raise InvalidRequest("'text.format' must be an object", param="text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        keys = ("name", "description", "schema", "strict")
        return {"type": "json_schema", "json_schema": {k: fmt[k] for k in keys if k in fmt}}
    raise InvalidRequest(f"unsupported text.format type {kind!r}", param="text.format")


# --- helpers ------------------------------------------------------------------------------------


def _is(value: Any) -> TypeGuard[Json]:
    return isinstance(value, dict)


def _lookup(table: dict[str, str], key: Any) -> str | None:
    return table.get(key) if isinstance(key, str) else None


def _object(payload: Json, field: str) -> Json:
    value = payload.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{field}' must be an object", param=field)
    return value


def _bad(index: int, message: str, where: str = "") -> InvalidRequest:
    param = f"input[{index}]" + (f".{where}" if where else "")
    return InvalidRequest(f"input[{index}]: {message}", param=param)
