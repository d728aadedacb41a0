"""smtp.readers — message framing: DATA (dot-stuffed) and BDAT (counted chunks).

SYNOPSIS
    reader = DataReader(limits)
    outcome = reader.receive(data) -> DataOutcome | None     # None: not finished yet
    message = ChunkedMessage(limits); message.add(chunk); message.finish() -> DataOutcome
    body_problem(block) -> tuple[Reply, str] | None
    has_line_longer_than(text, limit) -> bool
    PendingChunk(size, last, refusal)      # the BDAT chunk being consumed

DESCRIPTION
    DataReader reads a DATA body. Only <CRLF>.<CRLF> ends it, where the CRLF of
    the DATA command line counts as the first CRLF (RFC 5321 4.1.1.4), so ".\r\n"
    right after DATA is an empty message. Lines are recognised by CRLF alone: a
    bare LF or bare CR never starts or ends a line, which is what makes every
    SMTP-smuggling variant (<LF>.<LF>, <CR>.<CR><LF>, <CRLF>.<LF>, ...) plain
    content. Such content then makes the message refused after the real final dot
    (RFC 5321 2.3.8: lines end with CRLF), as do NUL octets and lines longer than
    ``max_text_line`` (RFC 5321 4.5.3.1.6).

    The body is handled with C-speed bytes operations only: ``find`` for the
    terminator, ``rfind`` for the last complete line, ``replace`` for dot-unstuffing
    (RFC 5321 4.5.2), ``count`` for line-ending checks, ``rfind`` jumps for line lengths.
    The reader keeps an invariant: its pending bytes start at a CRLF and hold no
    other CRLF, so every committed block starts at a line boundary and every line
    is measured whole.

    Once a message is doomed (too big, bad line ending, NUL, long line) its bytes
    are dropped as they arrive and only the last four are kept to find the final
    dot: memory stays bounded whatever the client sends. The refusal is answered
    after the final dot, never before (the client is not listening before).

    ChunkedMessage gathers BDAT chunks (RFC 3030): octets are counted, never
    dot-processed or line-length checked. BODY=BINARYMIME is not offered, so a
    chunked message must still be text with CRLF line endings and no NUL: bare CR,
    bare LF and NUL are refused at LAST, because a message accepted here may be
    relayed with DATA, where a bare LF is the start of a smuggling attack.
"""

from __future__ import annotations

from dataclasses import dataclass

from postgate.smtp import replies
from postgate.smtp.limits import SmtpLimits
from postgate.smtp.replies import Reply

_CRLF = b"\r\n"
_END_OF_DATA = b"\r\n.\r\n"


@dataclass(frozen=True, slots=True)
class DataOutcome:
    """A finished message: ``message`` when acceptable, else ``refusal`` (reply, reason).
    ``leftover`` holds the bytes that followed the final dot (pipelined commands)."""

    message: bytes | None
    refusal: tuple[Reply, str] | None
    leftover: bytes = b""


def body_problem(block: bytes | bytearray) -> tuple[Reply, str] | None:
    """Bare CR, bare LF or NUL in ``block`` (which must not end inside a CRLF)."""
    crlf = block.count(_CRLF)
    if block.count(b"\n") != crlf:
        return replies.BARE_LF_IN_BODY, "bare LF in message body"
    if block.count(b"\r") != crlf:
        return replies.BARE_CR_IN_BODY, "bare CR in message body"
    if b"\0" in block:
        return replies.NUL_IN_BODY, "NUL in message body"
    return None


def has_line_longer_than(text: bytes | bytearray, limit: int) -> bool:
    """Whether a CRLF-separated line of ``text`` is longer than ``limit`` octets.

    ``text`` must hold no bare CR or LF (body_problem checked it). Rather than split
    into lines (one object per line), jump from window to window: a line starting at
    ``start`` is too long exactly when no CRLF begins in ``start .. start + limit``;
    otherwise every line up to the last CRLF of that window is short enough. About
    ``len(text) / limit`` C-speed searches.
    """
    start = 0
    end = len(text)
    while end - start > limit:
        crlf = text.rfind(_CRLF, start, start + limit + 2)
        if crlf < 0:
            return True
        start = crlf + 2
    return False


class DataReader:
    def __init__(self, limits: SmtpLimits) -> None:
        self._max_size = limits.max_message_size
        self._max_line = limits.max_text_line - 2  # octets before the CRLF
        # The CRLF of the DATA line itself: the first CRLF of a possible terminator.
        self._pending = bytearray(_CRLF)
        self._first_block = True
        self._message = bytearray()
        self._refusal: tuple[Reply, str] | None = None

    def receive(self, data: bytes) -> DataOutcome | None:
        pending = self._pending
        old_length = len(pending)
        pending += data
        end = pending.find(_END_OF_DATA, max(0, old_length - 4))
        if end >= 0:
            leftover = bytes(pending[end + 5 :])
            if self._refusal is None:
                self._commit(pending[:end])
                if not (self._first_block and end == 0):
                    self._append(_CRLF)
                self._first_block = False
            return self._finish(leftover)
        if self._refusal is not None:
            del pending[:-4]  # only a terminator matters now
            return None
        # Commit every complete line; keep the last CRLF and what follows it.
        last = pending.rfind(_CRLF, max(0, old_length - 1))
        if last > 0:
            self._commit(pending[:last])
            self._first_block = False
            del pending[:last]
        # pending is CRLF + an incomplete line (+ maybe a stuffed dot and a CR).
        if self._refusal is None and len(pending) > self._max_line + 4:
            self._refuse(replies.TEXT_LINE_TOO_LONG, "text line too long")
        if self._refusal is not None:
            del pending[:-4]
        return None

    def _commit(self, block: bytearray) -> None:
        """Append complete lines; ``block`` starts at a CRLF that ends the previous line."""
        if self._refusal is not None:
            return
        problem = body_problem(block)
        if problem is not None:
            self._refuse(*problem)
            return
        # RFC 5321 4.5.2: drop the first dot of every line that starts with one.
        text = block.replace(b"\r\n.", _CRLF)
        if self._first_block:
            del text[:2]  # the DATA line's CRLF is not part of the message
        if has_line_longer_than(text, self._max_line):
            self._refuse(replies.TEXT_LINE_TOO_LONG, "text line too long")
            return
        self._append(text)

    def _append(self, text: bytes | bytearray) -> None:
        if self._refusal is not None:
            return
        if len(self._message) + len(text) > self._max_size:
            self._refuse(replies.MESSAGE_TOO_BIG, "message too big")
            return
        self._message += text

    def _refuse(self, reply: Reply, reason: str) -> None:
        self._refusal = (reply, reason)
        self._message = bytearray()  # free the memory now, the message is lost anyway

    def _finish(self, leftover: bytes) -> DataOutcome:
        if self._refusal is not None:
            return DataOutcome(None, self._refusal, leftover)
        return DataOutcome(bytes(self._message), None, leftover)


class ChunkedMessage:
    """The chunks of one BDAT transaction, bounded by ``max_message_size``."""

    def __init__(self, limits: SmtpLimits) -> None:
        self._max_size = limits.max_message_size
        self._message = bytearray()
        self._too_big = False

    @property
    def size(self) -> int:
        return len(self._message)

    def add(self, chunk: bytes) -> None:
        if self._too_big:
            return
        if len(self._message) + len(chunk) > self._max_size:
            # RFC 3030 2: keep consuming the chunks, answer 552 at LAST.
            self._too_big = True
            self._message = bytearray()
            return
        self._message += chunk

    def finish(self) -> DataOutcome:
        if self._too_big:
            return DataOutcome(None, (replies.MESSAGE_TOO_BIG, "message too big"))
        problem = body_problem(self._message)
        if problem is not None:
            return DataOutcome(None, problem)
        return DataOutcome(bytes(self._message), None)


class PendingChunk:
    """The BDAT chunk being consumed; ``refusal`` set when it is swallowed unread."""

    __slots__ = ("last", "refusal", "remaining", "size")

    def __init__(self, size: int, last: bool, refusal: tuple[Reply, str, str] | None) -> None:
        self.size = size
        self.remaining = size
        self.last = last
        self.refusal = refusal
