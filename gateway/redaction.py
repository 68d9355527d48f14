"""The team key cut out of a body that passes in chunks, wherever the chunks are cut. Pure."""

from __future__ import annotations

REDACTED = b"[redacted]"


class Redactor:
    """The team key cut out of a body that passes in chunks, wherever the chunks are cut.

    A chunk whose end could be the start of the key keeps that end back until the next chunk
    tells (only a proper prefix of the key is kept, so an SSE event, which ends in a newline,
    is never held); on ordinary traffic this costs one `bytes.find` per chunk.
    """

    __slots__ = ("_first", "_held", "_key")

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._first = key[:1]
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        """What of the body so far can go on, the key replaced."""
        key = self._key
        if not key:
            return chunk
        data = self._held + chunk if self._held else chunk
        if key in data:
            data = data.replace(key, REDACTED)
        at = data.find(self._first, max(0, len(data) - len(key) + 1))
        while at >= 0:
            if key.startswith(data[at:]):
                self._held = data[at:]
                return data[:at]
            at = data.find(self._first, at + 1)
        self._held = b""
        return data

    def flush(self) -> bytes:
        """The end of the body: what was kept back was not the key after all."""
        held, self._held = self._held, b""
        return held
