"""A circuit breaker for a shared backend: after a failure, decisions stop waiting on it and
take the fallback at once, until a probe finds it answering again. State changes are reported
once each (not once per request). Pure: the caller brings the clock and does the probing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

PROBE_SECONDS = 2.0
"""How often an open breaker lets a probe try the backend (the issue asks for at most 5 s)."""


@dataclass(slots=True)
class Breaker:
    """`closed` (use the backend), or open since `opened_at` with the last failure's reason."""

    on_change: Callable[[bool, str], None]
    """Told `(available, reason)` when the state changes: once per outage, once per return."""
    probe_seconds: float = PROBE_SECONDS
    opened_at: float | None = None
    reason: str = ""
    _next_probe: float = 0.0

    @property
    def closed(self) -> bool:
        return self.opened_at is None

    def failed(self, reason: str, now: float) -> None:
        """The backend did not answer: open (or stay open), probing again later."""
        self._next_probe = now + self.probe_seconds
        if self.opened_at is None:
            self.opened_at, self.reason = now, reason
            self.on_change(False, reason)

    def succeeded(self) -> None:
        if self.opened_at is not None:
            self.opened_at = None
            self.on_change(True, self.reason)

    def probe_due(self, now: float) -> bool:
        """Whether an open breaker should try the backend now (then `failed` or `succeeded`
        says how it went)."""
        if self.opened_at is None or now < self._next_probe:
            return False
        self._next_probe = now + self.probe_seconds  # one probe per interval
        return True
