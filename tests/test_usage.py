"""Usage read from responses as they pass: JSON bodies, SSE streams split anywhere, and the
usage event hidden from clients that did not ask for it."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from gateway.types import Usage
from gateway.usage import EventStream, JsonBody, usage_of


def sse(payload: Any, end: bytes = b"\n\n") -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}".encode() + end


CHAT_USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 30,
    "total_tokens": 42,
    "prompt_tokens_details": {"cached_tokens": 8},
    "completion_tokens_details": {"reasoning_tokens": 20},
}
EXPECTED = Usage(
    prompt_tokens=12, completion_tokens=30, cached_prompt_tokens=8, reasoning_tokens=20
)
CONTENT = {"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
FINISH = {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
USAGE_ONLY = {"id": "c1", "choices": [], "usage": CHAT_USAGE}
STREAM = sse(CONTENT) + sse(FINISH) + sse(USAGE_ONLY) + sse("[DONE]")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"usage": CHAT_USAGE}, EXPECTED),
        (
            {
                "object": "response",
                "usage": {
                    "input_tokens": 12,
                    "output_tokens": 30,
                    "input_tokens_details": {"cached_tokens": 8},
                    "output_tokens_details": {"reasoning_tokens": 20},
                },
            },
            EXPECTED,
        ),
        (
            {
                "type": "response.completed",
                "response": {"usage": {"input_tokens": 5, "output_tokens": 7}},
            },
            Usage(prompt_tokens=5, completion_tokens=7),
        ),
        (
            {"object": "list", "usage": {"prompt_tokens": 9, "total_tokens": 9}},
            Usage(prompt_tokens=9),
        ),
        ({"usage": None}, None),
        ({"usage": {"total_tokens": 3}}, None),
        ({"usage": {"prompt_tokens": "12", "completion_tokens": -1}}, None),
        ({"usage": {"prompt_tokens": True, "completion_tokens": 2}}, Usage(completion_tokens=2)),
        ([1, 2], None),
        (None, None),
    ],
)
def test_usage_shapes(payload: Any, expected: Usage | None) -> None:
    assert usage_of(payload) == expected


def test_json_body_is_forwarded_as_it_comes_and_read_at_the_end() -> None:
    body = json.dumps({"id": "x", "choices": [], "usage": CHAT_USAGE}).encode()
    watcher = JsonBody()
    forwarded = b"".join(watcher.feed(body[i : i + 7]) for i in range(0, len(body), 7))
    assert forwarded == body and watcher.usage is None
    assert watcher.finish() == b""
    assert watcher.usage == EXPECTED


def test_json_body_larger_than_its_limit_is_relayed_but_not_read() -> None:
    body = json.dumps({"usage": CHAT_USAGE, "pad": "x" * 100}).encode()
    watcher = JsonBody(limit=50)
    assert watcher.feed(body) == body
    watcher.finish()
    assert watcher.usage is None


def test_json_body_that_is_not_json_has_no_usage() -> None:
    watcher = JsonBody()
    watcher.feed(b"<html>502 Bad Gateway</html>")
    watcher.finish()
    assert watcher.usage is None


def relay(stream: bytes, cuts: list[int], *, hide_usage: bool) -> tuple[list[bytes], EventStream]:
    """Feed `stream` split at `cuts`; return what was forwarded after each feed, and the watcher."""
    watcher = EventStream(hide_usage=hide_usage)
    bounds = [0, *cuts, len(stream)]
    sent = [watcher.feed(stream[a:b]) for a, b in itertools.pairwise(bounds)]
    sent.append(watcher.finish())
    return sent, watcher


@pytest.mark.parametrize("end", [b"\n\n", b"\r\n\r\n", b"\r\r", b"\n\r\n"])
@pytest.mark.parametrize("hide_usage", [False, True])
def test_usage_is_read_however_the_final_chunks_are_split(end: bytes, hide_usage: bool) -> None:
    stream = sse(CONTENT, end) + sse(FINISH, end) + sse(USAGE_ONLY, end) + sse("[DONE]", end)
    tail_start = len(sse(CONTENT, end))
    for cut in range(tail_start, len(stream) + 1):
        sent, watcher = relay(stream, [cut], hide_usage=hide_usage)
        assert watcher.usage == EXPECTED, cut
        expected = stream.replace(sse(USAGE_ONLY, end), b"") if hide_usage else stream
        assert b"".join(sent) == expected, cut


def test_usage_is_read_when_every_byte_arrives_alone() -> None:
    sent, watcher = relay(STREAM, list(range(1, len(STREAM))), hide_usage=False)
    assert watcher.usage == EXPECTED
    assert b"".join(sent) == STREAM


def test_each_event_is_forwarded_as_soon_as_its_blank_line_arrives() -> None:
    first, second = sse(CONTENT), sse(FINISH)
    watcher = EventStream()
    assert watcher.feed(first + second[:10]) == first  # the partial second event waits
    assert watcher.feed(second[10:-1]) == b""  # still no blank line
    assert watcher.feed(second[-1:]) == second


def test_a_trailing_cr_waits_for_the_byte_that_tells_whether_it_is_crlf() -> None:
    event = sse(CONTENT, b"\r\n\r\n")
    watcher = EventStream()
    assert watcher.feed(event[:-1]) == b""
    assert watcher.feed(event[-1:]) == event


def test_comments_and_named_events_pass_through() -> None:
    stream = (
        b": keep-alive\n\n"
        + b"event: response.completed\n"
        + sse(
            {
                "type": "response.completed",
                "response": {"usage": {"input_tokens": 4, "output_tokens": 6}},
            }
        )
        + b"data: [DONE]\n\n"
    )
    sent, watcher = relay(stream, [3, 20], hide_usage=True)
    assert b"".join(sent) == stream
    assert watcher.usage == Usage(prompt_tokens=4, completion_tokens=6)


def test_hidden_usage_also_drops_the_null_usage_the_upstream_added_to_each_chunk() -> None:
    compact = b'data: {"id":"c1","choices":[{"delta":{"content":"Hi"}}],"usage":null}\n\n'
    spaced = sse({**CONTENT, "usage": None})
    middle = sse({"id": "c1", "usage": None, "choices": [{"delta": {"content": "!"}}]})
    stream = compact + spaced + middle + sse(USAGE_ONLY) + sse("[DONE]")
    sent, watcher = relay(stream, [], hide_usage=True)
    events = b"".join(sent).split(b"\n\n")[:-1]
    payloads = [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert payloads == [
        {"id": "c1", "choices": [{"delta": {"content": "Hi"}}]},
        CONTENT,
        {"id": "c1", "choices": [{"delta": {"content": "!"}}]},
    ]
    assert events[-1] == b"data: [DONE]"
    assert watcher.usage == EXPECTED


def test_client_that_asked_gets_every_event_unchanged() -> None:
    stream = sse({**CONTENT, "usage": None}) + sse(USAGE_ONLY) + sse("[DONE]")
    sent, watcher = relay(stream, [], hide_usage=False)
    assert b"".join(sent) == stream
    assert watcher.usage == EXPECTED


def test_usage_riding_on_a_chunk_with_choices_is_forwarded_as_it_is() -> None:
    stream = sse({**FINISH, "usage": CHAT_USAGE}) + sse("[DONE]")
    sent, watcher = relay(stream, [], hide_usage=True)
    assert b"".join(sent) == stream
    assert watcher.usage == EXPECTED


def test_an_unterminated_last_event_is_still_forwarded_and_read() -> None:
    stream = sse(CONTENT) + b"data: " + json.dumps(USAGE_ONLY).encode()
    sent, watcher = relay(stream, [], hide_usage=False)
    assert b"".join(sent) == stream
    assert watcher.usage == EXPECTED


def test_malformed_events_are_forwarded_untouched() -> None:
    stream = b'data: {"usage": oops\n\n' + b"data: \xff\xfe\n\n" + sse("[DONE]")
    sent, watcher = relay(stream, [5], hide_usage=True)
    assert b"".join(sent) == stream
    assert watcher.usage is None
