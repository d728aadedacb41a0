"""smtp.state — the SMTP server's sequencing rules, as one table.

SYNOPSIS
    SmtpState, Verb, SessionFlags
    TRANSITIONS[state][verb][reply_class] -> next state
    check_sequence(state, verb, flags) -> (Reply, reason) | None
    next_state(state, verb, reply) -> SmtpState          # LocalProtocolError if impossible

DESCRIPTION
    Everything that decides *when* a command may be used lives here and nowhere
    else (the h11 habit): a command missing from ``TRANSITIONS[state]`` is out of
    sequence and gets the 503 from ``_OUT_OF_SEQUENCE`` (or the generic one). A
    present command moves the session according to the class of the reply it got,
    so "MAIL answered 250 opens a transaction" and "MAIL answered 550 does not" are
    both table entries. A reply class missing from the entry (354 to MAIL, say) is a
    bug in the application and raises ``LocalProtocolError``.

    Conditions that are not the protocol state — EHLO versus HELO, TLS, whether
    the client authenticated and what the listener requires — are ``SessionFlags``
    checked by ``check_sequence`` after the table.

    Pseudo-verbs: END_OF_MESSAGE is the final dot of DATA or BDAT LAST (answered by
    the application), AUTH_LINE is a client line inside an AUTH exchange. A BDAT
    chunk that is not LAST is answered by the machine itself with a 250.

STANDARDS
    RFC 5321 4.1.4 (order of commands), RFC 3030 2 (BDAT), RFC 3207 4 (STARTTLS),
    RFC 4954 4 (AUTH).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from postgate.smtp.errors import LocalProtocolError
from postgate.smtp.replies import BAD_SEQUENCE, Reply


class SmtpState(enum.Enum):
    CONNECTED = "connected"  # no successful HELO/EHLO yet
    GREETED = "greeted"  # HELO/EHLO accepted, no mail transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one recipient accepted
    DATA = "data"  # reading a DATA body up to <CRLF>.<CRLF>
    BDAT = "bdat"  # a BDAT transaction is under way (RFC 3030)
    AUTH = "auth"  # inside an AUTH exchange: the next line is a response
    TLS_PENDING = "tls-pending"  # STARTTLS answered 220, waiting for the handshake
    CLOSED = "closed"


class Verb(enum.Enum):
    HELO = "HELO"
    EHLO = "EHLO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    BDAT = "BDAT"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    VRFY = "VRFY"
    HELP = "HELP"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    END_OF_MESSAGE = "<end of message>"
    AUTH_LINE = "<auth response>"


@dataclass(frozen=True, slots=True)
class SessionFlags:
    extended: bool  # the client said EHLO, not HELO
    tls_active: bool
    authenticated: bool
    require_tls_for_auth: bool
    require_auth_for_mail: bool


S = SmtpState
_Outcomes = Mapping[int, SmtpState]


def _always(state: SmtpState) -> _Outcomes:
    """Any reply class leads to ``state``."""
    return {2: state, 4: state, 5: state}


def _on_success(success: SmtpState, otherwise: SmtpState) -> _Outcomes:
    """A 2xx leads to ``success``, a refusal leaves the session at ``otherwise``."""
    return {2: success, 4: otherwise, 5: otherwise}


def _session_commands(state: SmtpState, *, greeted: bool) -> dict[Verb, _Outcomes]:
    """Commands valid anywhere between transactions and inside one (RFC 5321 4.1.4).

    An accepted HELO/EHLO or RSET ends any transaction, as if RSET had been sent.
    """
    return {
        Verb.HELO: _on_success(S.GREETED, state),
        Verb.EHLO: _on_success(S.GREETED, state),
        Verb.RSET: _on_success(S.GREETED if greeted else S.CONNECTED, state),
        Verb.NOOP: _always(state),
        Verb.QUIT: _always(S.CLOSED),
        Verb.VRFY: _always(state),
        Verb.HELP: _always(state),
    }


TRANSITIONS: Final[Mapping[SmtpState, Mapping[Verb, _Outcomes]]] = {
    S.CONNECTED: {
        **_session_commands(S.CONNECTED, greeted=False),
    },
    S.GREETED: {
        **_session_commands(S.GREETED, greeted=True),
        Verb.MAIL: _on_success(S.MAIL, S.GREETED),
        Verb.STARTTLS: _on_success(S.TLS_PENDING, S.GREETED),
        Verb.AUTH: {2: S.GREETED, 3: S.AUTH, 4: S.GREETED, 5: S.GREETED},
    },
    S.MAIL: {
        **_session_commands(S.MAIL, greeted=True),
        Verb.RCPT: _on_success(S.RCPT, S.MAIL),
    },
    S.RCPT: {
        **_session_commands(S.RCPT, greeted=True),
        Verb.RCPT: _always(S.RCPT),
        Verb.DATA: {3: S.DATA, 4: S.RCPT, 5: S.RCPT},  # only 354 opens the body
        # The machine answers a BDAT chunk itself; LAST then waits in BDAT for the
        # application's answer to END_OF_MESSAGE.
        Verb.BDAT: _on_success(S.BDAT, S.RCPT),
    },
    S.DATA: {
        # RFC 5321 4.1.1.4: after the final dot the transaction is over, whatever
        # the answer was.
        Verb.END_OF_MESSAGE: _always(S.GREETED),
    },
    S.BDAT: {
        **_session_commands(S.BDAT, greeted=True),
        Verb.BDAT: _on_success(S.BDAT, S.BDAT),
        Verb.END_OF_MESSAGE: _always(S.GREETED),
    },
    S.AUTH: {
        Verb.AUTH_LINE: {2: S.GREETED, 3: S.AUTH, 4: S.GREETED, 5: S.GREETED},
    },
    S.TLS_PENDING: {},
    S.CLOSED: {},
}

_NEED_HELO = Reply(503, "5.5.1", "Send HELO/EHLO first")
_NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command")
_NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command (no valid recipients)")
_NESTED_MAIL = Reply(503, "5.5.1", "Nested MAIL command")
_IN_TRANSACTION = Reply(503, "5.5.1", "Not allowed during a mail transaction")

_OUT_OF_SEQUENCE: Final[Mapping[tuple[SmtpState, Verb], Reply]] = {
    (S.CONNECTED, Verb.MAIL): _NEED_HELO,
    (S.CONNECTED, Verb.RCPT): _NEED_MAIL,
    (S.CONNECTED, Verb.DATA): _NEED_MAIL,
    (S.CONNECTED, Verb.BDAT): _NEED_MAIL,
    (S.CONNECTED, Verb.STARTTLS): Reply(503, "5.5.1", "Send EHLO first"),
    (S.CONNECTED, Verb.AUTH): Reply(503, "5.5.1", "Send EHLO first"),
    (S.GREETED, Verb.RCPT): _NEED_MAIL,
    (S.GREETED, Verb.DATA): _NEED_MAIL,
    (S.GREETED, Verb.BDAT): _NEED_MAIL,
    (S.MAIL, Verb.MAIL): _NESTED_MAIL,
    (S.MAIL, Verb.DATA): _NEED_RCPT,
    (S.MAIL, Verb.BDAT): _NEED_RCPT,
    (S.MAIL, Verb.AUTH): _IN_TRANSACTION,
    (S.MAIL, Verb.STARTTLS): _IN_TRANSACTION,
    (S.RCPT, Verb.MAIL): _NESTED_MAIL,
    (S.RCPT, Verb.AUTH): _IN_TRANSACTION,
    (S.RCPT, Verb.STARTTLS): _IN_TRANSACTION,
    (S.BDAT, Verb.MAIL): _NESTED_MAIL,
    (S.BDAT, Verb.RCPT): Reply(503, "5.5.1", "RCPT not allowed after BDAT"),
    # RFC 3030 3: DATA and BDAT cannot be mixed within one transaction.
    (S.BDAT, Verb.DATA): Reply(503, "5.5.1", "DATA not allowed after BDAT"),
    (S.BDAT, Verb.AUTH): _IN_TRANSACTION,
    (S.BDAT, Verb.STARTTLS): _IN_TRANSACTION,
}

_NEED_EHLO = Reply(503, "5.5.1", "Send EHLO first (this command is an ESMTP extension)")


def check_sequence(state: SmtpState, verb: Verb, flags: SessionFlags) -> tuple[Reply, str] | None:
    """Why ``verb`` may not be used now (reply and log reason), or None if it may."""
    if verb not in TRANSITIONS[state]:
        reply = _OUT_OF_SEQUENCE.get((state, verb), BAD_SEQUENCE)
        return reply, f"{verb.value} out of sequence in state {state.value}"
    if verb in (Verb.STARTTLS, Verb.AUTH, Verb.BDAT) and not flags.extended:
        return _NEED_EHLO, f"{verb.value} after HELO"
    if verb is Verb.STARTTLS and flags.tls_active:
        return Reply(503, "5.5.1", "TLS already active"), "STARTTLS inside TLS"
    if verb is Verb.AUTH:
        if flags.authenticated:
            return Reply(503, "5.5.1", "Already authenticated"), "AUTH twice"
        if flags.require_tls_for_auth and not flags.tls_active:
            # RFC 4954 4 / RFC 5248: 538 5.7.11 encryption required for the mechanism.
            reply = Reply(538, "5.7.11", "Encryption required for requested authentication")
            return reply, "AUTH without TLS"
    if verb is Verb.MAIL and flags.require_auth_for_mail and not flags.authenticated:
        if flags.require_tls_for_auth and not flags.tls_active:
            return Reply(530, "5.7.0", "Must issue a STARTTLS command first"), "MAIL without TLS"
        return Reply(530, "5.7.0", "Authentication required"), "MAIL without AUTH"
    return None


def next_state(state: SmtpState, verb: Verb, reply: Reply) -> SmtpState:
    """Where the session goes when ``verb`` got ``reply``."""
    try:
        return TRANSITIONS[state][verb][reply.reply_class]
    except KeyError:
        raise LocalProtocolError(
            f"a {reply.code} reply is not a valid answer to {verb.value} in state {state.value}"
        ) from None
