"""STARTTLS (RFC 3207) and AUTH (RFC 4954) sequencing, and the listener's requirements."""

from __future__ import annotations

import pytest

from postgate.smtp import (
    NEED_DATA,
    AuthLine,
    AuthRequested,
    CommandRejected,
    ConnectionClosed,
    Hello,
    LocalProtocolError,
    MailFrom,
    Noop,
    Reply,
    SmtpLimits,
    SmtpState,
    StartTlsRequested,
)
from tests.smtp.helpers import EHLO_REPLY, Driver, greeted, in_transaction

READY = b"220 2.0.0 Ready to start TLS\r\n"
SUCCESS = Reply(235, "2.7.0", "Authentication successful")


def test_pipelined_plaintext_after_starttls_is_discarded() -> None:
    driver = greeted()
    # RFC 3207 4.2 / CVE-2011-0411: commands injected behind STARTTLS must not run.
    events = driver.send(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<x@y.example>\r\n")
    assert events == [StartTlsRequested()]
    assert driver.output() == READY
    assert driver.conn.state is SmtpState.TLS_PENDING
    driver.conn.receive_data(b"NOOP\r\n")  # plaintext before the handshake finished
    assert driver.conn.next_event() is NEED_DATA
    driver.conn.tls_started()
    assert driver.conn.state is SmtpState.CONNECTED
    assert driver.conn.tls_active
    assert driver.conn.extended is False
    assert driver.conn.helo_name is None
    events = driver.send(b"NOOP\r\nMAIL FROM:<a@b.example>\r\n")
    assert events[0] == Noop()
    assert isinstance(events[1], CommandRejected)  # EHLO again first: state was reset
    assert not driver.of_type(MailFrom)


def test_starttls_split_across_writes_with_trailing_bytes() -> None:
    driver = greeted()
    driver.send(b"STARTTLS\r\nMAIL FR", chunk=4)
    assert driver.of_type(StartTlsRequested) == [StartTlsRequested()]
    driver.conn.tls_started()
    driver.send(b"OM:<a@b.example>\r\n")
    assert not driver.of_type(MailFrom)


def test_starttls_refused_by_the_application_keeps_plaintext_session() -> None:
    driver = greeted(answers={StartTlsRequested: Reply(454, "4.7.0", "TLS not available")})
    driver.send(b"STARTTLS\r\nNOOP\r\n")
    assert driver.output() == b"454 4.7.0 TLS not available\r\n250 2.0.0 Ok\r\n"
    with pytest.raises(LocalProtocolError):
        driver.conn.tls_started()


def test_starttls_inside_tls_is_refused() -> None:
    driver = greeted(tls_active=True)
    driver.send(b"STARTTLS\r\n")
    assert driver.output() == b"503 5.5.1 TLS already active\r\n"


def test_starttls_inside_a_transaction_is_refused() -> None:
    driver = in_transaction()
    driver.send(b"STARTTLS\r\n")
    assert driver.output() == b"503 5.5.1 Not allowed during a mail transaction\r\n"


def test_starttls_after_helo_is_refused() -> None:
    driver = Driver()
    driver.send(b"HELO c\r\nSTARTTLS\r\n")
    assert driver.output().endswith(
        b"503 5.5.1 Send EHLO first (this command is an ESMTP extension)\r\n"
    )


def test_auth_plain_with_initial_response() -> None:
    driver = greeted(tls_active=True, require_tls_for_auth=True)
    driver.conn.receive_data(b"AUTH plain AGFsaWNlAHNlY3JldA==\r\n")
    event = driver.conn.next_event()
    assert event == AuthRequested("PLAIN", "AGFsaWNlAHNlY3JldA==")
    assert "AGFsaWNl" not in repr(event)  # secrets stay out of logs
    driver.conn.authenticated("alice")
    driver.conn.respond(SUCCESS)
    assert driver.conn.authenticated_user == "alice"
    assert driver.output() == b"235 2.7.0 Authentication successful\r\n"


def test_auth_exchange_with_challenges() -> None:
    driver = greeted(tls_active=True)
    conn = driver.conn
    conn.receive_data(b"AUTH LOGIN\r\n")
    assert conn.next_event() == AuthRequested("LOGIN", None)
    conn.respond(Reply(334, "", "VXNlcm5hbWU6"))
    conn.receive_data(b"YWxpY2U=\r\n")
    assert conn.next_event() == AuthLine("YWxpY2U=")
    conn.respond(Reply(334, "", "UGFzc3dvcmQ6"))
    conn.receive_data(b"c2VjcmV0\r\n")
    assert conn.next_event() == AuthLine("c2VjcmV0")
    conn.respond(SUCCESS)
    conn.authenticated("alice")  # naming the user right after 235 works too
    assert conn.authenticated_user == "alice"
    assert conn.state is SmtpState.GREETED
    assert conn.take_output() == (
        b"334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication successful\r\n"
    )


def test_auth_cancel_line_is_passed_to_the_application() -> None:
    driver = greeted(answers={AuthLine: Reply(501, "5.0.0", "Authentication cancelled")})
    driver.send(b"AUTH LOGIN\r\n*\r\nNOOP\r\n")
    assert driver.of_type(AuthLine) == [AuthLine("*")]
    assert driver.output() == b"334 \r\n501 5.0.0 Authentication cancelled\r\n250 2.0.0 Ok\r\n"
    assert not driver.conn.is_authenticated


def test_failed_auth_forgets_a_recorded_user() -> None:
    driver = greeted()
    conn = driver.conn
    conn.receive_data(b"AUTH PLAIN =\r\n")
    assert conn.next_event() == AuthRequested("PLAIN", "=")
    conn.authenticated("mallory")
    conn.respond(Reply(535, "5.7.8", "Authentication credentials invalid"))
    assert conn.authenticated_user is None
    assert not conn.is_authenticated


def test_authenticated_outside_an_exchange_is_a_local_error() -> None:
    driver = greeted()
    with pytest.raises(LocalProtocolError):
        driver.conn.authenticated("alice")


def test_auth_twice_is_refused() -> None:
    driver = greeted()
    driver.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    driver.answers[AuthRequested] = SUCCESS
    driver.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    driver.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    assert driver.output().endswith(b"503 5.5.1 Already authenticated\r\n")


def test_auth_inside_a_transaction_is_refused() -> None:
    driver = in_transaction()
    driver.send(b"AUTH PLAIN\r\n")
    assert driver.output() == b"503 5.5.1 Not allowed during a mail transaction\r\n"


def test_auth_without_tls_when_tls_is_required() -> None:
    driver = greeted(require_tls_for_auth=True)
    events = driver.send(b"AUTH PLAIN\r\n")
    assert driver.output() == b"538 5.7.11 Encryption required for requested authentication\r\n"
    assert not driver.of_type(AuthRequested)
    assert isinstance(events[0], CommandRejected)


def test_auth_without_tls_allowed_when_not_required() -> None:
    driver = greeted(require_tls_for_auth=False)
    assert driver.send(b"AUTH PLAIN\r\n") == [AuthRequested("PLAIN", None)]


@pytest.mark.parametrize("argument", [b"", b" PL@IN", b" PLAIN a b", b" PLAIN not*base64"])
def test_auth_syntax(argument: bytes) -> None:
    driver = greeted()
    events = driver.send(b"AUTH" + argument + b"\r\n")
    assert isinstance(events[0], CommandRejected)
    assert driver.output().startswith(b"501 5.5.4 ")


def test_long_initial_response_is_allowed_up_to_12288_octets() -> None:
    driver = greeted()
    response = b"A" * 12_000
    assert driver.send(b"AUTH PLAIN " + response + b"\r\n") == [
        AuthRequested("PLAIN", response.decode())
    ]


def test_overlong_auth_response_aborts_the_exchange() -> None:
    driver = greeted()
    driver.send(b"AUTH LOGIN\r\n")
    driver.output()
    events = driver.send(b"A" * 13_000 + b"\r\nNOOP\r\n", chunk=4096)
    assert isinstance(events[0], CommandRejected)
    assert events[1] == Noop()
    assert driver.output() == (
        b"500 5.5.6 Authentication exchange line is too long\r\n250 2.0.0 Ok\r\n"
    )
    assert driver.conn.state is SmtpState.GREETED


def test_malformed_auth_response_aborts_the_exchange() -> None:
    driver = greeted()
    driver.send(b"AUTH LOGIN\r\nabc\ndef\r\n")
    assert driver.conn.state is SmtpState.GREETED
    assert not driver.of_type(AuthLine)
    assert b"501 5.5.2 Malformed authentication response\r\n" in driver.output()


def test_mail_requires_auth_when_configured() -> None:
    driver = greeted(tls_active=True, require_auth_for_mail=True)
    driver.send(b"MAIL FROM:<a@b.example>\r\n")
    assert driver.output() == b"530 5.7.0 Authentication required\r\n"
    driver.answers[AuthRequested] = SUCCESS
    driver.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<a@b.example>\r\n")
    assert driver.output() == b"235 2.7.0 Authentication successful\r\n250 2.1.0 Ok\r\n"


def test_mail_without_tls_when_tls_and_auth_are_required() -> None:
    driver = greeted(require_tls_for_auth=True, require_auth_for_mail=True)
    driver.send(b"MAIL FROM:<a@b.example>\r\n")
    assert driver.output() == b"530 5.7.0 Must issue a STARTTLS command first\r\n"


def test_tls_started_forgets_authentication() -> None:
    driver = greeted()
    driver.answers[AuthRequested] = SUCCESS
    driver.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    assert driver.conn.is_authenticated
    driver.send(b"STARTTLS\r\n")
    driver.conn.tls_started()
    assert not driver.conn.is_authenticated
    assert driver.send(b"EHLO again\r\n") == [Hello("again", extended=True)]
    assert driver.output().endswith(EHLO_REPLY.to_bytes())


def test_bad_commands_are_counted_across_starttls() -> None:
    driver = greeted(limits=SmtpLimits(max_bad_commands=2))
    driver.send(b"BAD\r\nSTARTTLS\r\n")
    driver.conn.tls_started()
    driver.send(b"BAD\r\nBAD\r\n")
    assert driver.conn.state is SmtpState.CLOSED


def test_eof_while_waiting_for_the_handshake_closes() -> None:
    driver = greeted()
    driver.send(b"STARTTLS\r\n")
    driver.conn.receive_data(b"")
    assert driver.conn.next_event() == ConnectionClosed()
    assert driver.conn.state is SmtpState.CLOSED
