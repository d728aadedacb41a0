"""smtp.events — one small value per thing the SMTP client did.

SYNOPSIS
    ServerConnection.next_event() -> Event | NeedData

DESCRIPTION
    Frozen dataclasses, compared by value, modelled on h11's events. Command events
    (Hello, MailFrom, RcptTo, DataRequested, MessageReceived, StartTlsRequested,
    AuthRequested, AuthLine, Reset, Noop, Quit, Verify, HelpRequested) wait for
    exactly one ``ServerConnection.respond(reply)``. The rest report what the
    machine already did by itself: CommandRejected and ConnectionMustClose carry the
    reply that is already queued (the glue logs ``reason``), ConnectionClosed means
    the client went away (EOF) or the session is over.

    Fields that hold secrets (AUTH responses) or megabytes (message bodies) are left
    out of ``repr`` so that logging an event never leaks a password or floods a log.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from postgate.queue.model import BodyType, DsnNotify, DsnRet
from postgate.smtp.replies import Reply


class NeedData(enum.Enum):
    """``next_event()`` needs more bytes from the client before it can say more."""

    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event."""


@dataclass(frozen=True, slots=True)
class Hello(Event):
    """HELO (``extended=False``) or EHLO (``extended=True``)."""

    hostname: str
    extended: bool


@dataclass(frozen=True, slots=True)
class MailFrom(Event):
    """MAIL FROM. ``address`` is "" for the null reverse-path ``<>``."""

    address: str
    size: int | None = None
    body: BodyType | None = None
    smtputf8: bool = False
    ret: DsnRet | None = None
    envid: str | None = None


@dataclass(frozen=True, slots=True)
class RcptTo(Event):
    """RCPT TO. ``orcpt`` is the decoded ORCPT as ``(addr-type, address)``."""

    address: str
    notify: frozenset[DsnNotify] | None = None
    orcpt: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class DataRequested(Event):
    """The DATA command; answer 354 to receive the message."""


@dataclass(frozen=True, slots=True)
class MessageReceived(Event):
    """A complete message (dot-unstuffed for DATA, concatenated chunks for BDAT)."""

    message: bytes = field(repr=False)
    via_bdat: bool

    @property
    def size(self) -> int:
        return len(self.message)


@dataclass(frozen=True, slots=True)
class StartTlsRequested(Event):
    """STARTTLS; answer 220, do the handshake, then call ``tls_started()``."""


@dataclass(frozen=True, slots=True)
class AuthRequested(Event):
    """AUTH. ``initial_response`` is raw base64 text, "=" for empty (RFC 4954 4), or None."""

    mechanism: str
    initial_response: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class AuthLine(Event):
    """One client line during an AUTH exchange: base64 text, or "*" to cancel."""

    text: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Reset(Event):
    """RSET."""


@dataclass(frozen=True, slots=True)
class Noop(Event):
    """NOOP."""


@dataclass(frozen=True, slots=True)
class Quit(Event):
    """QUIT; any answer ends the session."""


@dataclass(frozen=True, slots=True)
class Verify(Event):
    """VRFY (the usual answer is 252)."""

    argument: str


@dataclass(frozen=True, slots=True)
class HelpRequested(Event):
    """HELP, with an optional topic ("" when none)."""

    topic: str


@dataclass(frozen=True, slots=True)
class CommandRejected(Event):
    """The machine refused a command or a message itself; ``reply`` is already queued.

    ``command`` is the offending line for the log, with AUTH secrets masked.
    """

    reply: Reply
    reason: str
    command: str


@dataclass(frozen=True, slots=True)
class ConnectionMustClose(Event):
    """The machine ended the session (e.g. too many errors); ``reply`` is queued.
    Write ``take_output()`` and close the socket."""

    reply: Reply
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The client closed its side (EOF), or the session already ended."""


# Events that wait for respond(); the others are reports.
AWAITING_REPLY: frozenset[type[Event]] = frozenset(
    {
        Hello,
        MailFrom,
        RcptTo,
        DataRequested,
        MessageReceived,
        StartTlsRequested,
        AuthRequested,
        AuthLine,
        Reset,
        Noop,
        Quit,
        Verify,
        HelpRequested,
    }
)
