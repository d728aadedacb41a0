"""BDAT (RFC 3030 CHUNKING): counted chunks, consumed even when refused."""

from __future__ import annotations

import pytest

from postgate.smtp import (
    CommandRejected,
    ConnectionMustClose,
    MailFrom,
    MessageReceived,
    Noop,
    Reply,
    SmtpLimits,
    SmtpState,
)
from tests.smtp.helpers import Driver, greeted, in_transaction

QUEUED = b"250 2.0.0 Ok: queued as Q1\r\n"


def test_two_chunks_make_one_message() -> None:
    driver = in_transaction()
    first, second = b"Subject: x\r\n", b"\r\nbody"
    events = driver.send(b"BDAT 12\r\n" + first + b"BDAT 6 LAST\r\n" + second)
    assert events == [MessageReceived(first + second, via_bdat=True)]
    assert driver.output() == b"250 2.0.0 12 octets received\r\n" + QUEUED
    assert driver.conn.state is SmtpState.GREETED


@pytest.mark.parametrize("chunk", [1, 2, 5, 13])
def test_chunks_across_receive_boundaries(chunk: int) -> None:
    driver = in_transaction()
    body = b"line one\r\n.\r\nline .two\r\n"  # never dot-processed
    wire = b"BDAT 10\r\n" + body[:10] + b"BDAT %d LAST\r\n" % (len(body) - 10) + body[10:]
    driver.send(wire + b"NOOP\r\n", chunk=chunk)
    assert driver.of_type(MessageReceived) == [MessageReceived(body, via_bdat=True)]
    assert driver.of_type(Noop) == [Noop()]


def test_bdat_zero_last_ends_the_message() -> None:
    driver = in_transaction()
    events = driver.send(b"BDAT 7\r\nhello\r\nBDAT 0 LAST\r\n")
    assert events == [MessageReceived(b"hello\r\n", via_bdat=True)]
    assert driver.output() == b"250 2.0.0 7 octets received\r\n" + QUEUED


def test_empty_message_with_bdat_0_last() -> None:
    driver = in_transaction()
    assert driver.send(b"BDAT 0 LAST\r\n") == [MessageReceived(b"", via_bdat=True)]


def test_refused_bdat_chunk_is_consumed_not_executed() -> None:
    driver = greeted()
    forged = b"MAIL FROM:<ceo@bank.example>\r\n"
    events = driver.send(b"BDAT %d LAST\r\n" % len(forged) + forged + b"NOOP\r\n")
    assert [type(e) for e in events] == [CommandRejected, Noop]
    assert driver.output() == b"503 5.5.1 Need MAIL command\r\n250 2.0.0 Ok\r\n"
    assert not driver.of_type(MailFrom)


def test_refused_bdat_chunk_across_writes_is_consumed() -> None:
    driver = greeted()
    forged = b"MAIL FROM:<ceo@bank.example>\r\n"
    driver.send(b"BDAT %d\r\n" % len(forged) + forged + b"NOOP\r\n", chunk=3)
    assert not driver.of_type(MailFrom)
    assert driver.of_type(Noop) == [Noop()]


def test_bdat_after_helo_is_refused_and_chunk_consumed() -> None:
    driver = Driver()
    driver.send(b"HELO old.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    driver.output()
    events = driver.send(b"BDAT 6 LAST\r\nNOOP\r\n")
    assert [type(e) for e in events] == [CommandRejected]
    assert driver.output().startswith(b"503 5.5.1 Send EHLO first")


def test_data_after_bdat_in_the_same_transaction_is_refused() -> None:
    driver = in_transaction()
    driver.send(b"BDAT 3\r\nabcDATA\r\n")
    assert driver.output() == (
        b"250 2.0.0 3 octets received\r\n503 5.5.1 DATA not allowed after BDAT\r\n"
    )
    assert driver.conn.state is SmtpState.BDAT


def test_bdat_after_a_data_transaction_is_fine() -> None:
    driver = in_transaction()
    driver.send(b"DATA\r\none\r\n.\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    driver.send(b"BDAT 3 LAST\r\ntwo")
    assert [m.via_bdat for m in driver.of_type(MessageReceived)] == [False, True]


def test_rset_abandons_a_chunked_message() -> None:
    driver = in_transaction()
    driver.send(b"BDAT 3\r\nabcRSET\r\nBDAT 3 LAST\r\nxyz")
    assert driver.output() == (
        b"250 2.0.0 3 octets received\r\n250 2.0.0 Ok\r\n503 5.5.1 Need MAIL command\r\n"
    )
    assert not driver.of_type(MessageReceived)


def test_chunk_that_would_pass_the_size_limit_is_refused_at_once() -> None:
    # Announced beyond the limit: 552 right away and close, instead of swallowing the
    # chunk first (RFC 3030 2 would read it; for gigabytes that is a denial of service,
    # and after an unread chunk no byte can be trusted to be a command).
    driver = in_transaction(limits=SmtpLimits(max_message_size=100))
    events = driver.send(b"BDAT 60\r\n" + b"a" * 60 + b"BDAT 60 LAST\r\n" + b"b" * 60 + b"NOOP\r\n")
    assert [type(e) for e in events] == [ConnectionMustClose]
    assert driver.output() == (
        b"250 2.0.0 60 octets received\r\n"
        b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    )
    assert driver.conn.state is SmtpState.CLOSED


def test_absurd_chunk_size_is_refused_before_any_data() -> None:
    driver = in_transaction(limits=SmtpLimits(max_message_size=1000))
    events = driver.send(b"BDAT 999999999999 LAST\r\n")
    assert [type(e) for e in events] == [ConnectionMustClose]
    assert events[0].reply.code == 552
    assert len(driver.conn._buffer) == 0


@pytest.mark.parametrize(
    "body", [b"a\nb", b"a\rb", b"a\x00b", b"ab\r"], ids=["bare LF", "bare CR", "NUL", "CR at end"]
)
def test_bdat_refuses_bare_line_endings_and_nul(body: bytes) -> None:
    driver = in_transaction()
    events = driver.send(b"BDAT %d LAST\r\n" % len(body) + body)
    assert isinstance(events[0], CommandRejected)
    assert events[0].reply.code == 554


def test_crlf_split_between_chunks_is_fine() -> None:
    driver = in_transaction()
    events = driver.send(b"BDAT 2\r\na\rBDAT 1 LAST\r\n\n")
    assert events == [MessageReceived(b"a\r\n", via_bdat=True)]


@pytest.mark.parametrize("argument", [b"", b" x", b" 10 MORE", b" -1", b" 1 LAST x"])
def test_bdat_syntax_error_closes_the_connection(argument: bytes) -> None:
    driver = in_transaction()
    events = driver.send(b"BDAT" + argument + b"\r\nNOOP\r\n")
    assert [type(e) for e in events] == [ConnectionMustClose]
    assert driver.output().startswith(b"501 5.5.4 Syntax: BDAT size [LAST]")
    assert driver.conn.state is SmtpState.CLOSED


def test_application_refusal_of_a_chunked_message() -> None:
    driver = in_transaction(answers={MessageReceived: Reply(550, "5.7.1", "Spam")})
    driver.send(b"BDAT 2 LAST\r\nhi")
    assert driver.output() == b"550 5.7.1 Spam\r\n"
    assert driver.conn.state is SmtpState.GREETED
