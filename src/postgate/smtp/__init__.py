"""smtp — the SMTP server language, sans-I/O (RFC 5321 and its extensions).

Bytes in, events out; replies in, bytes out. See smtp.connection for the API.
"""

from postgate.smtp.connection import ServerConnection
from postgate.smtp.errors import LocalProtocolError, RemoteProtocolError
from postgate.smtp.events import (
    NEED_DATA,
    AuthLine,
    AuthRequested,
    CommandRejected,
    ConnectionClosed,
    ConnectionMustClose,
    DataRequested,
    Event,
    Hello,
    HelpRequested,
    MailFrom,
    MessageReceived,
    NeedData,
    Noop,
    Quit,
    RcptTo,
    Reset,
    StartTlsRequested,
    Verify,
)
from postgate.smtp.limits import SmtpLimits
from postgate.smtp.params import xtext_decode, xtext_encode
from postgate.smtp.replies import Reply, build_ehlo_reply
from postgate.smtp.state import SmtpState

__all__ = [
    "NEED_DATA",
    "AuthLine",
    "AuthRequested",
    "CommandRejected",
    "ConnectionClosed",
    "ConnectionMustClose",
    "DataRequested",
    "Event",
    "Hello",
    "HelpRequested",
    "LocalProtocolError",
    "MailFrom",
    "MessageReceived",
    "NeedData",
    "Noop",
    "Quit",
    "RcptTo",
    "RemoteProtocolError",
    "Reply",
    "Reset",
    "ServerConnection",
    "SmtpLimits",
    "SmtpState",
    "StartTlsRequested",
    "Verify",
    "build_ehlo_reply",
    "xtext_decode",
    "xtext_encode",
]
