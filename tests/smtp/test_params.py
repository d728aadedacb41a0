"""MAIL and RCPT arguments: paths, SMTPUTF8, DSN parameters, xtext."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postgate.queue.model import BodyType, DsnNotify, DsnRet
from postgate.smtp import CommandRejected, MailFrom, RcptTo, xtext_decode, xtext_encode
from tests.smtp.helpers import greeted

N = DsnNotify


def mail(arguments: bytes) -> tuple[list, bytes]:
    driver = greeted()
    events = driver.send(b"MAIL FROM:" + arguments + b"\r\n")
    return events, driver.output()


def rcpt(arguments: bytes, mail_arguments: bytes = b"<a@b.example>") -> tuple[list, bytes]:
    driver = greeted()
    driver.send(b"MAIL FROM:" + mail_arguments + b"\r\n")
    driver.output()
    events = driver.send(b"RCPT TO:" + arguments + b"\r\n")
    return events, driver.output()


@pytest.mark.parametrize(
    ("path", "address"),
    [
        (b"<>", ""),
        (b"<user@example.org>", "user@example.org"),
        (b"<first.last+tag@sub.example.org>", "first.last+tag@sub.example.org"),
        (b'<"quoted > and space"@example.org>', '"quoted > and space"@example.org'),
        (b'<"esc\\"aped"@example.org>', '"esc\\"aped"@example.org'),
        (b"<user@[192.0.2.1]>", "user@[192.0.2.1]"),
        (b"<user@[IPv6:2001:db8::1]>", "user@[IPv6:2001:db8::1]"),
        (b"<@relay.example,@[192.0.2.1]:user@example.org>", "user@example.org"),
        (b"<@relay.example:user@example.org>", "user@example.org"),
    ],
)
def test_valid_sender_paths(path: bytes, address: str) -> None:
    events, output = mail(path)
    assert events == [MailFrom(address)]
    assert output == b"250 2.1.0 Ok\r\n"


@pytest.mark.parametrize(
    "path",
    [
        b"user@example.org",
        b"<user@example.org",
        b"<user>",
        b"<user@>",
        b"<@example.org>",
        b"<us er@example.org>",
        b"<user@exa_mple.org>",
        b"<user@example.org.>",
        b"<user@-example.org>",
        b"<a..b@example.org>",
        b"<user@[300.1.1.1]>",
        b"<user@[IPv6:zz::1]>",
        b"<@relay:user@example.org>x",
        b"<@bad..relay:user@example.org>",
        b"<" + b"a" * 250 + b"@example.org>",
    ],
)
def test_invalid_sender_paths(path: bytes) -> None:
    events, output = mail(path)
    assert len(events) == 1
    assert isinstance(events[0], CommandRejected)
    assert output.startswith(b"501 ")


def test_postmaster_without_domain_is_a_valid_recipient() -> None:
    events, _ = rcpt(b"<Postmaster>")
    assert events == [RcptTo("Postmaster")]


def test_null_recipient_is_refused() -> None:
    _, output = rcpt(b"<>")
    assert output == b"501 5.1.3 Empty address not allowed here\r\n"


def test_smtputf8_sender_needs_the_parameter() -> None:
    address = "用户@例子.广告".encode()
    events, output = mail(b"<" + address + b">")
    assert isinstance(events[0], CommandRejected)
    assert output == (b"553 5.6.7 Non-ASCII addresses require the SMTPUTF8 parameter on MAIL\r\n")
    events, output = mail(b"<" + address + b"> SMTPUTF8")
    assert events == [MailFrom("用户@例子.广告", smtputf8=True)]


def test_smtputf8_recipient_needs_the_parameter_on_mail() -> None:
    address = "josé@exämple.org".encode()
    events, output = rcpt(b"<" + address + b">")
    assert output.startswith(b"553 5.6.7 ")
    events, output = rcpt(b"<" + address + b">", mail_arguments=b"<a@b.example> SMTPUTF8")
    assert events == [RcptTo("josé@exämple.org")]


def test_all_mail_parameters() -> None:
    events, _ = mail(b"<a@b.example> size=1234 BODY=8bitmime SMTPUTF8 RET=hdrs ENVID=QQ+2B1")
    assert events == [
        MailFrom(
            "a@b.example",
            size=1234,
            body=BodyType.EIGHT_BIT_MIME,
            smtputf8=True,
            ret=DsnRet.HDRS,
            envid="QQ+1",
        )
    ]


def test_auth_parameter_on_mail_is_accepted_and_ignored() -> None:
    events, _ = mail(b"<a@b.example> AUTH=<>")
    assert events == [MailFrom("a@b.example")]


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        (b" FOO=bar", b"555 5.5.4 Unsupported parameter FOO\r\n"),
        (b" NOTIFY=NEVER", b"555 5.5.4 Unsupported parameter NOTIFY\r\n"),
        (b" SIZE=abc", b"501 5.5.4 SIZE must be a number\r\n"),
        (b" SIZE", b"501 5.5.4 SIZE needs a value\r\n"),
        (b" BODY=BINARYMIME", b"501 5.5.4 BODY must be 7BIT or 8BITMIME\r\n"),
        (b" SMTPUTF8=yes", b"501 5.5.4 SMTPUTF8 takes no value\r\n"),
        (b" RET=ALL", b"501 5.5.4 RET must be FULL or HDRS\r\n"),
        (b" ENVID=" + b"x" * 101, b"501 5.5.4 ENVID longer than 100 characters\r\n"),
        (b" ENVID=a+zz", b"501 5.5.4 ENVID: malformed xtext\r\n"),
        (b" RET=FULL RET=HDRS", b"501 5.5.4 Duplicate parameter RET\r\n"),
        (b" =x", b"501 5.5.4 Bad parameter syntax: =x\r\n"),
    ],
)
def test_bad_mail_parameters(parameters: bytes, expected: bytes) -> None:
    events, output = mail(b"<a@b.example>" + parameters)
    assert isinstance(events[0], CommandRejected)
    assert output == expected


@pytest.mark.parametrize(
    ("parameters", "notify", "orcpt"),
    [
        (b"NOTIFY=NEVER", frozenset({N.NEVER}), None),
        (b"NOTIFY=success", frozenset({N.SUCCESS}), None),
        (b"NOTIFY=SUCCESS,FAILURE,DELAY", frozenset({N.SUCCESS, N.FAILURE, N.DELAY}), None),
        (b"ORCPT=rfc822;bob+40example.test", None, ("rfc822", "bob@example.test")),
        (
            b"NOTIFY=DELAY ORCPT=RFC822;b+2Bx@y.example",
            frozenset({N.DELAY}),
            ("rfc822", "b+x@y.example"),
        ),
    ],
)
def test_dsn_recipient_parameters(
    parameters: bytes, notify: frozenset[DsnNotify] | None, orcpt: tuple[str, str] | None
) -> None:
    events, _ = rcpt(b"<bob@example.test> " + parameters)
    assert events == [RcptTo("bob@example.test", notify=notify, orcpt=orcpt)]


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        (b"NOTIFY=NEVER,SUCCESS", b"501 5.5.4 NOTIFY=NEVER cannot be combined with other values"),
        (b"NOTIFY=SUCCESS,SUCCESS", b"501 5.5.4 NOTIFY lists a value twice"),
        (b"NOTIFY=SOMETIMES", b"501 5.5.4 NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY"),
        (b"NOTIFY=", b"501 5.5.4 Bad parameter syntax: NOTIFY="),
        (b"ORCPT=bob@example.test", b"501 5.5.4 Syntax: ORCPT=addr-type;address"),
        (b"ORCPT=rfc822;", b"501 5.5.4 Syntax: ORCPT=addr-type;address"),
        (b"ORCPT=rfc822;a+4", b"501 5.5.4 ORCPT: malformed xtext"),
        (b"ORCPT=rfc822;" + b"a" * 500, b"501 5.5.4 ORCPT longer than 500 characters"),
        (b"SIZE=10", b"555 5.5.4 Unsupported parameter SIZE"),
    ],
)
def test_bad_recipient_parameters(parameters: bytes, expected: bytes) -> None:
    events, output = rcpt(b"<bob@example.test> " + parameters)
    assert isinstance(events[0], CommandRejected)
    assert output == expected + b"\r\n"


def test_xtext_encoding_of_specials() -> None:
    assert xtext_encode("a+b=c d\u00e9") == "a+2Bb+3Dc+20d+C3+A9"
    assert xtext_decode("a+2Bb+3dc") == "a+b=c"


@pytest.mark.parametrize("text", ["a+", "a+4", "a+GG", "a=b", "a b", "é", "+FF"])
def test_malformed_xtext(text: str) -> None:
    with pytest.raises(ValueError):
        xtext_decode(text)


@given(st.text())
def test_xtext_round_trip(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return  # lone surrogates cannot be sent at all
    encoded = xtext_encode(text)
    assert encoded.isascii()
    assert all(33 <= ord(c) <= 126 and c != "=" for c in encoded)
    assert xtext_decode(encoded) == text
