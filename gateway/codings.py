"""Content codings: a gzip or deflate body decoded as it passes, in bounded pieces, and a body
that does not decode whole told apart from one that does. Pure: bytes in, bytes out.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
DECODED_PIECE_BYTES = 256 * 1024
"""A few KB of gzip can hold gigabytes: a body is decoded at most this much at a time."""


class DecodeError(ValueError):
    pass


class Decoder:
    """A gzip or deflate body (RFC 9110 section 8.4.1), decoded as it passes.

    The gateway decodes rather than aiohttp, because aiohttp takes a gzip body that stops
    short of its end for a whole one, and passes an encoding it does not know through still
    encoded; here either the body is decoded whole and its Content-Encoding dropped, or both
    go to the client as they came.
    """

    __slots__ = ("_encoding", "_zlib")

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._zlib: Any = None

    @staticmethod
    def decodes(encoding: str) -> bool:
        return encoding in _WBITS

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes of `data`, in pieces of at most `DECODED_PIECE_BYTES`."""
        try:
            while True:
                if data and (self._zlib is None or self._zlib.eof):
                    data = self._start(data)
                if self._zlib is None:
                    return
                piece = self._zlib.decompress(data, DECODED_PIECE_BYTES)
                if piece:
                    yield piece
                data = self._zlib.unconsumed_tail or self._zlib.unused_data
                if not data and len(piece) < DECODED_PIECE_BYTES:
                    return
        except zlib.error as exc:
            raise DecodeError(f"a body that is not valid {self._encoding} ({exc})") from None

    def end(self) -> None:
        """The body has ended: raise `DecodeError` if its encoding had not."""
        if self._zlib is not None and not self._zlib.eof:
            raise DecodeError(f"a {self._encoding} body that stops short of its end")

    def _start(self, data: bytes) -> bytes:
        """A decompressor for the next member; what is left of `data` for it."""
        if self._zlib is not None and self._encoding != "gzip" and self._encoding != "x-gzip":
            raise DecodeError(f"bytes after the end of a {self._encoding} body")
        wbits = _WBITS[self._encoding]
        # Servers send raw deflate as "deflate" (RFC 1951 for 1950), as aiohttp tolerates.
        if self._encoding == "deflate" and data[0] & 0x0F != 8:
            wbits = -zlib.MAX_WBITS
        self._zlib = zlib.decompressobj(wbits)
        return data
