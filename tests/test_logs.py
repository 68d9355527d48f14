"""The team key never reaches a log line, whoever logs it."""

from __future__ import annotations

import io
import logging

from gateway.logs import RedactSecrets

KEY = "sk-nano-team-secret"


def test_redacts_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets([KEY, ""]))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("sent Authorization: Bearer %s", KEY)
        logger.warning(f"inline {KEY}")
        try:
            raise RuntimeError(f"upstream said {KEY}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert KEY not in output
    assert output.count("[redacted]") == 3
    assert "RuntimeError: upstream said [redacted]" in output
