"""smtp.errors — the two ways the SMTP state machine can be misused.

SYNOPSIS
    LocalProtocolError     the application broke the API contract
    RemoteProtocolError    the client sent something the parsers refuse

DESCRIPTION
    Modelled on h11: one exception per direction. ``LocalProtocolError`` is a bug in
    the caller (answering when nothing is pending, asking for the next event while
    a reply is owed, an impossible reply class) and is never caused by client bytes.
    ``RemoteProtocolError`` carries the ``Reply`` to send; the parsers in
    ``smtp.params`` and ``smtp.commands`` raise it and ``ServerConnection`` turns
    it into a ``CommandRejected`` event, so it never escapes ``next_event()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from postgate.smtp.replies import Reply


class LocalProtocolError(Exception):
    """The application used the state machine in a way the protocol does not allow."""


class RemoteProtocolError(Exception):
    """The client's input is refused; ``reply`` is the SMTP answer to send."""

    def __init__(self, reason: str, reply: Reply) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply
