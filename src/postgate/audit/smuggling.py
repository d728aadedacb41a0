"""audit.smuggling — does an odd end-of-data sequence let a second message through?

SYNOPSIS
    for variant in SMUGGLING_VARIANTS:
        check_smuggling(target, variant)     # "smuggling/lf-dot-lf", ...

DESCRIPTION
    RFC 5321 4.1.1.4: only <CRLF>.<CRLF> ends DATA. Servers that also accept
    <LF>.<LF> and the like can be fed a second, hidden transaction inside one message
    by any sender whose outbound server passes the sequence on ("SMTP smuggling",
    SEC Consult 2023; CVE-2023-51764 Postfix, CVE-2023-51765 Sendmail, CVE-2023-51766
    Exim).

    Each variant is one connection: MAIL FROM:<>, RCPT TO the local user, DATA, then
    in ONE write a short message whose body holds the variant's sequence followed by a
    complete second transaction (MAIL, RCPT, DATA, message, <CRLF>.<CRLF>), then QUIT.
    A safe server answers once (250 for the whole message, or a refusal) and then 221
    for the QUIT. More than one answer means the server read part of the body as
    commands: FAIL.

    Harmless if delivered: the messages go only to the local user given with
    --local-user (default the postmaster, whom RFC 5321 4.5.1 requires to exist), say
    in their subject and body that they come from an audit, and can be deleted. The
    null sender means no bounce is ever sent back.
"""

from __future__ import annotations

import email.utils
import uuid

from postgate.audit.model import AuditTarget, CheckResult, Status
from postgate.audit.wire import Conversation, ProbeError

SMUGGLING_VARIANTS: tuple[tuple[str, bytes], ...] = (
    ("lf-dot-lf", b"\n.\n"),
    ("lf-dot-crlf", b"\n.\r\n"),
    ("crlf-dot-lf", b"\r\n.\n"),
    ("cr-dot-crlf", b"\r.\r\n"),
    ("cr-dot-cr", b"\r.\r"),
    ("crlf-dot-cr", b"\r\n.\r"),
    ("crlf-nul-dot-crlf", b"\r\n\x00.\r\n"),
)


def probe_message(target: AuditTarget, variant: str, sequence: bytes) -> bytes:
    """The whole DATA payload, the final <CRLF>.<CRLF> included."""
    recipient = target.effective_local_user
    domain = target.origin_domain
    first = (
        f"From: postgate audit <MAILER-DAEMON@{domain}>\r\n"
        f"To: <{recipient}>\r\n"
        f"Subject: postgate audit: SMTP smuggling probe {variant} (harmless, delete me)\r\n"
        f"Date: {email.utils.formatdate(usegmt=True)}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@{domain}>\r\n"
        "\r\n"
        "This message was sent by `postgate audit` to test whether this server ends a\r\n"
        "message at a malformed end-of-data sequence. It is harmless; please delete it.\r\n"
    ).encode()
    second = (
        f"MAIL FROM:<>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n"
        f"Subject: postgate audit: SMUGGLED second message {variant}\r\n\r\n"
        "If this arrived as a separate message, the server is vulnerable to SMTP\r\n"
        "smuggling. It is harmless; please delete it.\r\n"
        ".\r\n"
    ).encode()
    # The second message's <CRLF>.<CRLF> is also the real end of the first one: a safe
    # server sees one message, a vulnerable one two.
    return first + sequence + second


def check_smuggling(target: AuditTarget, variant: str, sequence: bytes) -> CheckResult:
    name = f"smuggling/{variant}"
    try:
        talk = Conversation.open(target)
    except ProbeError as exc:
        return CheckResult(name, Status.WARN, f"could not test: {exc}")
    with talk:
        try:
            status, summary = _smuggle(talk, target, variant, sequence)
        except ProbeError as exc:
            status, summary = Status.WARN, f"could not test: {exc}"
        return CheckResult(name, status, summary, tuple(talk.evidence))


def _smuggle(
    talk: Conversation, target: AuditTarget, variant: str, sequence: bytes
) -> tuple[Status, str]:
    if talk.secure().code != 250:
        return Status.SKIP, "EHLO refused"
    if not talk.command("MAIL FROM:<>").positive:
        return Status.SKIP, "null sender refused: cannot test"
    rcpt = talk.command(f"RCPT TO:<{target.effective_local_user}>")
    if not rcpt.positive:
        return Status.SKIP, f"local recipient refused ({rcpt.brief()}): give --local-user"
    if talk.command("DATA").code != 354:
        return Status.SKIP, "DATA refused: cannot test"
    talk.send_raw(probe_message(target, variant, sequence) + b"QUIT\r\n")
    replies = talk.replies_until_closed(221)
    answers = [reply for reply in replies if reply.code != 221]
    if len(answers) > 1:
        queued = sum(1 for reply in answers if reply.code == 250)
        return Status.FAIL, (
            f"the server read the body as commands after {variant} ({len(answers)} replies, "
            f"{queued} of them 250): a second message can be smuggled"
        )
    if not answers:
        return Status.WARN, "no reply to the end of data: cannot tell"
    verdict = answers[0]
    if verdict.code == 250:
        return Status.PASS, f"one message, sequence kept inside it: {verdict.brief()}"
    return Status.PASS, f"message refused as a whole: {verdict.brief()}"
