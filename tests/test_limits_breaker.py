"""The circuit breaker (gateway/limits/breaker.py): pure, so driven by hand with a made-up
clock. An outage is reported once however many decisions fail in it, a probe is let through
once per interval, and the return is reported once."""

from __future__ import annotations

from gateway.limits.breaker import Breaker


def test_closed_until_a_failure_then_open_once_per_outage() -> None:
    changes: list[tuple[bool, str]] = []
    breaker = Breaker(lambda available, reason: changes.append((available, reason)), 2.0)
    assert breaker.closed and not breaker.probe_due(100.0)  # nothing to probe while closed
    for i in range(50):  # every request of the outage fails the same way
        breaker.failed("no answer within 0.25 s", 100.0 + i / 100)
    assert not breaker.closed and breaker.opened_at == 100.0
    assert changes == [(False, "no answer within 0.25 s")]


def test_an_open_breaker_lets_one_probe_through_per_interval() -> None:
    breaker = Breaker(lambda *_: None, 2.0)
    breaker.failed("down", 100.0)
    assert not breaker.probe_due(101.9)
    assert breaker.probe_due(102.0)
    assert not breaker.probe_due(102.0) and not breaker.probe_due(103.9)  # one per interval
    breaker.failed("still down", 104.0)  # the probe failed: the next one waits a full interval
    assert not breaker.probe_due(105.9) and breaker.probe_due(106.0)


def test_a_return_is_reported_once_and_closes() -> None:
    changes: list[tuple[bool, str]] = []
    breaker = Breaker(lambda available, reason: changes.append((available, reason)), 2.0)
    breaker.succeeded()  # already closed: nothing to report
    breaker.failed("down", 100.0)
    breaker.succeeded()
    breaker.succeeded()
    assert breaker.closed and not breaker.probe_due(200.0)
    assert changes == [(False, "down"), (True, "down")]
    breaker.failed("down again", 300.0)  # a second outage is reported again
    assert changes[-1] == (False, "down again")
