"""What a response says it used and cost, read as it passes, without holding it back. Pure.

A `UsageReader` takes the JSON objects of one response (a whole body, or each event of a
stream) and keeps the last value seen of every usage field, in the response's dialect:
- `openai`: `usage.prompt_tokens` / `completion_tokens` (chat, completions, embeddings,
  moderations) or `input_tokens` / `output_tokens` (the Responses API, whose stream nests them
  in `response`), with their `*_details` breakdowns;
- `anthropic`: `usage.input_tokens`, `output_tokens`, `cache_read_input_tokens` and
  `cache_creation_input_tokens`, on the body or, streaming, on `message_start`'s `message` and
  on `message_delta`; the prompt is everything the model read, the three input counts summed.
Whatever the dialect, what NanoGPT says it charged wins over catalog arithmetic: the USD amount
of `x_nanogpt_pricing` (`costUsd`, `usdCost`, `cost` or `amount`; seen on JSON bodies and on a
stream's finish frame), or, for endpoints that report it so, a top-level `cost` in USD.

A `BodyWatcher` sees every chunk of a body on its way to the client and returns what to
forward; `JsonBody` keeps a copy of a JSON answer to read at the end (`sse.EventStream` reads
a stream event by event).
"""

from __future__ import annotations

import contextlib
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

from gateway.types import Usage

Dialect = Literal["openai", "anthropic"]
PRICING = "x_nanogpt_pricing"
_USD_FIELDS = ("costUsd", "usdCost", "cost", "amount")
# What a response may plausibly say it used, past which the figure is nonsense and read as
# no figure at all: a ledger that stores it, metrics that add it as a float and an exact sum
# of costs must never meet 10**4000 tokens or a charge of 1E-999999999 USD (a billion digits).
MAX_TOKENS = 10**12
MAX_USD = Decimal(10**6)
MIN_USD_EXPONENT = -30


class UsageReader:
    """Usage fields merged from every JSON object of one response, last value wins."""

    __slots__ = ("_charged", "_fields", "_top_level_cost", "dialect")

    def __init__(self, dialect: Dialect = "openai", *, top_level_cost: bool = False) -> None:
        self.dialect = dialect
        self._top_level_cost = top_level_cost
        self._fields: dict[str, int] = {}
        self._charged: Decimal | None = None

    def read(self, payload: Any) -> None:
        """Take what one JSON object (a body or an event) says about usage and cost."""
        if not isinstance(payload, dict):
            return
        if isinstance(pricing := payload.get(PRICING), dict):
            self._charged = _usd(pricing, _USD_FIELDS) if _in_usd(pricing) else self._charged
        elif self._top_level_cost and "cost" in payload:
            self._charged = _usd(payload, ("cost",))
        usage = payload.get("usage")
        if usage is None:
            nested = payload.get("message" if self.dialect == "anthropic" else "response")
            usage = nested.get("usage") if isinstance(nested, dict) else None
        if isinstance(usage, dict):
            read = _anthropic if self.dialect == "anthropic" else _openai
            self._fields.update(read(usage))

    @property
    def usage(self) -> Usage | None:
        """The usage so far, `None` if the response has said nothing about it."""
        fields, charged = self._fields, self._charged
        if not fields and charged is None:
            return None
        if self.dialect == "anthropic":
            cached = fields.get("cache_read", 0)
            prompt = fields.get("input", 0) + cached + fields.get("cache_creation", 0)
            return Usage(
                prompt_tokens=prompt,
                completion_tokens=fields.get("output", 0),
                cached_prompt_tokens=cached,
                charged_usd=charged,
            )
        return Usage(
            prompt_tokens=fields.get("prompt", 0),
            completion_tokens=fields.get("completion", 0),
            cached_prompt_tokens=fields.get("cached", 0),
            reasoning_tokens=fields.get("reasoning", 0),
            charged_usd=charged,
        )


def _openai(usage: dict[str, Any]) -> dict[str, int]:
    prompt = _count(usage, "prompt_tokens", "input_tokens")
    completion = _count(usage, "completion_tokens", "output_tokens")
    if prompt is None and completion is None:
        return {}
    prompt_details = _details(usage, "prompt_tokens_details", "input_tokens_details")
    completion_details = _details(usage, "completion_tokens_details", "output_tokens_details")
    return {
        "prompt": prompt or 0,
        "completion": completion or 0,
        "cached": _count(prompt_details, "cached_tokens") or 0,
        "reasoning": _count(completion_details, "reasoning_tokens") or 0,
    }


_ANTHROPIC_FIELDS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_input_tokens": "cache_read",
    "cache_creation_input_tokens": "cache_creation",
}


def _anthropic(usage: dict[str, Any]) -> dict[str, int]:
    return {
        ours: count
        for theirs, ours in _ANTHROPIC_FIELDS.items()
        if (count := _count(usage, theirs)) is not None
    }


def _count(data: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = data.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS:
            return value
    return None


def _details(usage: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        if isinstance(details := usage.get(name), dict):
            return details
    return {}


def _in_usd(pricing: dict[str, Any]) -> bool:
    currency = pricing.get("currency")
    return currency is None or (isinstance(currency, str) and currency.upper() == "USD")


def _usd(data: dict[str, Any], names: tuple[str, ...]) -> Decimal | None:
    """The first of `names` that holds a plausible amount (a JSON number or a decimal string,
    from 0 to `MAX_USD`, to at most 30 decimal places), exactly as written."""
    for name in names:
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            continue
        if isinstance(value, int) and not 0 <= value <= MAX_USD:
            continue  # also spares str() an int of thousands of digits
        try:
            amount = Decimal(repr(value) if isinstance(value, float) else str(value))
        except (InvalidOperation, ValueError):
            continue
        exponent = amount.as_tuple().exponent
        if isinstance(exponent, int) and exponent >= MIN_USD_EXPONENT and 0 <= amount <= MAX_USD:
            return amount
    return None


def usage_of(payload: Any, dialect: Dialect = "openai") -> Usage | None:
    """The usage one JSON object reports on its own."""
    reader = UsageReader(dialect)
    reader.read(payload)
    return reader.usage


class BodyWatcher(Protocol):
    @property
    def usage(self) -> Usage | None:
        """What the body has said of its usage and cost so far."""
        ...

    def feed(self, chunk: bytes) -> bytes:
        """What of the body so far can go to the client now."""
        ...

    def finish(self) -> bytes:
        """What is left once the upstream body has ended."""
        ...


class Passthrough:
    """For bodies that carry no usage: forwards every chunk untouched."""

    usage: Usage | None = None

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def finish(self) -> bytes:
        return b""


class JsonBody:
    """Forwards a JSON answer chunk by chunk and reads it once it is whole.

    An answer up to `WHOLE` bytes is decoded whole. A larger one (images as base64: decoding
    8 MB held the event loop for 25 ms) is not kept: only its first and last `EDGE` bytes are,
    where NanoGPT's answers put `usage`, `cost` and `x_nanogpt_pricing` (after the data, or
    before it), and those keys' values alone are decoded. A key found in neither leaves the
    answer unmetered, which the ledger says.
    """

    WHOLE = 256 * 1024
    EDGE = 64 * 1024

    def __init__(self, reader: UsageReader) -> None:
        self.usage: Usage | None = None
        self._reader = reader
        self._parts: list[bytes] = []
        self._size = 0
        self._head = b""

    def feed(self, chunk: bytes) -> bytes:
        self._parts.append(chunk)
        self._size += len(chunk)
        if self._head or self._size > self.WHOLE:
            if not self._head:
                self._head = b"".join(self._parts)[: self.EDGE]
            # keep just enough of the latest chunks to hold the last EDGE bytes
            while len(self._parts) > 1 and self._size - len(self._parts[0]) >= self.EDGE:
                self._size -= len(self._parts.pop(0))
        return chunk

    def finish(self) -> bytes:
        if not self._parts:
            return b""
        body = b"".join(self._parts)
        if not self._head:
            self._reader.read(json_value(body))
        else:
            self._reader.read(_metered_keys(self._head))
            self._reader.read(_metered_keys(body[-self.EDGE :]))
        self.usage = self._reader.usage
        return b""


_METERED_KEYS = ("usage", "cost", PRICING)
_COLON = re.compile(rb"[ \t\r\n]*:[ \t\r\n]*")
_DECODER = json.JSONDecoder()


def _metered_keys(body: bytes) -> dict[str, Any]:
    """`usage`, `cost` and `x_nanogpt_pricing` as a JSON text names them, the last of each
    winning as in `json.loads`, found with `bytes.rfind` (C speed). In valid JSON, `"usage":`
    can only be a key: a quote inside a string is escaped."""
    found: dict[str, Any] = {}
    for key in _METERED_KEYS:
        needle = b'"' + key.encode() + b'"'
        at = body.rfind(needle)
        while at >= 0:
            colon = _COLON.match(body, at + len(needle))
            if colon is not None:
                start = colon.end()
                value = body[start : start + 4096].decode("utf-8", "ignore")  # values are small
                # ValueError: also an integer of more digits than Python converts
                with contextlib.suppress(ValueError, RecursionError):
                    found[key], _ = _DECODER.raw_decode(value)
                break
            at = body.rfind(needle, 0, at)
    return found


def json_value(data: bytes) -> Any:
    """The JSON value, or `None` for anything that is not JSON: usage is read where it can be.
    (`ValueError` covers JSON's own errors, bad UTF-8, and an integer of more digits than
    Python converts: sys.get_int_max_str_digits.)"""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None
