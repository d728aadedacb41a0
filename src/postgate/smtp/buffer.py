"""smtp.buffer — the receive buffer: bytes in, lines or byte counts out.

SYNOPSIS
    buffer = ReceiveBuffer()
    buffer.append(data)
    buffer.take_line(limit) -> bytes | None | LineTooLong     # through the LF
    buffer.take(n) -> bytes                                    # BDAT chunks
    buffer.take_all() -> bytes                                 # DATA bodies
    buffer.clear()

DESCRIPTION
    A bytearray plus the offset up to which it has already been searched for an LF,
    so a client that drips one byte per packet costs O(n) in total, not O(n^2)
    (the h11 ``_receivebuffer`` habit). Removing from the front of a bytearray is
    amortised O(1) in CPython.

    A line longer than ``limit`` is never buffered whole: ``take_line`` reports
    ``LINE_TOO_LONG`` once and then silently drops bytes up to and including the
    next LF. Executing the tail of an overlong line as a command would be a
    smuggling hole, so the tail is swallowed and the caller answers 500 for it.
"""

from __future__ import annotations

import enum


class LineTooLong(enum.Enum):
    LINE_TOO_LONG = "LINE_TOO_LONG"


LINE_TOO_LONG = LineTooLong.LINE_TOO_LONG


class ReceiveBuffer:
    def __init__(self) -> None:
        self._data = bytearray()
        self._searched = 0  # no LF in _data[:_searched]
        self._discarding = False  # dropping the rest of an overlong line

    def __len__(self) -> int:
        return len(self._data)

    def append(self, data: bytes) -> None:
        self._data += data

    def clear(self) -> None:
        self._data.clear()
        self._searched = 0
        self._discarding = False

    def take_line(self, limit: int) -> bytes | LineTooLong | None:
        """The next line including its LF; None when incomplete.

        Returns LINE_TOO_LONG when the line exceeds ``limit`` octets; the rest of that
        line is discarded as it arrives.
        """
        end = self._data.find(b"\n", self._searched)
        if end < 0:
            if self._discarding or len(self._data) > limit:
                # Either way the bytes belong to an overlong line: drop them now so the
                # buffer stays bounded by ``limit``.
                self._data.clear()
                self._searched = 0
                if not self._discarding:
                    self._discarding = True
                    return LINE_TOO_LONG
                return None
            self._searched = len(self._data)
            return None
        line = bytes(self._data[: end + 1])
        del self._data[: end + 1]
        self._searched = 0
        if self._discarding:
            # The tail of a line already reported as too long: swallow it and look
            # at what follows (recursion depth is one, the flag is now off).
            self._discarding = False
            return self.take_line(limit)
        if len(line) > limit:
            return LINE_TOO_LONG
        return line

    def take(self, count: int) -> bytes:
        """Up to ``count`` bytes from the front."""
        chunk = bytes(self._data[:count])
        del self._data[:count]
        self._searched = 0
        return chunk

    def take_all(self) -> bytes:
        chunk = bytes(self._data)
        self.clear()
        return chunk
