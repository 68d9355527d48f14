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


def test_a_key_in_the_query_string_never_reaches_the_access_log() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets([KEY]))
    logger = logging.getLogger("test.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:  # as uvicorn's access logger writes a request line
        logger.info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:5000",
            "POST",
            "/v1/chat/completions?beta=true&api_key=sk-member-alice&KEY=sk-member-bob",
            "1.1",
            401,
        )
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue()
    assert "sk-member" not in line
    assert "?beta=true&api_key=[redacted]&KEY=[redacted]" in line


def test_an_issued_key_shows_only_its_public_id() -> None:
    issued = "ngw-abc123def456-" + "Zq9" * 14 + "x"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets([]))
    logger = logging.getLogger("test.issued")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("client sent %s", issued)
        try:
            raise ValueError(f"bad key {issued}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert "Zq9" not in output
    assert output.count("ngw-abc123def456-[redacted]") == 2  # the message, the exception
