"""End to end: real clients submit to a real postgate process; mail lands in Maildirs."""

from __future__ import annotations

import re
import smtplib
import ssl
import subprocess

import pytest

from tests.conftest import ALICE, BOB, require_tool
from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow

QUEUED = re.compile(rb"2\.0\.0 Ok: queued as ([0-9A-Z]+)")


def client_context() -> ssl.SSLContext:
    # The test server's certificate is self-signed: the point here is the SMTP side.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def raw_message(subject: str, body: str = "Hello there.\r\n") -> bytes:
    return (
        f"From: Alice <{ALICE[0]}>\r\nTo: Bob <{BOB[0]}>\r\nSubject: {subject}\r\n"
        f"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@example.test>\r\n"
        f"\r\n{body}"
    ).encode()


def as_stored(message: bytes) -> bytes:
    """Maildir files use Unix line ends, as Postfix's local(8) and Dovecot write them."""
    return message.replace(b"\r\n", b"\n")


def split_delivered(path_bytes: bytes) -> tuple[list[bytes], bytes]:
    """Our delivery headers (Return-Path, Delivered-To, Received) and the rest."""
    assert b"\r\n" not in path_bytes
    lines = path_bytes.split(b"\n")
    assert lines[0].startswith(b"Return-Path: <")
    assert lines[1].startswith(b"Delivered-To: ")
    assert lines[2].startswith(b"Received: from ")
    index = 3
    while lines[index].startswith(b"\t"):
        index += 1
    return lines[:index], b"\n".join(lines[index:])


def queue_id_of(reply: bytes) -> str:
    match = QUEUED.search(reply)
    assert match, reply
    return match.group(1).decode()


def assert_delivered_exactly(server: ServerProcess, address: str, original: bytes) -> bytes:
    files = server.wait_for_delivery(address)
    assert len(files) == 1
    content = files[0].read_bytes()
    ours, rest = split_delivered(content)
    assert rest == as_stored(original)
    assert ours[1] == f"Delivered-To: {address}".encode()
    return content


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_smtplib_submission_starttls_auth(server: ServerProcess, mechanism: str) -> None:
    original = raw_message(f"sub-{mechanism}")
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as client:
        client.ehlo("client.example")
        assert client.has_extn("starttls")
        assert not client.has_extn("auth"), "AUTH must not be offered before TLS"
        client.starttls(context=client_context())
        client.ehlo("client.example")
        assert mechanism.lower() in client.esmtp_features["auth"].lower()
        client.user, client.password = ALICE
        code, _ = client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
        assert code == 235
        client.mail(ALICE[0])
        client.rcpt(BOB[0])
        code, reply = client.data(original)
    assert code == 250
    queue_id = queue_id_of(reply)
    content = assert_delivered_exactly(server, BOB[0], original)
    assert f"with ESMTPSA id {queue_id}".encode() in content
    assert b"Return-Path: <alice@example.test>" in content
    record = server.wait_for_log(event="delivery", queue_id=queue_id)
    assert (record["status"], record["to"], record["relay"]) == ("delivered", BOB[0], "maildir")
    rows = server.status_rows(queue_id)
    assert [row["status"] for row in rows] == ["delivered"]
    assert rows[0]["address"] == BOB[0]


def test_smtplib_implicit_tls_465(server: ServerProcess) -> None:
    original = raw_message("implicit-tls")
    with smtplib.SMTP_SSL(
        "127.0.0.1", server.ports["submissions"], context=client_context(), timeout=10
    ) as client:
        client.ehlo("client.example")
        assert not client.has_extn("starttls")
        client.login(*ALICE)
        errors = client.sendmail(ALICE[0], [BOB[0]], original)
    assert errors == {}
    assert_delivered_exactly(server, BOB[0], original)


def test_submission_adds_message_id_and_date_when_missing(server: ServerProcess) -> None:
    bare = f"From: {ALICE[0]}\r\nTo: {BOB[0]}\r\nSubject: bare\r\n\r\nbody\r\n".encode()
    with smtplib.SMTP_SSL(
        "127.0.0.1", server.ports["submissions"], context=client_context(), timeout=10
    ) as client:
        client.login(*ALICE)
        client.sendmail(ALICE[0], [BOB[0]], bare)
    content = server.wait_for_delivery(BOB[0])[0].read_bytes()
    assert re.search(rb"\nMessage-ID: <[0-9A-Z]+\.[0-9a-f]+@mx\.example\.test>\n", content)
    assert re.search(rb"\nDate: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} ", content)
    assert content.endswith(b"\n\nbody\n")


def test_mx_port_accepts_local_mail_without_auth(server: ServerProcess) -> None:
    original = raw_message("mx-inbound")
    with smtplib.SMTP("127.0.0.1", server.ports["mx"], timeout=10) as client:
        client.ehlo("sender.example.org")
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        for keyword in (
            "pipelining",
            "size",
            "8bitmime",
            "smtputf8",
            "enhancedstatuscodes",
            "chunking",
            "dsn",
        ):
            assert client.has_extn(keyword), keyword
        client.sendmail("someone@example.org", [BOB[0]], original)
    content = assert_delivered_exactly(server, BOB[0], original)
    assert b"with ESMTP id" in content
    assert b"Return-Path: <someone@example.org>" in content


def test_relay_denied_and_unknown_user(server: ServerProcess) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["mx"], timeout=10) as client:
        client.ehlo("sender.example.org")
        client.mail("someone@example.org")
        code, text = client.rcpt("victim@elsewhere.example")
        assert (code, text[:5]) == (554, b"5.7.1")
        code, text = client.rcpt("nobody@example.test")
        assert (code, text[:5]) == (550, b"5.1.1")
        code, text = client.rcpt("Postmaster@example.test")
        assert code == 250, text
    rejected = server.wait_for_log(event="rejected", recipient="victim@elsewhere.example")
    assert rejected["reply"] == "554 5.7.1"
    assert "relay" in str(rejected["reason"])
    server.wait_for_log(event="rejected", recipient="nobody@example.test", reply="550 5.1.1")


def test_submission_requires_tls_then_auth(server: ServerProcess) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as client:
        client.ehlo("client.example")
        code, text = client.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1zZWNyZXQtcHc=")
        assert code == 538 and text.startswith(b"5.7.11"), (code, text)
        code, text = client.docmd("MAIL", f"FROM:<{ALICE[0]}>")
        assert code == 530 and text.startswith(b"5.7.0"), (code, text)
        client.starttls(context=client_context())
        client.ehlo("client.example")
        code, text = client.docmd("MAIL", f"FROM:<{ALICE[0]}>")
        assert code == 530 and text.startswith(b"5.7.0"), (code, text)
    assert not server.delivered_files(BOB[0])


def test_wrong_password_is_refused(server: ServerProcess) -> None:
    with smtplib.SMTP_SSL(
        "127.0.0.1", server.ports["submissions"], context=client_context(), timeout=10
    ) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
            client.login(ALICE[0], "wrong")
        assert failure.value.smtp_code == 535
    server.wait_for_log(event="rejected", stage="auth", user=ALICE[0])


def test_swaks_submission_and_implicit_tls(server: ServerProcess) -> None:
    swaks = require_tool("swaks", "swaks")
    for port_name, tls_flag in (("submission", "--tls"), ("submissions", "--tlsc")):
        result = subprocess.run(
            [
                swaks,
                "--server",
                f"127.0.0.1:{server.ports[port_name]}",
                tls_flag,
                "--auth",
                "PLAIN",
                "--auth-user",
                ALICE[0],
                "--auth-password",
                ALICE[1],
                "--from",
                ALICE[0],
                "--to",
                BOB[0],
                "--helo",
                "swaks.example",
                "--header",
                f"Subject: via swaks {port_name}",
                "--body",
                "swaks body",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
        assert b"250 2.0.0 Ok: queued as" in result.stdout
    files = server.wait_for_delivery(BOB[0], count=2)
    subjects = sorted(
        line for f in files for line in f.read_bytes().split(b"\n") if line.startswith(b"Subject: ")
    )
    assert subjects == [b"Subject: via swaks submission", b"Subject: via swaks submissions"]


def test_forged_return_path_is_replaced_by_the_envelope_one(server: ServerProcess) -> None:
    forged = b"Return-Path: <forged@evil.example>\r\nSubject: rp\r\n\r\nbody\r\n"
    with smtplib.SMTP("127.0.0.1", server.ports["mx"], timeout=10) as client:
        client.sendmail("real@sender.example", [BOB[0]], forged)
    content = server.wait_for_delivery(BOB[0])[0].read_bytes()
    assert content.count(b"Return-Path:") == 1
    assert content.startswith(b"Return-Path: <real@sender.example>\n")
    assert b"forged@evil.example" not in content


FOLDED_FIRST = (
    b"\tdkim=pass header.d=bank.example header.s=sel;\r\n"
    b"\tdmarc=pass header.from=bank.example\r\n"
    b"From: alice@example.test\r\nSubject: x\r\n\r\nbody\r\n"
)


def header_of(content: bytes) -> bytes:
    return content.split(b"\n\n", 1)[0]


def test_a_folded_first_line_cannot_extend_our_headers(server: ServerProcess) -> None:
    # RFC 5322: data not starting with a field has an empty header. Had the leading
    # whitespace line been kept in the header, it would continue the field we prepend.
    with smtplib.SMTP("127.0.0.1", server.ports["mx"], timeout=10) as client:
        client.sendmail("x@example.net", [BOB[0]], FOLDED_FIRST)
    content = server.wait_for_delivery(BOB[0])[0].read_bytes()
    assert b"bank.example" not in header_of(content)
    assert b"\n\n\tdkim=pass header.d=bank.example" in content


def test_a_folded_first_line_on_submission_is_accepted_not_a_crash(
    server: ServerProcess,
) -> None:
    with smtplib.SMTP_SSL(
        "127.0.0.1", server.ports["submissions"], context=client_context(), timeout=10
    ) as client:
        client.login(*ALICE)
        errors = client.sendmail(ALICE[0], [BOB[0]], FOLDED_FIRST)
    assert errors == {}
    content = server.wait_for_delivery(BOB[0])[0].read_bytes()
    assert b"bank.example" not in header_of(content)
    assert not [r for r in server.log_records() if r.get("event") == "session crashed"]
