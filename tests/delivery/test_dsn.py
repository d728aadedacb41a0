"""delivery.dsn: RFC 3464 reports, parsed back with the stdlib email package."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage, Message

import pytest

from postgate.delivery.dsn import DsnRecipient, build_dsn, should_notify
from postgate.queue.model import BodyType, DsnNotify, DsnRet, Envelope, EnvelopeRecipient

ORIGINAL = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: lunch\r\n"
    b"Message-ID: <lunch.1@example.org>\r\n"
    b"\r\n"
    b"Shall we meet at noon?\r\n"
)
ARRIVAL = 1_700_000_000.0
NOW = 1_700_003_600.0


def envelope(**changes: object) -> Envelope:
    base: dict[str, object] = {
        "sender": "alice@example.org",
        "recipients": (EnvelopeRecipient("bob@example.net"),),
    }
    base.update(changes)
    return Envelope(**base)  # type: ignore[arg-type]


def failed(**changes: object) -> DsnRecipient:
    base: dict[str, object] = {
        "final_recipient": "bob@example.net",
        "original_recipient": None,
        "action": "failed",
        "status": "5.1.1",
        "remote_mta": "mx.example.net",
        "diagnostic_code": "smtp; 550 5.1.1 <bob@example.net>: no such user",
        "last_attempt_date": NOW - 60,
        "will_retry_until": None,
    }
    base.update(changes)
    return DsnRecipient(**base)  # type: ignore[arg-type]


def build(
    env: Envelope | None = None,
    recipients: list[DsnRecipient] | None = None,
    message: bytes = ORIGINAL,
    **kwargs: object,
) -> tuple[Envelope, bytes]:
    return build_dsn(
        reporting_mta="mail.ours.test",
        original_envelope=env or envelope(),
        original_message=message,
        recipients=recipients or [failed()],
        queue_id="4Fq2x9Kd",
        arrival_date=ARRIVAL,
        now=NOW,
        postmaster_address="postmaster@ours.test",
        **kwargs,  # type: ignore[arg-type]
    )


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def parts(report: EmailMessage) -> list[Message]:
    payload = report.get_payload()
    assert isinstance(payload, list)
    return payload


def status_blocks(report: EmailMessage) -> list[Message]:
    """message/delivery-status parses into one header block per RFC 3464 group."""
    blocks = parts(report)[1].get_payload()
    assert isinstance(blocks, list)
    return blocks


def assert_wire_format(raw: bytes) -> None:
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_failed_dsn_envelope_and_headers() -> None:
    dsn_envelope, raw = build()
    assert dsn_envelope.sender == ""  # RFC 3464 2: null reverse-path
    assert [r.address for r in dsn_envelope.recipients] == ["alice@example.org"]
    assert dsn_envelope.body_type is BodyType.SEVEN_BIT and not dsn_envelope.smtputf8
    assert dsn_envelope.received_at == NOW
    assert_wire_format(raw)
    report = parse(raw)
    assert report["From"] == "Mail Delivery System <MAILER-DAEMON@mail.ours.test>"
    assert report["To"] == "alice@example.org"
    assert report["Subject"] == "Undelivered Mail Returned to Sender"
    assert report["Auto-Submitted"] == "auto-replied"
    assert report["Date"].datetime.timestamp() == NOW
    assert (
        report["Message-ID"].startswith("<4Fq2x9Kd.") and "@mail.ours.test>" in report["Message-ID"]
    )
    assert report["In-Reply-To"] == "<lunch.1@example.org>"
    assert report["References"] == "<lunch.1@example.org>"
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert [p.get_content_type() for p in parts(report)] == [
        "text/plain",
        "message/delivery-status",
        "message/rfc822",
    ]


def test_delivery_status_fields() -> None:
    _, raw = build(
        envelope(envid="QQ314159"),
        [failed(original_recipient=("rfc822", "Bob@Example.NET"))],
    )
    per_message, per_recipient = status_blocks(parse(raw))
    assert per_message["Reporting-MTA"] == "dns; mail.ours.test"
    assert per_message["Original-Envelope-Id"] == "QQ314159"
    assert per_message["Arrival-Date"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    assert per_message["X-Postgate-Queue-ID"] == "4Fq2x9Kd"
    assert per_recipient["Original-Recipient"] == "rfc822; Bob@Example.NET"
    assert per_recipient["Final-Recipient"] == "rfc822; bob@example.net"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert per_recipient["Remote-MTA"] == "dns; mx.example.net"
    assert per_recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@example.net>: no such user"
    assert per_recipient["Last-Attempt-Date"] == "Tue, 14 Nov 2023 23:12:20 +0000"
    assert per_recipient["Will-Retry-Until"] is None


def test_without_envid_and_orcpt_those_fields_are_absent() -> None:
    per_message, per_recipient = status_blocks(parse(build()[1]))
    assert per_message["Original-Envelope-Id"] is None
    assert per_recipient["Original-Recipient"] is None


def test_envid_that_is_not_plain_text_is_xtext_encoded() -> None:
    per_message, _ = status_blocks(parse(build(envelope(envid="a b+c\r\nX"))[1]))
    assert per_message["Original-Envelope-Id"] == "a+20b+2Bc+0D+0AX"


def test_text_part_explains_and_quotes_remote_reply() -> None:
    _, raw = build(
        recipients=[failed(diagnostic_code="550-5.1.1 first line\r\n550 5.1.1 second line")]
    )
    text = parts(parse(raw))[0]
    assert text.get_content_charset() == "us-ascii"
    body = text.get_payload(decode=True)
    assert isinstance(body, bytes)
    words = " ".join(body.decode().split())
    assert "could not be delivered" in words
    assert "<bob@example.net>: delivery failed permanently" in words
    assert "mx.example.net said: 550-5.1.1 first line 550 5.1.1 second line" in words
    assert "postmaster@ours.test" in words and "4Fq2x9Kd" in words
    _, per_recipient = status_blocks(parse(raw))
    # A bare multi-line reply becomes one typed, unfolded field value.
    assert per_recipient["Diagnostic-Code"] == ("smtp; 550-5.1.1 first line 550 5.1.1 second line")


def test_long_diagnostic_is_folded() -> None:
    reply = "550 5.7.1 " + "policy " * 40
    _, raw = build(recipients=[failed(diagnostic_code=reply)])
    assert_wire_format(raw)
    field_lines = raw.split(b"Diagnostic-Code:")[1].split(b"\r\nLast-Attempt-Date")[0]
    assert all(len(line) <= 78 for line in field_lines.split(b"\r\n"))
    _, per_recipient = status_blocks(parse(raw))
    assert " ".join(per_recipient["Diagnostic-Code"].split()) == "smtp; " + reply.strip()


@pytest.mark.parametrize("ret", [None, DsnRet.FULL])
def test_full_message_returned_for_failure(ret: DsnRet | None) -> None:
    _, raw = build(envelope(ret=ret))
    returned = parts(parse(raw))[2]
    assert returned.get_content_type() == "message/rfc822"
    inner = returned.get_payload()[0]
    assert inner["Subject"] == "lunch"
    assert inner["Message-ID"] == "<lunch.1@example.org>"
    assert b"\r\n\r\n" + ORIGINAL + b"\r\n--" in raw  # returned byte for byte


def test_headers_only_with_ret_hdrs() -> None:
    _, raw = build(envelope(ret=DsnRet.HDRS))
    returned = parts(parse(raw))[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    headers = returned.get_payload(decode=True)
    assert isinstance(headers, bytes)
    assert headers == ORIGINAL.split(b"\r\n\r\n")[0] + b"\r\n"
    assert b"noon" not in raw


def test_large_message_returned_as_headers_with_note() -> None:
    _, raw = build(envelope(ret=DsnRet.FULL), return_size_limit=50)
    report = parse(raw)
    assert parts(report)[2].get_content_type() == "text/rfc822-headers"
    assert b"noon" not in raw
    assert b"over 50 octets" in raw


def test_eight_bit_message_returns_headers_quoted_printable() -> None:
    message = b"Subject: caf\xc3\xa9\r\nFrom: alice@example.org\r\n\r\nna\xc3\xafve\r\n"
    _, raw = build(message=message)
    assert_wire_format(raw)
    returned = parts(parse(raw))[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert returned["Content-Transfer-Encoding"] == "quoted-printable"
    assert returned.get_payload(decode=True) == message.split(b"\r\n\r\n")[0] + b"\r\n"
    assert b"8-bit data" in raw


def test_bare_lf_original_is_normalised_to_crlf() -> None:
    _, raw = build(message=ORIGINAL.replace(b"\r\n", b"\n"))
    assert_wire_format(raw)
    assert b"Subject: lunch\r\nMessage-ID" in raw


def test_delayed_dsn() -> None:
    delayed = failed(
        action="delayed",
        status="4.4.1",
        will_retry_until=NOW + 86400,
        diagnostic_code="smtp; 451 4.4.1 try later",
    )
    _, raw = build(recipients=[delayed])
    report = parse(raw)
    assert report["Subject"] == "Delayed Mail (still being retried)"
    _, per_recipient = status_blocks(report)
    assert per_recipient["Action"] == "delayed"
    assert per_recipient["Will-Retry-Until"] == "Wed, 15 Nov 2023 23:13:20 +0000"
    # RFC 3461 4.3: RET asks for content in "failed" reports only.
    assert parts(report)[2].get_content_type() == "text/rfc822-headers"
    assert b"will keep trying" in raw


def test_several_recipients_one_block_each() -> None:
    recipients = [
        failed(),
        failed(
            final_recipient="carol@example.net",
            status="5.2.2",
            remote_mta=None,
            diagnostic_code="mailbox full",
        ),
    ]
    report = parse(build(recipients=recipients)[1])
    blocks = status_blocks(report)
    assert len(blocks) == 3
    assert blocks[2]["Final-Recipient"] == "rfc822; carol@example.net"
    assert blocks[2]["Remote-MTA"] is None
    assert blocks[2]["Diagnostic-Code"] == "smtp; mailbox full"


def test_success_dsn() -> None:
    report = parse(build(recipients=[failed(action="delivered", status="2.0.0")])[1])
    assert report["Subject"] == "Successful Mail Delivery Report"
    assert status_blocks(report)[1]["Action"] == "delivered"


def test_international_addresses_use_global_types() -> None:
    env = envelope(sender="älice@exämple.org", smtputf8=True)
    dsn_envelope, raw = build(env, [failed(final_recipient="bøb@example.net")])
    assert dsn_envelope.smtputf8 and dsn_envelope.body_type is BodyType.EIGHT_BIT_MIME
    report = parse(raw)
    assert report.get_param("report-type") == "global-delivery-status"
    assert [p.get_content_type() for p in parts(report)][1:] == [
        "message/global-delivery-status",
        "message/global",
    ]
    assert "Final-Recipient: utf-8; bøb@example.net" in raw.decode()


def test_null_sender_never_gets_a_dsn() -> None:
    with pytest.raises(ValueError):
        build(envelope(sender=""))


def test_bad_recipient_values_are_rejected() -> None:
    with pytest.raises(ValueError):
        failed(action="bounced")
    with pytest.raises(ValueError):
        failed(status="550")


F, D, S, N = DsnNotify.FAILURE, DsnNotify.DELAY, DsnNotify.SUCCESS, DsnNotify.NEVER


@pytest.mark.parametrize(
    ("notify", "action", "expected"),
    [
        (None, "failed", True),
        (None, "delayed", True),
        (None, "delivered", False),
        (None, "relayed", False),
        (frozenset({N}), "failed", False),
        (frozenset({N}), "delayed", False),
        (frozenset({S}), "failed", False),
        (frozenset({S}), "delivered", True),
        (frozenset({S}), "relayed", True),
        (frozenset({S}), "expanded", True),
        (frozenset({F}), "failed", True),
        (frozenset({F}), "delayed", False),
        (frozenset({F}), "delivered", False),
        (frozenset({D}), "delayed", True),
        (frozenset({D}), "failed", False),
        (frozenset({F, D}), "delayed", True),
        (frozenset({S, F, D}), "delivered", True),
    ],
)
def test_notify_rules(notify: frozenset[DsnNotify] | None, action: str, expected: bool) -> None:
    assert should_notify(envelope(), notify, action) is expected


@pytest.mark.parametrize("action", ["failed", "delayed", "delivered"])
def test_null_sender_is_never_notified(action: str) -> None:
    assert should_notify(envelope(sender=""), frozenset({F, D, S}), action) is False


def test_unknown_action_is_an_error() -> None:
    with pytest.raises(ValueError):
        should_notify(envelope(), None, "bounced")
