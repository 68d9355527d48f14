"""Logging for the gateway process: one stderr handler whose filter scrubs every secret.

The team key and member keys must never reach a log line, whoever logs it (aiohttp, uvicorn or a
traceback), so redaction sits on the handler rather than trusting each call site.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections.abc import Iterable
from typing import TextIO

REDACTED = "[redacted]"
QUERY_CREDENTIAL = re.compile(
    r"([?&](?:key|api_key|api-key|apikey|x-api-key|access_token|token|auth)=)[^&\s\"']*",
    re.IGNORECASE,
)
"""A key sent in the query string (`?key=...`), as an access log line would show it."""
ISSUED_KEY = re.compile(r"\b(ngw-[a-z0-9]{12}-)[0-9A-Za-z]{8,}")
"""A key the store issued: its public id may show, its secret may not."""

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
"""The `x-gateway-request-id` of the request being handled, for every log line about it."""


class WithRequestId(logging.Filter):
    """Ends every line logged while a request is handled with its id: `[request <id>]`."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = request_id.get()
        record.request = f" [request {current}]" if current else ""
        return True


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if "=" in message:
            message = QUERY_CREDENTIAL.sub(rf"\1{REDACTED}", message)
        if "ngw-" in message:
            message = ISSUED_KEY.sub(rf"\1{REDACTED}", message)
        if record.exc_text and "ngw-" in record.exc_text:
            record.exc_text = ISSUED_KEY.sub(rf"\1{REDACTED}", record.exc_text)
        for secret in self._secrets:
            message = message.replace(secret, REDACTED)
            if record.exc_text:
                record.exc_text = record.exc_text.replace(secret, REDACTED)
        record.msg, record.args = message, None
        return True


def configure_logging(level: str, secrets: Iterable[str]) -> None:
    """Route every logger (uvicorn's included) through one redacting stderr handler."""
    root = logging.getLogger()
    root.handlers[:] = [redacting_handler(sys.stderr, secrets)]
    root.setLevel(level.upper())


def redacting_handler(stream: TextIO, secrets: Iterable[str]) -> logging.Handler:
    """A handler writing to `stream` that scrubs `secrets` and names the request."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s%(request)s")
    )
    handler.addFilter(RedactSecrets(secrets))
    handler.addFilter(WithRequestId())
    return handler
