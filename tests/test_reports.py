"""The `usage` command's words: every accepted time form and a helpful refusal of the rest, and
reports that read well in a terminal and round-trip exactly through CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gateway.reports import ReportRow, format_csv, format_json, format_table, parse_when, total

NOW = datetime(2026, 11, 15, 9, 30, tzinfo=UTC)
ROWS = [
    ReportRow(
        key="alice",
        requests=1234,
        refused=2,
        unmetered=1,
        prompt_tokens=1_234_567,
        completion_tokens=89_012,
        cached_prompt_tokens=500_000,
        reasoning_tokens=3_000,
        cost_usd=Decimal("12.3456789"),
    ),
    ReportRow(key="bob", requests=5, prompt_tokens=10, cost_usd=Decimal("3E-10")),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("12h", NOW - timedelta(hours=12)),
        ("7d", NOW - timedelta(days=7)),
        (" 2w ", NOW - timedelta(weeks=2)),
        ("0h", NOW),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T12:00", datetime(2026, 11, 1, 12, tzinfo=UTC)),
        ("2026-11-01T12:00:30Z", datetime(2026, 11, 1, 12, 0, 30, tzinfo=UTC)),
        ("2026-11-01T14:00+02:00", datetime(2026, 11, 1, 12, tzinfo=UTC)),
    ],
)
def test_parse_when_accepts(text: str, expected: datetime) -> None:
    assert parse_when(text, now=NOW) == expected.timestamp()


def test_a_naive_now_is_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    assert parse_when("1h", now=naive) == (NOW - timedelta(hours=1)).timestamp()


@pytest.mark.parametrize("text", ["", "yesterday", "7", "7y", "-3d", "1.5h", "2026-13-01"])
def test_parse_when_refuses_and_shows_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_when(text, now=NOW)
    message = str(excinfo.value)
    assert repr(text) in message
    for form in ("30m", "12h", "7d", "2w", "2026-11-01", "2026-11-01T12:00", "Z"):
        assert form in message


def test_total_adds_every_column_exactly() -> None:
    assert total(ROWS) == ReportRow(
        key="TOTAL",
        requests=1239,
        refused=2,
        unmetered=1,
        prompt_tokens=1_234_577,
        completion_tokens=89_012,
        cached_prompt_tokens=500_000,
        reasoning_tokens=3_000,
        cost_usd=Decimal("12.3456789003"),
    )
    assert total([]) == ReportRow(key="TOTAL")


def test_table_has_aligned_columns_and_a_total_line() -> None:
    table = format_table(ROWS, "member")
    lines = table.splitlines()
    header, alice, bob, rule, total_line, note = lines
    assert header.split() == [
        "member",
        "requests",
        "refused",
        "unmetered",
        "prompt",
        "tok",
        "completion",
        "tok",
        "cached",
        "reasoning",
        "cost",
        "USD",
    ]
    assert alice.split() == [
        "alice",
        "1,234",
        "2",
        "1",
        "1,234,567",
        "89,012",
        "500,000",
        "3,000",
        "12.345679",
    ]
    assert bob.split()[0] == "bob" and bob.split()[-1] == "0.000000"
    assert total_line.split() == [
        "TOTAL",
        "1,239",
        "2",
        "1",
        "1,234,577",
        "89,012",
        "500,000",
        "3,000",
        "12.345679",
    ]
    assert set(rule) == {"-"}
    assert len({len(line) for line in (header, alice, bob, rule, total_line)}) == 1
    assert header.index("cost USD") + len("cost USD") == len(header)  # numbers align right
    assert "rounded to 6 decimals" in note and "exact" in note


def test_table_without_rounding_has_no_note() -> None:
    table = format_table([ReportRow(key="2026-11-01", requests=1, cost_usd=Decimal("0.5"))], "day")
    assert table.splitlines()[0].startswith("day ")
    assert table.splitlines()[-1].split() == [
        "TOTAL",
        "1",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0.500000",
    ]
    assert "rounded" not in table


def test_an_empty_period_says_so() -> None:
    assert format_table([], "member") == "no requests in this period"


def test_csv_round_trips_exactly() -> None:
    text = format_csv(ROWS, "model")
    assert not text.endswith("\n")
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert list(parsed[0]) == [
        "model",
        "requests",
        "refused",
        "unmetered",
        "prompt_tokens",
        "completion_tokens",
        "cached_prompt_tokens",
        "reasoning_tokens",
        "cost_usd",
    ]
    assert [row["model"] for row in parsed] == ["alice", "bob"]
    assert parsed[0]["prompt_tokens"] == "1234567"
    assert [Decimal(row["cost_usd"]) for row in parsed] == [r.cost_usd for r in ROWS]
    assert parsed[1]["cost_usd"] == "0.0000000003"  # plain notation, for spreadsheets
    assert format_csv([], "day").splitlines() == [text.splitlines()[0].replace("model", "day")]


def test_json_round_trips_exactly() -> None:
    document = json.loads(format_json(ROWS, "end_user"))
    assert document["by"] == "end_user"
    assert [row["end_user"] for row in document["rows"]] == ["alice", "bob"]
    assert document["rows"][0] == {
        "end_user": "alice",
        "requests": 1234,
        "refused": 2,
        "unmetered": 1,
        "prompt_tokens": 1_234_567,
        "completion_tokens": 89_012,
        "cached_prompt_tokens": 500_000,
        "reasoning_tokens": 3_000,
        "cost_usd": "12.3456789",
    }
    assert document["rows"][1]["cost_usd"] == "0.0000000003"
    assert Decimal(document["total"]["cost_usd"]) == Decimal("12.3456789003")
    assert document["total"]["requests"] == 1239 and "end_user" not in document["total"]
    empty = json.loads(format_json([], "member"))
    assert empty == {"by": "member", "rows": [], "total": {**empty["total"], "cost_usd": "0"}}
    assert empty["total"]["requests"] == 0


def test_parse_when_refuses_a_duration_past_the_calendar() -> None:
    with pytest.raises(ValueError, match="'99999999999w' reaches back before the year 1"):
        parse_when("99999999999w", now=NOW)
