"""smtp.replies — SMTP replies as values, and the ones the machine sends itself.

SYNOPSIS
    Reply(code, enhanced, text).to_bytes()
    build_ehlo_reply(hostname, greeting, *, max_size, starttls, auth_mechanisms,
                     chunking=True) -> Reply

DESCRIPTION
    A ``Reply`` is validated when built (code range, enhanced-code class, no CR or
    LF inside a text line), so a malformed reply is a bug found at construction,
    not bytes on the wire. Multi-line replies use the ``250-`` continuation form of
    RFC 5321 4.2.1; every line repeats the enhanced code (RFC 2034 4). The EHLO
    reply is built with an empty enhanced code because its lines are keywords
    (RFC 5321 4.1.1.1), not human text.

STANDARDS
    RFC 5321 (SMTP), RFC 2034 and RFC 3463 (enhanced status codes), RFC 2920
    (PIPELINING), RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 6531 (SMTPUTF8),
    RFC 3030 (CHUNKING), RFC 3461 (DSN), RFC 3207 (STARTTLS), RFC 4954 (AUTH).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from postgate.smtp.errors import LocalProtocolError

_ENHANCED = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}")


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str
    text: str | tuple[str, ...]

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise LocalProtocolError(f"reply code {self.code} is outside 200-599")
        if self.enhanced:
            if not _ENHANCED.fullmatch(self.enhanced):
                raise LocalProtocolError(f"bad enhanced status code {self.enhanced!r}")
            # RFC 3463 2: the class digit of the enhanced code matches the reply class.
            if int(self.enhanced[0]) != self.code // 100:
                raise LocalProtocolError(f"enhanced code {self.enhanced} does not fit {self.code}")
        for line in self.lines:
            if "\r" in line or "\n" in line:
                raise LocalProtocolError("reply text must not contain CR or LF")

    @property
    def lines(self) -> tuple[str, ...]:
        if isinstance(self.text, str):
            return (self.text,)
        return self.text or ("",)

    @property
    def reply_class(self) -> int:
        return self.code // 100

    def to_bytes(self) -> bytes:
        lines = self.lines
        prefix = f"{self.enhanced} " if self.enhanced else ""
        out = [f"{self.code}-{prefix}{line}".rstrip(" ") + "\r\n" for line in lines[:-1]]
        last = f"{prefix}{lines[-1]}"
        # RFC 4954 4: a 334 challenge keeps its SP even when the challenge is empty.
        out.append(f"{self.code} {last.rstrip(' ') if self.enhanced else last}\r\n")
        return "".join(out).encode("utf-8")

    def __str__(self) -> str:
        return " ".join(filter(None, (str(self.code), self.enhanced, " / ".join(self.lines))))


def build_ehlo_reply(
    hostname: str,
    greeting: str,
    *,
    max_size: int,
    starttls: bool,
    auth_mechanisms: Sequence[str],
    chunking: bool = True,
) -> Reply:
    """The 250 answer to EHLO: the greeting line, then one keyword per line."""
    first = f"{hostname} {greeting}" if greeting else hostname
    keywords = ["PIPELINING", f"SIZE {max_size}" if max_size > 0 else "SIZE", "8BITMIME"]
    keywords += ["SMTPUTF8", "ENHANCEDSTATUSCODES"]
    if chunking:
        keywords.append("CHUNKING")
    keywords.append("DSN")
    if starttls:
        keywords.append("STARTTLS")
    if auth_mechanisms:
        keywords.append("AUTH " + " ".join(mech.upper() for mech in auth_mechanisms))
    return Reply(250, "", (first, *keywords))


# Replies the machine sends on its own. Frozen values, so sharing them is safe.
UNKNOWN_COMMAND = Reply(500, "5.5.1", "Command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
BARE_LF_IN_COMMAND = Reply(500, "5.5.2", "Command lines must end with CRLF")
NUL_IN_COMMAND = Reply(500, "5.5.2", "NUL octet in command")
BAD_UTF8_IN_COMMAND = Reply(500, "5.5.2", "Command is not valid UTF-8")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
CHUNK_ACCEPTED = Reply(250, "2.0.0", "Chunk accepted")  # the class that moves a BDAT on
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
# RFC 5321 4.5.3.1.10 lists "500 Line too long", but at the end of a message a
# transaction-failed reply (554) tells the client the message, not the session, is at
# fault; 5.6.0 is RFC 3463's "other media error" for content the server will not carry.
TEXT_LINE_TOO_LONG = Reply(
    554, "5.6.0", "Message refused: a line is longer than 1000 octets including CRLF"
)
BARE_LF_IN_BODY = Reply(
    554, "5.6.0", "Message refused: bare LF in message; lines must end with CRLF"
)
BARE_CR_IN_BODY = Reply(
    554, "5.6.0", "Message refused: bare CR in message; lines must end with CRLF"
)
NUL_IN_BODY = Reply(554, "5.6.0", "Message refused: NUL octet in message")
AUTH_LINE_TOO_LONG = Reply(500, "5.5.6", "Authentication exchange line is too long")
