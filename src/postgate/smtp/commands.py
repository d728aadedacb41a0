"""smtp.commands — one decoded command line into a verb and a typed event.

SYNOPSIS
    verb, argument = identify(line)           # verb None: not an SMTP command we know
    line_limit(verb, limits) -> int
    parse_hello(verb, argument) -> Hello
    parse_mail(argument, *, extended, max_size) -> MailFrom
    parse_rcpt(argument, *, extended, smtputf8) -> RcptTo
    parse_bdat(argument) -> (size, last)
    parse_auth(argument) -> AuthRequested
    parse_simple(verb, argument) -> Event      # DATA RSET NOOP QUIT VRFY HELP STARTTLS
    loggable(line) -> str
    line_problem(raw) -> (Reply, reason) | None
    verb_of(event) -> Verb                     # the command an event answers to

DESCRIPTION
    Pure syntax: whether a command may be used *now* is smtp.state's business.
    Verbs are case-insensitive (RFC 5321 2.4). "MAIL FROM: <a>" (a space after the
    colon) is tolerated because widespread clients send it; a path without angle
    brackets is not.

DIAGNOSTICS
    Refusals raise RemoteProtocolError carrying the reply: 501 5.5.4 for syntax,
    555 5.5.4 for parameters the session may not use, 553 5.6.7 for a non-ASCII
    address without SMTPUTF8 (RFC 6531 3.4), 552 5.3.4 for SIZE over the limit.
"""

from __future__ import annotations

import re

from postgate.smtp import replies
from postgate.smtp.errors import RemoteProtocolError
from postgate.smtp.events import (
    AuthLine,
    AuthRequested,
    DataRequested,
    Event,
    Hello,
    HelpRequested,
    MailFrom,
    MessageReceived,
    Noop,
    Quit,
    RcptTo,
    Reset,
    StartTlsRequested,
    Verify,
)
from postgate.smtp.limits import SmtpLimits
from postgate.smtp.params import (
    MailParameters,
    RcptParameters,
    parse_path,
    split_parameters,
)
from postgate.smtp.replies import Reply
from postgate.smtp.state import Verb

_COMMAND_VERBS = {verb.value: verb for verb in Verb if verb.value.isalpha()}
# Known to RFC 5321 or its predecessors but deliberately not offered.
NOT_IMPLEMENTED_VERBS = frozenset({"EXPN", "TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML"})

# Extensions lengthen the command line (RFC 5321 4.5.3.1.4 allows it): RFC 1870 adds
# 26 octets for SIZE, RFC 3461 5 adds 100 for ENVID on MAIL and 500 for NOTIFY/ORCPT
# on RCPT, RFC 4954 5 adds 500 for AUTH= on MAIL.
_MAIL_ALLOWANCE = 26 + 100 + 500
_RCPT_ALLOWANCE = 500
_MECHANISM = re.compile(r"[A-Z0-9\-_]{1,20}")  # RFC 4422 3.1 sasl-mech
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _syntax(text: str) -> RemoteProtocolError:
    return RemoteProtocolError(text, Reply(501, "5.5.4", text))


def identify(line: str) -> tuple[Verb | None, str]:
    """The verb (None when unknown) and its argument with surrounding spaces removed."""
    word, _, argument = line.partition(" ")
    return _COMMAND_VERBS.get(word.upper()), argument.strip(" ")


def line_limit(verb: Verb | None, limits: SmtpLimits) -> int:
    """The longest line, CRLF included, that ``verb`` may use."""
    if verb is Verb.AUTH:
        return limits.max_auth_line  # RFC 4954 4: initial responses up to 12288 octets
    if verb is Verb.MAIL:
        return limits.max_command_line + _MAIL_ALLOWANCE
    if verb is Verb.RCPT:
        return limits.max_command_line + _RCPT_ALLOWANCE
    return limits.max_command_line


def longest_line(limits: SmtpLimits) -> int:
    """The longest command line any verb may use: the receive buffer's cut-off."""
    return max(line_limit(verb, limits) for verb in (Verb.AUTH, Verb.MAIL, Verb.RCPT))


def loggable(line: str) -> str:
    """The line as it may appear in a log: AUTH secrets masked, length capped."""
    verb, argument = identify(line)
    if verb is Verb.AUTH and " " in argument:
        line = f"{line.partition(' ')[0]} {argument.partition(' ')[0]} ***"
    return line if len(line) <= 120 else line[:117] + "..."


def parse_hello(verb: Verb, argument: str) -> Hello:
    # RFC 5321 4.1.1.1: exactly one domain or address literal.
    if not argument or " " in argument:
        raise _syntax(f"Syntax: {verb.value} hostname")
    return Hello(hostname=argument, extended=verb is Verb.EHLO)


def _check_esmtp(rest: str, extended: bool) -> None:
    if rest.strip(" ") and not extended:
        # Parameters are ESMTP: a client that said HELO has been offered none.
        raise RemoteProtocolError(
            "parameters after HELO",
            Reply(555, "5.5.4", "Parameters are not allowed after HELO; use EHLO"),
        )


def _non_ascii_refused(address: str) -> RemoteProtocolError:
    # RFC 6531 3.4: internationalised addresses need SMTPUTF8 on MAIL.
    return RemoteProtocolError(
        "non-ASCII address without SMTPUTF8",
        Reply(553, "5.6.7", "Non-ASCII addresses require the SMTPUTF8 parameter on MAIL"),
    )


def _after_keyword(argument: str, keyword: str, usage: str) -> str:
    if argument[: len(keyword)].upper() != keyword:
        raise _syntax(f"Syntax: {usage}")
    return argument[len(keyword) :].lstrip(" ")


def parse_mail(argument: str, *, extended: bool, max_size: int) -> MailFrom:
    text = _after_keyword(argument, "FROM:", "MAIL FROM:<address>")
    address, rest = parse_path(text, null_allowed=True, postmaster_allowed=False, status="5.1.7")
    _check_esmtp(rest, extended)
    parameters = MailParameters.parse(split_parameters(rest), max_size=max_size)
    if not address.isascii() and not parameters.smtputf8:
        raise _non_ascii_refused(address)
    return MailFrom(
        address=address,
        size=parameters.size,
        body=parameters.body,
        smtputf8=parameters.smtputf8,
        ret=parameters.ret,
        envid=parameters.envid,
    )


def parse_rcpt(argument: str, *, extended: bool, smtputf8: bool) -> RcptTo:
    text = _after_keyword(argument, "TO:", "RCPT TO:<address>")
    address, rest = parse_path(text, null_allowed=False, postmaster_allowed=True, status="5.1.3")
    _check_esmtp(rest, extended)
    parameters = RcptParameters.parse(split_parameters(rest))
    if not address.isascii() and not smtputf8:
        raise _non_ascii_refused(address)
    return RcptTo(address=address, notify=parameters.notify, orcpt=parameters.orcpt)


def parse_bdat(argument: str) -> tuple[int, bool]:
    """RFC 3030 2: ``BDAT chunk-size [SP "LAST"]``."""
    words = argument.split(" ")
    size = words[0]
    if not (size.isascii() and size.isdigit()) or len(size) > 20 or len(words) > 2:
        raise _syntax("Syntax: BDAT size [LAST]")
    if len(words) == 2 and words[1].upper() != "LAST":
        raise _syntax("Syntax: BDAT size [LAST]")
    return int(size), len(words) == 2


def parse_auth(argument: str) -> AuthRequested:
    """RFC 4954 4: ``AUTH mechanism [initial-response]``."""
    words = argument.split(" ")
    mechanism = words[0].upper()
    if not _MECHANISM.fullmatch(mechanism) or len(words) > 2:
        raise _syntax("Syntax: AUTH mechanism [initial-response]")
    initial = words[1] if len(words) == 2 else None
    if initial is not None and initial != "=" and not _BASE64.fullmatch(initial):
        raise _syntax("Initial response is not base64")
    return AuthRequested(mechanism=mechanism, initial_response=initial)


def parse_simple(verb: Verb, argument: str) -> Event:
    """The commands whose argument is nothing, free text, or a help topic."""
    if verb is Verb.NOOP:
        return Noop()  # RFC 5321 4.1.1.9: an argument is allowed and ignored
    if verb is Verb.HELP:
        return HelpRequested(topic=argument)
    if verb is Verb.VRFY:
        if not argument:
            raise _syntax("Syntax: VRFY address")
        return Verify(argument=argument)
    if argument:
        raise _syntax(f"Syntax: {verb.value} takes no argument")
    if verb is Verb.DATA:
        return DataRequested()
    if verb is Verb.RSET:
        return Reset()
    if verb is Verb.QUIT:
        return Quit()
    if verb is Verb.STARTTLS:
        return StartTlsRequested()
    raise AssertionError(f"parse_simple cannot parse {verb}")  # pragma: no cover


_EVENT_VERBS: dict[type[Event], Verb] = {
    MailFrom: Verb.MAIL,
    RcptTo: Verb.RCPT,
    DataRequested: Verb.DATA,
    MessageReceived: Verb.END_OF_MESSAGE,
    StartTlsRequested: Verb.STARTTLS,
    AuthRequested: Verb.AUTH,
    AuthLine: Verb.AUTH_LINE,
    Reset: Verb.RSET,
    Noop: Verb.NOOP,
    Quit: Verb.QUIT,
    Verify: Verb.VRFY,
    HelpRequested: Verb.HELP,
}


def verb_of(event: Event) -> Verb:
    """The verb whose transitions apply when ``event`` is answered."""
    if isinstance(event, Hello):
        return Verb.EHLO if event.extended else Verb.HELO
    return _EVENT_VERBS[type(event)]


def line_problem(raw: bytes) -> tuple[Reply, str] | None:
    """A command line must end in CRLF and hold no other CR, LF or NUL (RFC 5321 2.3.8)."""
    if not raw.endswith(b"\r\n"):
        return replies.BARE_LF_IN_COMMAND, "command line ends with bare LF"
    if raw.count(b"\r") != 1:
        return replies.BARE_LF_IN_COMMAND, "bare CR in command line"
    if b"\0" in raw:
        return replies.NUL_IN_COMMAND, "NUL in command line"
    return None
