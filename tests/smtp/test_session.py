"""Whole sessions and command sequencing, with exact reply bytes."""

from __future__ import annotations

import pytest

from postgate.smtp import (
    NEED_DATA,
    CommandRejected,
    ConnectionClosed,
    ConnectionMustClose,
    DataRequested,
    Hello,
    HelpRequested,
    LocalProtocolError,
    MailFrom,
    MessageReceived,
    Noop,
    Quit,
    RcptTo,
    Reply,
    Reset,
    ServerConnection,
    SmtpLimits,
    SmtpState,
    Verify,
)
from tests.smtp.helpers import EHLO_REPLY, Driver, greeted, in_transaction

SESSION = (
    b"EHLO client.example\r\n"
    b"MAIL FROM:<alice@example.org>\r\n"
    b"RCPT TO:<bob@example.test>\r\n"
    b"RCPT TO:<carol@example.test>\r\n"
    b"RCPT TO:<dave@example.test>\r\n"
    b"DATA\r\n"
    b"Subject: hi\r\n\r\nHello.\r\n.\r\n"
    b"QUIT\r\n"
)
SESSION_REPLIES = (
    EHLO_REPLY.to_bytes()
    + b"250 2.1.0 Ok\r\n"
    + b"250 2.1.5 Ok\r\n" * 3
    + b"354 End data with <CR><LF>.<CR><LF>\r\n"
    + b"250 2.0.0 Ok: queued as Q1\r\n"
    + b"221 2.0.0 Bye\r\n"
)
EXPECTED_EVENTS = [
    Hello("client.example", extended=True),
    MailFrom("alice@example.org"),
    RcptTo("bob@example.test"),
    RcptTo("carol@example.test"),
    RcptTo("dave@example.test"),
    DataRequested(),
    MessageReceived(b"Subject: hi\r\n\r\nHello.\r\n", via_bdat=False),
    Quit(),
    ConnectionClosed(),
]


def test_full_transaction_step_by_step() -> None:
    driver = Driver()
    lines = SESSION.split(b"\r\n")
    for line in [*lines[:6], b"Subject: hi\r\n\r\nHello.\r\n.", b"QUIT"]:
        driver.send(line + b"\r\n")
    assert driver.output() == SESSION_REPLIES
    assert driver.events == EXPECTED_EVENTS
    assert driver.conn.state is SmtpState.CLOSED
    assert driver.conn.next_event() == ConnectionClosed()


def test_full_transaction_pipelined_in_one_write() -> None:
    driver = Driver()
    driver.send(SESSION)
    assert driver.events == EXPECTED_EVENTS
    assert driver.output() == SESSION_REPLIES


def test_byte_by_byte_drip_of_a_whole_session() -> None:
    driver = Driver()
    driver.send(SESSION, chunk=1)
    assert driver.events == EXPECTED_EVENTS
    assert driver.output() == SESSION_REPLIES


def test_pipelined_replies_wait_until_the_application_drains_them() -> None:
    conn = ServerConnection(SmtpLimits(), require_tls_for_auth=False, require_auth_for_mail=False)
    conn.receive_data(b"EHLO c\r\nNOOP\r\n")
    assert conn.next_event() == Hello("c", extended=True)
    with pytest.raises(LocalProtocolError):
        conn.next_event()  # the EHLO is not answered yet
    conn.respond(EHLO_REPLY)
    assert conn.next_event() == Noop()
    conn.respond(Reply(250, "2.0.0", "Ok"))
    assert conn.next_event() is NEED_DATA
    assert conn.take_output() == EHLO_REPLY.to_bytes() + b"250 2.0.0 Ok\r\n"
    assert conn.take_output() == b""


def test_respond_without_pending_command_is_a_local_error() -> None:
    conn = ServerConnection(SmtpLimits(), require_tls_for_auth=False, require_auth_for_mail=False)
    with pytest.raises(LocalProtocolError):
        conn.respond(Reply(250, "2.0.0", "Ok"))


def test_reply_class_that_makes_no_sense_is_a_local_error() -> None:
    driver = greeted()
    driver.conn.receive_data(b"MAIL FROM:<a@b.example>\r\n")
    assert isinstance(driver.conn.next_event(), MailFrom)
    with pytest.raises(LocalProtocolError):
        driver.conn.respond(Reply(354, "", "not an answer to MAIL"))
    driver.conn.respond(Reply(250, "2.1.0", "Ok"))  # still pending, can be answered properly
    assert driver.conn.state is SmtpState.MAIL


def test_commands_are_case_insensitive() -> None:
    driver = Driver()
    driver.send(b"ehlo c\r\nmail from:<a@b.example>\r\nrCpT tO:<c@d.example>\r\nrset\r\n")
    assert [type(e) for e in driver.events] == [Hello, MailFrom, RcptTo, Reset]


def test_space_after_colon_is_tolerated() -> None:
    driver = greeted()
    driver.send(b"MAIL FROM: <a@b.example>\r\n")
    assert driver.events[-1] == MailFrom("a@b.example")


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        (b"MAIL FROM:<a@b.example>\r\n", b"503 5.5.1 Send HELO/EHLO first\r\n"),
        (b"RCPT TO:<a@b.example>\r\n", b"503 5.5.1 Need MAIL command\r\n"),
        (b"DATA\r\n", b"503 5.5.1 Need MAIL command\r\n"),
        (b"STARTTLS\r\n", b"503 5.5.1 Send EHLO first\r\n"),
    ],
)
def test_commands_before_helo(commands: bytes, expected: bytes) -> None:
    driver = Driver()
    events = driver.send(commands)
    assert driver.output() == expected
    assert isinstance(events[0], CommandRejected)
    assert driver.conn.state is SmtpState.CONNECTED


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        (b"RCPT TO:<a@b.example>\r\n", b"503 5.5.1 Need MAIL command\r\n"),
        (
            b"MAIL FROM:<a@b.example>\r\nMAIL FROM:<c@b.example>\r\n",
            b"250 2.1.0 Ok\r\n503 5.5.1 Nested MAIL command\r\n",
        ),
        (
            b"MAIL FROM:<a@b.example>\r\nDATA\r\n",
            b"250 2.1.0 Ok\r\n503 5.5.1 Need RCPT command (no valid recipients)\r\n",
        ),
    ],
)
def test_transaction_order(commands: bytes, expected: bytes) -> None:
    driver = greeted()
    driver.send(commands)
    assert driver.output() == expected


def test_data_with_only_rejected_recipients_gets_503() -> None:
    driver = greeted(answers={RcptTo: Reply(550, "5.1.1", "No such user")})
    driver.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nDATA\r\n")
    assert driver.output() == (
        b"250 2.1.0 Ok\r\n550 5.1.1 No such user\r\n"
        b"503 5.5.1 Need RCPT command (no valid recipients)\r\n"
    )
    assert driver.conn.recipients_accepted == 0


def test_rset_clears_the_transaction() -> None:
    driver = in_transaction()
    assert driver.conn.recipients_accepted == 1
    driver.send(b"RSET\r\nRCPT TO:<x@y.example>\r\n")
    assert driver.output() == b"250 2.0.0 Ok\r\n503 5.5.1 Need MAIL command\r\n"
    assert driver.conn.recipients_accepted == 0
    assert driver.conn.state is SmtpState.GREETED


def test_ehlo_clears_the_transaction() -> None:
    # RFC 5321 4.1.4: an accepted EHLO resets as if RSET had been sent.
    driver = in_transaction()
    driver.send(b"EHLO again.example\r\nMAIL FROM:<a@b.example>\r\n")
    assert driver.conn.state is SmtpState.MAIL
    assert driver.conn.recipients_accepted == 0
    assert driver.conn.helo_name == "again.example"


def test_rejected_mail_leaves_no_transaction() -> None:
    driver = greeted(answers={MailFrom: Reply(550, "5.7.1", "Go away")})
    driver.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    assert driver.output() == b"550 5.7.1 Go away\r\n503 5.5.1 Need MAIL command\r\n"


def test_recipient_limit_gets_452_from_the_machine() -> None:
    driver = greeted(limits=SmtpLimits(max_recipients=2))
    driver.send(b"MAIL FROM:<a@b.example>\r\n")
    driver.send(b"".join(b"RCPT TO:<r%d@example.test>\r\n" % n for n in range(4)))
    assert driver.output() == (
        b"250 2.1.0 Ok\r\n" + b"250 2.1.5 Ok\r\n" * 2 + b"452 4.5.3 Too many recipients\r\n" * 2
    )
    assert len(driver.of_type(RcptTo)) == 2
    assert driver.conn.recipients_accepted == 2
    assert driver.conn.bad_commands == 0  # a normal part of big deliveries


def test_unknown_and_unimplemented_commands() -> None:
    driver = Driver()
    events = driver.send(b"FOO bar\r\nEXPN staff\r\n")
    assert (
        driver.output()
        == b"500 5.5.1 Command unrecognized\r\n502 5.5.1 Command not implemented\r\n"
    )
    assert [e.reason for e in events if isinstance(e, CommandRejected)] == [
        "unknown command",
        "EXPN not implemented",
    ]


@pytest.mark.parametrize(
    "line",
    [b"EHLO\r\n", b"HELO two words\r\n", b"QUIT now\r\n", b"RSET x\r\n", b"VRFY\r\n"],
)
def test_bad_arguments_get_501(line: bytes) -> None:
    driver = Driver()
    events = driver.send(line)
    assert driver.output().startswith(b"501 5.5.4 Syntax: ")
    assert isinstance(events[0], CommandRejected)


def test_noop_vrfy_help_are_answered_by_the_application() -> None:
    driver = Driver()
    driver.send(b"NOOP anything\r\nVRFY bob\r\nHELP\r\nHELP DATA\r\n")
    assert driver.events == [Noop(), Verify("bob"), HelpRequested(""), HelpRequested("DATA")]
    assert driver.output() == (
        b"250 2.0.0 Ok\r\n252 2.0.0 Cannot VRFY user\r\n"
        b"214 2.0.0 See RFC 5321\r\n214 2.0.0 See RFC 5321\r\n"
    )


def test_overlong_command_line_is_rejected_and_its_tail_never_runs() -> None:
    driver = Driver()
    # The tail after the limit looks like a command; it must not become one.
    driver.send(b"NOOP " + b"x" * 20_000 + b"QUIT\r\nNOOP\r\n", chunk=1000)
    assert driver.output() == b"500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n"
    assert [type(e) for e in driver.events] == [CommandRejected, Noop]


def test_command_over_512_octets_is_too_long() -> None:
    driver = Driver()
    driver.send(b"HELO " + b"a" * 600 + b"\r\n")
    assert driver.output() == b"500 5.5.2 Line too long\r\n"


def test_mail_gets_the_rfc_3461_allowance() -> None:
    driver = greeted()
    envid = b"E" * 100
    auth = b"AUTH=" + b"u" * 150
    path = b"<" + b"a" * 240 + b"@example.org>"
    line = b"MAIL FROM:" + path + b" ENVID=" + envid + b" " + auth + b" RET=HDRS SIZE=10\r\n"
    assert len(line) > 512
    driver.send(line)
    assert isinstance(driver.events[-1], MailFrom)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"NOOP\n", "command line ends with bare LF"),
        (b"NO\rOP\r\n", "bare CR in command line"),
        (b"NOOP \x00\r\n", "NUL in command line"),
        (b"NOOP \xff\xfe\r\n", "invalid UTF-8 in command"),
    ],
)
def test_malformed_command_lines(line: bytes, reason: str) -> None:
    driver = Driver()
    events = driver.send(line)
    assert len(events) == 1
    assert isinstance(events[0], CommandRejected)
    assert events[0].reason == reason
    assert driver.output().startswith(b"500 5.5.2 ")


def test_bare_lf_line_is_not_executed_even_when_it_looks_valid() -> None:
    driver = greeted()
    driver.send(b"MAIL FROM:<a@b.example>\nRCPT TO:<c@d.example>\r\n")
    assert not driver.of_type(MailFrom)
    assert driver.conn.state is SmtpState.GREETED


def test_too_many_bad_commands_close_with_421() -> None:
    driver = Driver(limits=SmtpLimits(max_bad_commands=3))
    events = driver.send(b"BAD\r\n" * 10)
    assert driver.output() == b"500 5.5.1 Command unrecognized\r\n" * 3 + (
        b"421 4.7.0 Too many errors, closing connection\r\n"
    )
    assert isinstance(events[-1], ConnectionMustClose)
    assert events[-1].reply.code == 421
    assert len(events) == 4
    assert driver.conn.state is SmtpState.CLOSED
    assert driver.conn.next_event() == ConnectionClosed()


def test_quit_closes_and_later_bytes_are_ignored() -> None:
    driver = Driver()
    driver.send(b"QUIT\r\nNOOP\r\n")
    assert driver.events == [Quit(), ConnectionClosed()]
    assert driver.output() == b"221 2.0.0 Bye\r\n"
    driver.conn.receive_data(b"NOOP\r\n")
    assert driver.conn.next_event() == ConnectionClosed()


def test_eof_ends_the_session_after_buffered_commands() -> None:
    driver = Driver()
    driver.conn.receive_data(b"NOOP\r\nNOO")
    driver.conn.receive_data(b"")
    driver.pump()
    assert driver.events == [Noop(), ConnectionClosed()]
    with pytest.raises(LocalProtocolError):
        driver.conn.receive_data(b"more")


def test_eof_inside_data_loses_the_message() -> None:
    driver = in_transaction()
    driver.send(b"DATA\r\nSubject: half\r\n")
    driver.conn.receive_data(b"")
    assert driver.pump() == [ConnectionClosed()]
    assert not driver.of_type(MessageReceived)


def test_helo_session_has_no_esmtp_parameters() -> None:
    driver = Driver()
    driver.send(b"HELO old.example\r\nMAIL FROM:<a@b.example> SIZE=100\r\n")
    assert driver.output() == (
        b"250 mx.example.test\r\n555 5.5.4 Parameters are not allowed after HELO; use EHLO\r\n"
    )
    driver.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example> NOTIFY=NEVER\r\n")
    assert driver.output() == (
        b"250 2.1.0 Ok\r\n555 5.5.4 Parameters are not allowed after HELO; use EHLO\r\n"
    )
    assert driver.conn.extended is False


def test_rejected_ehlo_keeps_the_state() -> None:
    driver = Driver(answers={})
    driver.answers[Reset] = Reply(250, "2.0.0", "Ok")
    conn = driver.conn
    conn.receive_data(b"EHLO bad\r\n")
    assert conn.next_event() == Hello("bad", extended=True)
    conn.respond(Reply(550, "5.7.1", "No"))
    assert conn.state is SmtpState.CONNECTED
    assert conn.extended is False


def test_data_answered_with_a_2xx_is_a_local_error() -> None:
    driver = in_transaction()
    driver.conn.receive_data(b"DATA\r\n")
    assert driver.conn.next_event() == DataRequested()
    with pytest.raises(LocalProtocolError):
        driver.conn.respond(Reply(250, "2.0.0", "Ok"))
