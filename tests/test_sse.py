"""Server-sent events as they pass: forwarded whole as each ends, split anywhere, read for
usage in either dialect, and cleared of the usage the gateway asked for on a client's behalf."""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sse import EventStream
from gateway.types import Usage
from gateway.usage import UsageReader
from tests.test_usage import CHAT_USAGE, CONTENT, EXPECTED, FINISH, STREAM, USAGE_ONLY, sse


def relay(stream: bytes, cuts: list[int], *, hide_usage: bool) -> tuple[list[bytes], EventStream]:
    """Feed `stream` split at `cuts`; return what was forwarded after each feed, and the watcher."""
    return relay_with(EventStream(UsageReader(), hide_usage=hide_usage), stream, cuts)


def relay_with(
    watcher: EventStream, stream: bytes, cuts: list[int]
) -> tuple[list[bytes], EventStream]:
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
    watcher = EventStream(UsageReader())
    assert watcher.feed(first + second[:10]) == first  # the partial second event waits
    assert watcher.feed(second[10:-1]) == b""  # still no blank line
    assert watcher.feed(second[-1:]) == second


def test_a_trailing_cr_waits_for_the_byte_that_tells_whether_it_is_crlf() -> None:
    event = sse(CONTENT, b"\r\n\r\n")
    watcher = EventStream(UsageReader())
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


def test_usage_on_nanogpts_finish_frame_is_read_and_hidden_from_who_did_not_ask() -> None:
    pricing = {"cost": 0.000169, "inputTokens": 12, "outputTokens": 30, "paymentSource": "USD"}
    finish = {**FINISH, "usage": CHAT_USAGE, "x_nanogpt_pricing": pricing}
    stream = sse({**CONTENT, "usage": None}) + sse(finish) + sse("[DONE]")
    charged = dataclasses.replace(EXPECTED, charged_usd=Decimal("0.000169"))
    for cut in range(len(stream) + 1):
        sent, watcher = relay(stream, [cut], hide_usage=True)
        assert watcher.usage == charged, cut
        events = [e for e in b"".join(sent).split(b"\n\n") if e]
        assert [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]] == [
            CONTENT,
            {**FINISH, "x_nanogpt_pricing": pricing},
        ], cut
        sent, watcher = relay(stream, [cut], hide_usage=False)
        assert b"".join(sent) == stream and watcher.usage == charged, cut


def test_pricing_alone_on_the_finish_frame_is_read() -> None:
    stream = sse(CONTENT) + sse({**FINISH, "x_nanogpt_pricing": {"amount": 2e-05}}) + sse("[DONE]")
    sent, watcher = relay(stream, [7], hide_usage=True)
    assert b"".join(sent) == stream
    assert watcher.usage == Usage(charged_usd=Decimal("0.00002"))


ANTHROPIC_STREAM = b"".join(
    f"event: {name}\n".encode() + sse(payload)
    for name, payload in [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "usage": {
                        "input_tokens": 10,
                        "output_tokens": 1,
                        "cache_read_input_tokens": 100,
                        "cache_creation_input_tokens": 20,
                    },
                },
            },
        ),
        ("content_block_delta", {"type": "content_block_delta", "delta": {"text": "Hi"}}),
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
             "usage": {"output_tokens": 12}},
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
)  # fmt: skip


def test_anthropic_stream_usage_is_read_however_it_is_split() -> None:
    expected = Usage(prompt_tokens=130, completion_tokens=12, cached_prompt_tokens=100)
    for cut in range(len(ANTHROPIC_STREAM) + 1):
        watcher = EventStream(UsageReader("anthropic"))
        sent = watcher.feed(ANTHROPIC_STREAM[:cut]) + watcher.feed(ANTHROPIC_STREAM[cut:])
        assert sent + watcher.finish() == ANTHROPIC_STREAM, cut
        assert watcher.usage == expected, cut
    parts, watcher = relay_with(
        EventStream(UsageReader("anthropic")), ANTHROPIC_STREAM, list(range(len(ANTHROPIC_STREAM)))
    )
    assert b"".join(parts) == ANTHROPIC_STREAM and watcher.usage == expected


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


LINE_ENDS = st.sampled_from([b"\n", b"\r\n", b"\r"])
PAYLOADS = st.sampled_from(
    [
        json.dumps(CONTENT).encode(),
        json.dumps({**CONTENT, "usage": None}).encode(),
        b'{"id":"c1","choices":[{"delta":{"content":"Hi"}}],"usage":null}',
        json.dumps(FINISH).encode(),
        json.dumps({**FINISH, "usage": CHAT_USAGE, "x_nanogpt_pricing": {"cost": 1e-05}}).encode(),
        json.dumps(USAGE_ONLY).encode(),
        b'{"usage": oops',
        b"[DONE]",
    ]
)


@st.composite
def sse_streams(draw: st.DrawFn) -> bytes:
    """Events of `data:`, `event:` and comment lines, each line ended as the upstream likes."""
    stream = b""
    for _ in range(draw(st.integers(0, 6))):
        lines = draw(st.lists(st.sampled_from([b"data: ", b"event: x", b": ping"]), max_size=3))
        lines.append(b"data: " + draw(PAYLOADS))
        for line in lines:
            stream += line + draw(LINE_ENDS)
        stream += draw(LINE_ENDS)
    if draw(st.booleans()):  # a last event the upstream never ended
        stream += b"data: " + draw(PAYLOADS)
    return stream


@settings(max_examples=300, deadline=None, database=None)
@given(stream=sse_streams(), data=st.data(), hide_usage=st.booleans())
def test_what_is_forwarded_does_not_depend_on_where_chunks_are_cut(
    stream: bytes, data: st.DataObject, hide_usage: bool
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8).map(sorted))
    whole, whole_watcher = relay(stream, [], hide_usage=hide_usage)
    sent, watcher = relay(stream, cuts, hide_usage=hide_usage)
    assert b"".join(sent) == b"".join(whole)
    assert watcher.usage == whole_watcher.usage
    if not hide_usage:
        assert b"".join(sent) == stream


def feed_cost(stream: bytes, size: int) -> float:
    """The least of three timings of relaying `stream` in chunks of `size` bytes."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        relay(stream, list(range(size, len(stream), size)), hide_usage=True)
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize(("end", "size"), [(b"\n", 8_000_000), (b"\r\n", 1_000_000)])
def test_a_long_event_costs_what_its_bytes_do_however_many_chunks_bring_it(
    end: bytes, size: int
) -> None:
    # One event of short lines: rescanning what is pending on every chunk made this quadratic
    # (an 8 MB event held the event loop for 2.2 s). Costs compared, not measured: one run.
    line = b"data: " + b"x" * 10 + end
    stream = line * (size // len(line)) + end
    in_one = feed_cost(stream, len(stream))
    assert feed_cost(stream, 16 * 1024) < 10 * in_one + 0.05
