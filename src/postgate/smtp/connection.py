"""smtp.connection — the server side of one SMTP session, without I/O.

SYNOPSIS
    conn = ServerConnection(limits, require_tls_for_auth=True, require_auth_for_mail=False)
    conn.receive_data(data)          # b"" means the client closed its side
    event = conn.next_event()        # an Event, or NEED_DATA
    conn.respond(reply)              # the answer to a command event
    conn.take_output() -> bytes      # every reply queued so far, in order
    conn.tls_started()               # after answering STARTTLS with 220 and the handshake
    conn.authenticated(user)         # who the AUTH exchange proved the client to be

DESCRIPTION
    Bytes in, events out; replies in, bytes out (the h11 shape). The application
    calls ``next_event()`` until NEED_DATA and answers every command event with
    exactly one ``respond()``; until it has, ``next_event()`` raises
    LocalProtocolError. With RFC 2920 pipelining the replies to a whole group
    therefore pile up in ``take_output()`` and go out in one write.

    What the client may do when lives in smtp.state; syntax in smtp.commands and
    smtp.params; message framing in smtp.readers. This class routes bytes to the
    right reader and applies the transitions.

    The machine answers by itself, and reports with CommandRejected: unknown
    commands, syntax errors, bad sequence, overlong lines, bare CR/LF or NUL in a
    command, the recipient limit (452 4.5.3, RFC 5321 4.5.3.1.8), and a refused
    message body. After more than ``max_bad_commands`` counted rejections it
    answers 421 4.7.0 and emits ConnectionMustClose.

SECURITY
    Nothing the client sent ahead of time is ever executed out of turn: bytes
    buffered behind a refused DATA, behind any BDAT chunk, behind STARTTLS (RFC
    3207 4.2) or behind the tail of an overlong line are discarded or consumed as
    data, never parsed as commands. See smtp.readers for the DATA terminator rule
    that defeats SMTP smuggling.

SEE ALSO
    smtp.state, smtp.readers, smtp.commands, server (the asyncio glue)
"""

from __future__ import annotations

import enum

from postgate.smtp import commands, replies
from postgate.smtp.buffer import LINE_TOO_LONG, ReceiveBuffer
from postgate.smtp.errors import LocalProtocolError, RemoteProtocolError
from postgate.smtp.events import (
    AWAITING_REPLY,
    NEED_DATA,
    AuthLine,
    AuthRequested,
    CommandRejected,
    ConnectionClosed,
    ConnectionMustClose,
    DataRequested,
    Event,
    Hello,
    MailFrom,
    MessageReceived,
    NeedData,
    RcptTo,
    Reset,
    StartTlsRequested,
)
from postgate.smtp.limits import SmtpLimits
from postgate.smtp.readers import ChunkedMessage, DataOutcome, DataReader, PendingChunk
from postgate.smtp.replies import Reply
from postgate.smtp.state import SessionFlags, SmtpState, Verb, check_sequence, next_state


class _Step(enum.Enum):
    CONTINUE = "continue"  # a step consumed input but has nothing to report yet


_CONTINUE = _Step.CONTINUE


class ServerConnection:
    def __init__(
        self,
        limits: SmtpLimits,
        *,
        require_tls_for_auth: bool,
        require_auth_for_mail: bool,
        tls_active: bool = False,
    ) -> None:
        self._limits = limits
        self._require_tls_for_auth = require_tls_for_auth
        self._require_auth_for_mail = require_auth_for_mail
        self._tls_active = tls_active
        self._buffer = ReceiveBuffer()
        self._line_cutoff = commands.longest_line(limits)
        self._output = bytearray()
        self._state = SmtpState.CONNECTED
        self._pending: tuple[Event, Verb] | None = None
        self._eof = False
        self._bad_commands = 0
        self._extended = False
        self._helo_name: str | None = None
        self._authenticated = False
        self._authenticated_user: str | None = None
        # The current mail transaction.
        self._recipients = 0
        self._smtputf8 = False
        self._data_reader: DataReader | None = None
        self._chunked: ChunkedMessage | None = None
        self._chunk: PendingChunk | None = None

    # -- what the application reads -------------------------------------------------

    @property
    def state(self) -> SmtpState:
        return self._state

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def extended(self) -> bool:
        """The client greeted with EHLO (and may use ESMTP)."""
        return self._extended

    @property
    def helo_name(self) -> str | None:
        return self._helo_name

    @property
    def is_authenticated(self) -> bool:
        return self._authenticated

    @property
    def authenticated_user(self) -> str | None:
        return self._authenticated_user if self._authenticated else None

    @property
    def recipients_accepted(self) -> int:
        return self._recipients

    @property
    def bad_commands(self) -> int:
        return self._bad_commands

    @property
    def awaiting_reply(self) -> bool:
        return self._pending is not None

    # -- the API --------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data() after EOF")
            return
        if not data:
            self._eof = True
        elif self._state not in (SmtpState.TLS_PENDING, SmtpState.CLOSED):
            # RFC 3207 4.2: plaintext that follows STARTTLS is discarded, never executed.
            self._buffer.append(data)

    def take_output(self) -> bytes:
        output = bytes(self._output)
        self._output.clear()
        return output

    def next_event(self) -> Event | NeedData:
        if self._pending is not None:
            raise LocalProtocolError(f"answer {type(self._pending[0]).__name__} first")
        if self._state is SmtpState.CLOSED:
            return ConnectionClosed()
        if self._state is SmtpState.TLS_PENDING:
            if self._eof:  # the client gave up before the handshake
                self._close_session()
                return ConnectionClosed()
            return NEED_DATA
        # Terminates: every _CONTINUE step consumed a command line or chunk octets.
        while True:
            step = self._step()
            if step is not _CONTINUE:
                break
        if isinstance(step, Event):
            if type(step) in AWAITING_REPLY:
                self._pending = (step, commands.verb_of(step))
            return step
        if self._eof:
            self._close_session()
            return ConnectionClosed()
        return NEED_DATA

    def respond(self, reply: Reply) -> None:
        if self._pending is None:
            raise LocalProtocolError("respond() with no command awaiting a reply")
        event, verb = self._pending
        new_state = next_state(self._state, verb, reply)
        self._pending = None
        self._send(reply)
        self._apply(event, reply)
        self._state = new_state
        if new_state is SmtpState.CLOSED:
            self._close_session()

    def tls_started(self) -> None:
        """The TLS handshake is done: forget everything learnt in plaintext (RFC 3207 4.2)."""
        if self._state is not SmtpState.TLS_PENDING:
            raise LocalProtocolError("tls_started() without an accepted STARTTLS")
        self._buffer.clear()
        self._tls_active = True
        self._state = SmtpState.CONNECTED
        self._extended = False
        self._helo_name = None
        self._authenticated = False
        self._authenticated_user = None
        self._reset_transaction()

    def authenticated(self, user: str) -> None:
        """Record who authenticated: before answering AUTH with 235, or right after."""
        awaiting_auth = self._pending is not None and isinstance(
            self._pending[0], AuthRequested | AuthLine
        )
        named_after_235 = self._authenticated and self._authenticated_user is None
        if not (awaiting_auth or named_after_235):
            raise LocalProtocolError("authenticated() outside a successful AUTH exchange")
        self._authenticated_user = user

    # -- reading --------------------------------------------------------------------

    def _step(self) -> Event | _Step | None:
        """One event, None when more bytes are needed, or _CONTINUE."""
        if self._chunk is not None:
            return self._read_chunk(self._chunk)
        if self._state is SmtpState.DATA:
            return self._read_data()
        if self._state is SmtpState.AUTH:
            return self._read_auth_line()
        return self._read_command()

    def _read_command(self) -> Event | _Step | None:
        raw = self._buffer.take_line(self._line_cutoff)
        if raw is None:
            return None
        if raw is LINE_TOO_LONG:
            return self._reject(replies.LINE_TOO_LONG, "command line too long", "")
        command = commands.loggable(raw.decode("utf-8", "backslashreplace").rstrip("\r\n"))
        problem = commands.line_problem(raw)
        if problem is not None:
            return self._reject(*problem, command)
        try:
            line = raw[:-2].decode("utf-8")
        except UnicodeDecodeError:
            return self._reject(replies.BAD_UTF8_IN_COMMAND, "invalid UTF-8 in command", command)
        verb, argument = commands.identify(line)
        if len(raw) > commands.line_limit(verb, self._limits):
            if verb is Verb.DATA or verb is Verb.BDAT:
                self._buffer.clear()  # whatever follows may be message data
            return self._reject(replies.LINE_TOO_LONG, "command line too long", command)
        if verb is None:
            word = line.partition(" ")[0].upper()
            if word in commands.NOT_IMPLEMENTED_VERBS:
                return self._reject(replies.NOT_IMPLEMENTED, f"{word} not implemented", command)
            return self._reject(replies.UNKNOWN_COMMAND, "unknown command", command)
        if verb is Verb.BDAT:
            return self._start_chunk(argument, command)
        refusal = check_sequence(self._state, verb, self._flags())
        full = self._recipients >= self._limits.max_recipients
        if refusal is None and verb is Verb.RCPT and full:
            # RFC 5321 4.5.3.1.10: 452 asks the client to send the rest later. A normal
            # part of big deliveries, so it does not count as a client error.
            self._send(replies.TOO_MANY_RECIPIENTS)
            return CommandRejected(replies.TOO_MANY_RECIPIENTS, "too many recipients", command)
        try:
            if refusal is not None:
                raise RemoteProtocolError(refusal[1], refusal[0])
            return self._parse(verb, argument)
        except RemoteProtocolError as error:
            if verb is Verb.DATA:
                # The client may have pipelined the body; it must never run as commands.
                self._buffer.clear()
            return self._reject(error.reply, error.reason, command)

    def _parse(self, verb: Verb, argument: str) -> Event:
        if verb is Verb.HELO or verb is Verb.EHLO:
            return commands.parse_hello(verb, argument)
        if verb is Verb.MAIL:
            max_size = self._limits.max_message_size
            return commands.parse_mail(argument, extended=self._extended, max_size=max_size)
        if verb is Verb.RCPT:
            return commands.parse_rcpt(argument, extended=self._extended, smtputf8=self._smtputf8)
        if verb is Verb.AUTH:
            return commands.parse_auth(argument)
        return commands.parse_simple(verb, argument)

    def _start_chunk(self, argument: str, command: str) -> Event | _Step:
        try:
            size, last = commands.parse_bdat(argument)
        except RemoteProtocolError as error:
            # RFC 3030 2: without a size the end of the chunk cannot be found, so no
            # later byte can be trusted to be a command.
            return self._close(error.reply, f"{error.reason}; cannot resynchronise")
        refusal = check_sequence(self._state, Verb.BDAT, self._flags())
        so_far = self._chunked.size if self._chunked is not None and refusal is None else 0
        if so_far + size > self._limits.max_message_size:
            # RFC 3030 2 would have us read the chunk and refuse at the end; for a
            # chunk announced beyond the size limit that means swallowing up to
            # gigabytes first. Refuse now and close: the client learns at once and
            # nothing after the BDAT line could be trusted to be a command.
            return self._close(
                replies.MESSAGE_TOO_BIG, f"BDAT chunk of {size} octets exceeds the limit"
            )
        if refusal is None:
            if self._chunked is None:
                self._chunked = ChunkedMessage(self._limits)
            self._state = next_state(self._state, Verb.BDAT, replies.CHUNK_ACCEPTED)
            self._chunk = PendingChunk(size, last, None)
        else:
            # RFC 3030 2: a refused BDAT's chunk is still read, and thrown away.
            self._chunk = PendingChunk(size, last, (*refusal, command))
        return _CONTINUE

    def _read_chunk(self, chunk: PendingChunk) -> Event | _Step | None:
        if chunk.remaining:
            data = self._buffer.take(chunk.remaining)
            if not data:
                return None
            chunk.remaining -= len(data)
            if chunk.refusal is None and self._chunked is not None:
                self._chunked.add(data)
            if chunk.remaining:
                return None
        self._chunk = None
        if chunk.refusal is not None:
            return self._reject(*chunk.refusal)
        if not chunk.last:
            self._send(Reply(250, "2.0.0", f"{chunk.size} octets received"))
            return _CONTINUE
        assert self._chunked is not None  # set when the BDAT was accepted
        return self._end_of_message(self._chunked.finish(), via_bdat=True)

    def _read_data(self) -> Event | None:
        data = self._buffer.take_all()
        if not data or self._data_reader is None:
            return None
        outcome = self._data_reader.receive(data)
        if outcome is None:
            return None
        self._buffer.append(outcome.leftover)  # pipelined commands after the final dot
        return self._end_of_message(outcome, via_bdat=False)

    def _end_of_message(self, outcome: DataOutcome, *, via_bdat: bool) -> Event:
        if outcome.refusal is None and outcome.message is not None:
            return MessageReceived(message=outcome.message, via_bdat=via_bdat)
        assert outcome.refusal is not None
        reply, reason = outcome.refusal
        self._send(reply)
        self._state = next_state(self._state, Verb.END_OF_MESSAGE, reply)
        self._reset_transaction()
        # A refused message is not a protocol error of the client: not counted.
        return CommandRejected(reply, reason, "BDAT LAST" if via_bdat else "end of DATA")

    def _read_auth_line(self) -> Event | None:
        raw = self._buffer.take_line(self._limits.max_auth_line)
        if raw is None:
            return None
        if raw is LINE_TOO_LONG:
            return self._abort_auth(replies.AUTH_LINE_TOO_LONG, "AUTH response too long")
        if commands.line_problem(raw) is not None or not raw.isascii():
            malformed = Reply(501, "5.5.2", "Malformed authentication response")
            return self._abort_auth(malformed, "malformed AUTH response")
        return AuthLine(text=raw[:-2].decode("ascii"))

    def _abort_auth(self, reply: Reply, reason: str) -> Event:
        self._state = next_state(self._state, Verb.AUTH_LINE, reply)
        return self._reject(reply, reason, "<auth response>")

    # -- replying and transitions ---------------------------------------------------

    def _flags(self) -> SessionFlags:
        return SessionFlags(
            extended=self._extended,
            tls_active=self._tls_active,
            authenticated=self._authenticated,
            require_tls_for_auth=self._require_tls_for_auth,
            require_auth_for_mail=self._require_auth_for_mail,
        )

    def _send(self, reply: Reply) -> None:
        self._output += reply.to_bytes()

    def _reject(self, reply: Reply, reason: str, command: str) -> Event:
        self._bad_commands += 1
        if self._bad_commands > self._limits.max_bad_commands:
            return self._close(replies.TOO_MANY_ERRORS, f"too many errors; last: {reason}")
        self._send(reply)
        return CommandRejected(reply, reason, command)

    def _close(self, reply: Reply, reason: str) -> Event:
        self._send(reply)
        self._close_session()
        return ConnectionMustClose(reply, reason)

    def _close_session(self) -> None:
        self._state = SmtpState.CLOSED
        self._buffer.clear()
        self._chunk = None
        self._reset_transaction()

    def _apply(self, event: Event, reply: Reply) -> None:
        """Side effects of an answered command, beyond the state change."""
        success = reply.reply_class == 2
        if isinstance(event, Hello) and success:
            self._extended = event.extended
            self._helo_name = event.hostname
            self._reset_transaction()  # RFC 5321 4.1.4: an accepted EHLO acts as RSET
        elif isinstance(event, MailFrom) and success:
            self._smtputf8 = event.smtputf8
        elif isinstance(event, RcptTo) and success:
            self._recipients += 1
        elif isinstance(event, DataRequested):
            if reply.reply_class == 3:
                self._data_reader = DataReader(self._limits)
            else:
                self._buffer.clear()  # a refused DATA: the pipelined body is not commands
        elif isinstance(event, StartTlsRequested) and success:
            self._buffer.clear()  # RFC 3207 4.2
        elif isinstance(event, AuthRequested | AuthLine):
            if success:
                self._authenticated = True
            elif reply.reply_class != 3:
                self._authenticated_user = None  # a name recorded for a failed exchange
        elif isinstance(event, MessageReceived) or (isinstance(event, Reset) and success):
            self._reset_transaction()

    def _reset_transaction(self) -> None:
        self._recipients = 0
        self._smtputf8 = False
        self._data_reader = None
        self._chunked = None
