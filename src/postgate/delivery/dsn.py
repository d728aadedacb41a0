"""delivery.dsn — delivery status notifications (RFC 3464, RFC 6522, RFC 3461).

SYNOPSIS
    if should_notify(envelope, recipient.notify, "failed"):
        dsn_envelope, dsn_message = build_dsn(
            reporting_mta="mail.example.org", original_envelope=envelope,
            original_message=message, recipients=[DsnRecipient(...)],
            queue_id=queue_id, arrival_date=envelope.received_at, now=now,
            postmaster_address="postmaster@example.org")
        await store.enqueue(dsn_envelope, dsn_message)

DESCRIPTION
    Builds the report that tells a sender what became of a message, as a new
    message to queue. The envelope sender is the null reverse-path "" (RFC 5321
    4.5.5, RFC 3464 2) so a failing DSN can never cause another one; the one
    recipient is the original envelope sender.

    The body is multipart/report; report-type=delivery-status (RFC 6522) with
    1. text/plain: what happened, in words, quoting each remote reply;
    2. message/delivery-status: the per-message fields (Reporting-MTA,
       Original-Envelope-Id when ENVID was given, Arrival-Date) and one block
       per recipient (Original-Recipient when ORCPT was given, Final-Recipient,
       Action, Status, Remote-MTA, Diagnostic-Code, Last-Attempt-Date, and
       Will-Retry-Until for "delayed");
    3. the returned message, see RETURNED CONTENT.
    Top-level headers add Auto-Submitted: auto-replied (RFC 3834 5), Date,
    Message-ID, and In-Reply-To/References to the original Message-ID.

RETURNED CONTENT
    RFC 3461 4.3: RET=HDRS returns the headers (text/rfc822-headers). RET=FULL
    returns the whole message (message/rfc822), but only in a report with at
    least one "failed" recipient; delay and success reports return headers. With
    no RET we do the same as RET=FULL. Either way a message larger than
    ``return_size_limit`` (1 MiB) is returned as headers only, so a bounce of a
    huge message does not itself become huge.

    The report is 7-bit: a message/rfc822 part may not carry a content transfer
    encoding other than 7bit/8bit/binary (RFC 2046 5.2.1), and we cannot know
    that the path back to the sender supports 8BITMIME. So an original with
    8-bit bytes, NULs, bare CRs or lines over 998 octets is returned as headers
    only, and headers with 8-bit bytes are sent as text/rfc822-headers in
    quoted-printable, which keeps every byte recoverable.

    Internationalised addresses (RFC 6533): when the sender, a recipient or an
    ORCPT is not ASCII, the report is message/global-delivery-status with
    message/global or message/global-headers, address type "utf-8", and the
    returned envelope asks for SMTPUTF8 and 8BITMIME; such a report can only be
    delivered over SMTPUTF8, which the original sender's path had to support.

NOTIFY RULES
    should_notify: never for the null sender; never with NOTIFY=NEVER; with an
    explicit NOTIFY only for the listed conditions (FAILURE: failed, DELAY:
    delayed, SUCCESS: delivered, relayed, expanded); without NOTIFY (RFC 3461
    4.1 default "FAILURE" or "FAILURE,DELAY") for failed and delayed only.

CONFIGURATION
    return_size_limit (1048576)   largest original returned whole, in octets.

SEE ALSO
    queue.model, delivery.mx, RFC 3461, RFC 3464, RFC 3834, RFC 6522, RFC 6533
"""

from __future__ import annotations

import binascii
import re
import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.utils import format_datetime

from postgate.queue.model import BodyType, DsnNotify, DsnRet, Envelope, EnvelopeRecipient

ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_DIAGNOSTIC_TYPE = re.compile(r"[A-Za-z0-9-]+;")
_CRLF = b"\r\n"
_MAX_LINE = 998  # RFC 5322 2.1.1
_MAX_DIAGNOSTIC = 900  # room for the field name and folding within _MAX_LINE
_NOTIFY_FOR_ACTION = {
    "failed": DsnNotify.FAILURE,
    "delayed": DsnNotify.DELAY,
    "delivered": DsnNotify.SUCCESS,
    "relayed": DsnNotify.SUCCESS,
    "expanded": DsnNotify.SUCCESS,
}
_ACTION_WORDS = {
    "failed": "delivery failed permanently; no further attempts will be made",
    "delayed": "not delivered yet; the mail system will keep trying",
    "delivered": "delivered",
    "relayed": "relayed to a mail system that sends no further delivery reports",
    "expanded": "delivered to a list or alias that was expanded",
}


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    """One per-recipient block of a DSN (RFC 3464 2.3).

    ``original_recipient`` is the decoded ORCPT as ``(addr-type, address)``.
    ``remote_mta`` is a host name ("mx.example.org") or a typed value
    ("dns; mx.example.org"). ``diagnostic_code`` is the remote reply, typed
    ("smtp; 550 5.1.1 no such user") or bare (then "smtp; " is assumed).
    """

    final_recipient: str
    original_recipient: tuple[str, str] | None
    action: str
    status: str
    remote_mta: str | None = None
    diagnostic_code: str | None = None
    last_attempt_date: float | None = None
    will_retry_until: float | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"DSN action must be one of {sorted(ACTIONS)}: {self.action!r}")
        if not _STATUS.fullmatch(self.status):
            raise ValueError(f"DSN status must look like 5.1.1: {self.status!r}")


def should_notify(
    envelope: Envelope, recipient_notify: frozenset[DsnNotify] | None, action: str
) -> bool:
    """Whether a DSN with ``action`` is wanted for one recipient (RFC 3461 4.1)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown DSN action {action!r}")
    if envelope.sender == "":
        return False  # RFC 3464 2 / RFC 5321 4.5.5: never notify the null sender
    if recipient_notify is None:
        return action in ("failed", "delayed")
    if DsnNotify.NEVER in recipient_notify:
        return False
    return _NOTIFY_FOR_ACTION[action] in recipient_notify


def build_dsn(
    *,
    reporting_mta: str,
    original_envelope: Envelope,
    original_message: bytes,
    recipients: Sequence[DsnRecipient],
    queue_id: str,
    arrival_date: float,
    now: float,
    postmaster_address: str,
    return_size_limit: int = 1_048_576,
) -> tuple[Envelope, bytes]:
    """The DSN as (envelope, message bytes with CRLF line ends) to enqueue."""
    sender = original_envelope.sender
    if sender == "":
        raise ValueError("a DSN is never sent to the null reverse-path (RFC 3464 2)")
    if not recipients:
        raise ValueError("a DSN needs at least one recipient block")
    utf8 = not all(
        address.isascii()
        for address in (
            sender,
            *(r.final_recipient for r in recipients),
            *(r.original_recipient[1] for r in recipients if r.original_recipient),
        )
    )
    message = re.sub(rb"\r?\n", _CRLF, original_message)
    content_type, content, returned_note = _returned_content(
        message,
        ret=original_envelope.ret,
        any_failed=any(r.action == "failed" for r in recipients),
        utf8=utf8,
        limit=return_size_limit,
    )
    status_type = "global-delivery-status" if utf8 else "delivery-status"
    status = _status_part(original_envelope, recipients, reporting_mta, queue_id, arrival_date)
    text = _text_part(recipients, reporting_mta, queue_id, postmaster_address, returned_note)
    body_cte = "8bit" if utf8 else "7bit"
    charset = "utf-8" if utf8 else "us-ascii"
    # A remote reply may carry non-ASCII text; a 7-bit report shows it as "?".
    codec = "utf-8" if utf8 else "ascii"
    parts = [
        f"Content-Type: text/plain; charset={charset}".encode()
        + _CRLF
        + f"Content-Transfer-Encoding: {body_cte}".encode()
        + _CRLF * 2
        + text.encode(codec, "replace"),
        f"Content-Type: message/{status_type}".encode()
        + _CRLF * 2
        + status.encode(codec, "replace"),
        content_type + _CRLF * 2 + content,
    ]
    boundary = _boundary(queue_id, reporting_mta, parts)
    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{sender}>",
        f"Subject: {_subject(recipients)}",
        f"Date: {_date(now)}",
        f"Message-ID: <{queue_id}.{int(now)}.{secrets.token_hex(6)}@{reporting_mta}>",
        *_threading_headers(message),
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type={status_type};\r\n\tboundary="{boundary}"',
        f"Content-Transfer-Encoding: {body_cte}",
    ]
    delimiter = b"\r\n--" + boundary.encode() + _CRLF
    body = (
        "\r\n".join(headers).encode()
        + _CRLF * 2
        + b"This is a MIME-encapsulated message.\r\n"
        + b"".join(delimiter + part for part in parts)
        + b"\r\n--"
        + boundary.encode()
        + b"--\r\n"
    )
    envelope = Envelope(
        sender="",
        recipients=(EnvelopeRecipient(address=sender, original=sender),),
        smtputf8=utf8,
        body_type=BodyType.EIGHT_BIT_MIME if utf8 else BodyType.SEVEN_BIT,
        received_at=now,
    )
    return envelope, body


def _returned_content(
    message: bytes, *, ret: DsnRet | None, any_failed: bool, utf8: bool, limit: int
) -> tuple[bytes, bytes, str]:
    """(Content-Type and CTE header lines, content, a sentence for the text part)."""
    end = message.find(b"\r\n\r\n")
    headers = message if end < 0 else message[: end + 2]
    full_wanted = any_failed and ret is not DsnRet.HDRS
    note = ""
    if full_wanted and len(message) > limit:
        full_wanted = False
        note = f"Only the headers of your message are returned: it is over {limit} octets."
    elif full_wanted and not utf8 and not _is_7bit(message):
        full_wanted = False
        note = "Only the headers of your message are returned: it holds 8-bit data."
    if utf8:
        # RFC 6533 6.3/6.4: the internationalised counterparts, sent as 8bit.
        kind = b"message/global" if full_wanted else b"message/global-headers"
        return b"Content-Type: " + kind, message if full_wanted else headers, note
    if full_wanted:
        return b"Content-Type: message/rfc822", message, note
    if _is_7bit(headers):
        return b"Content-Type: text/rfc822-headers", headers, note
    encoded = binascii.b2a_qp(headers, istext=True)
    cte = b"Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: quoted-printable"
    return cte, encoded, note


def _status_part(
    envelope: Envelope,
    recipients: Sequence[DsnRecipient],
    reporting_mta: str,
    queue_id: str,
    arrival_date: float,
) -> str:
    per_message = [f"Reporting-MTA: dns; {reporting_mta}", f"X-Postgate-Queue-ID: {queue_id}"]
    if envelope.envid:
        # RFC 3464 2.2.1: the decoded ENVID; xtext again only if it is not plain text.
        per_message.append(f"Original-Envelope-Id: {_plain_or_xtext(envelope.envid)}")
    per_message.append(f"Arrival-Date: {_date(arrival_date)}")
    blocks = ["\r\n".join(per_message)]
    for recipient in recipients:
        lines = []
        if recipient.original_recipient is not None:
            addr_type, address = recipient.original_recipient
            lines.append(f"Original-Recipient: {_typed_address(addr_type, address)}")
        lines += [
            f"Final-Recipient: {_typed_address('rfc822', recipient.final_recipient)}",
            f"Action: {recipient.action}",
            f"Status: {recipient.status}",
        ]
        if recipient.remote_mta:
            remote = _one_line(recipient.remote_mta)
            lines.append(f"Remote-MTA: {remote if ';' in remote else 'dns; ' + remote}")
        if recipient.diagnostic_code:
            lines.append(_fold(f"Diagnostic-Code: {_typed_diagnostic(recipient.diagnostic_code)}"))
        if recipient.last_attempt_date is not None:
            lines.append(f"Last-Attempt-Date: {_date(recipient.last_attempt_date)}")
        if recipient.action == "delayed" and recipient.will_retry_until is not None:
            lines.append(f"Will-Retry-Until: {_date(recipient.will_retry_until)}")
        blocks.append("\r\n".join(lines))
    return "\r\n\r\n".join(blocks) + "\r\n"


def _text_part(
    recipients: Sequence[DsnRecipient],
    reporting_mta: str,
    queue_id: str,
    postmaster_address: str,
    returned_note: str,
) -> str:
    actions = {r.action for r in recipients}
    if "failed" in actions:
        intro = (
            "Your message could not be delivered to one or more recipients. "
            "The reasons are given below."
        )
    elif "delayed" in actions:
        intro = (
            "Your message has not been delivered yet to the recipients below. The mail "
            "system will keep trying; you do not need to send it again."
        )
    else:
        intro = "This is a delivery report for your message, as you asked."
    paragraphs = [f"This is the mail system at {reporting_mta}.", intro]
    for recipient in recipients:
        words = f"<{recipient.final_recipient}>: {_ACTION_WORDS[recipient.action]}"
        words += f" (status {recipient.status})."
        if recipient.action == "delayed" and recipient.will_retry_until is not None:
            words += f" It will try until {_date(recipient.will_retry_until)}."
        lines = textwrap.wrap(words, 76, break_on_hyphens=False, break_long_words=False)
        if recipient.diagnostic_code:
            typed = _typed_diagnostic(recipient.diagnostic_code)
            diagnostic_type, _, said = typed.partition(";")
            who = _one_line(recipient.remote_mta or "").removeprefix("dns;").strip()
            if diagnostic_type.strip().lower() != "smtp":
                # Our own words (expiry, local errors), not a remote server's reply.
                who = "The mail system"
            lines.append(f"    {who or 'The mail system'} said:")
            said = said.strip()
            lines += textwrap.wrap(said, 76, initial_indent="    ", subsequent_indent="    ")
        paragraphs.append("\r\n".join(lines))
    if returned_note:
        paragraphs.append("\r\n".join(textwrap.wrap(returned_note, 76)))
    paragraphs.append(
        f"For help, write to the postmaster <{postmaster_address}> and include "
        f"this report (queue ID {queue_id})."
    )
    text = "\r\n\r\n".join(
        p if "\r\n" in p else "\r\n".join(textwrap.wrap(p, 76)) for p in paragraphs
    )
    return text + "\r\n"


def _subject(recipients: Sequence[DsnRecipient]) -> str:
    actions = {r.action for r in recipients}
    if "failed" in actions:
        return "Undelivered Mail Returned to Sender"
    if "delayed" in actions:
        return "Delayed Mail (still being retried)"
    return "Successful Mail Delivery Report"


def _threading_headers(message: bytes) -> list[str]:
    """In-Reply-To and References to the original Message-ID (RFC 3834 3.1.3)."""
    end = message.find(b"\r\n\r\n")
    parsed = BytesHeaderParser().parsebytes(message if end < 0 else message[: end + 4])
    message_id = str(parsed.get("Message-ID", "")).strip()
    if not re.fullmatch(r"<[!-=?-~]{1,900}>", message_id):
        return []
    return [f"In-Reply-To: {message_id}", f"References: {message_id}"]


def _typed_address(addr_type: str, address: str) -> str:
    if not address.isascii():
        return f"utf-8; {_one_line(address)}"  # RFC 6533 3: utf-8-addr-unencoded
    return f"{addr_type}; {_plain_or_xtext(address)}"


def _typed_diagnostic(diagnostic: str) -> str:
    text = _one_line(diagnostic)
    return text if _DIAGNOSTIC_TYPE.match(text) else f"smtp; {text}"


def _plain_or_xtext(value: str) -> str:
    """``value`` unchanged when it is printable ASCII; otherwise xtext (RFC 3461 4),
    so CR, LF and other octets cannot break the field."""
    if all(33 <= ord(c) <= 126 for c in value):
        return value
    return "".join(
        chr(octet) if 33 <= octet <= 126 and octet not in b"+=" else f"+{octet:02X}"
        for octet in value.encode("utf-8")
    )


def _one_line(text: str) -> str:
    """Collapse a (possibly multi-line) reply into one line of printable text."""
    collapsed = " ".join(text.split())
    cleaned = "".join(c if c.isprintable() else "?" for c in collapsed)
    return cleaned[:_MAX_DIAGNOSTIC]


def _fold(field: str) -> str:
    """Fold a long header field at spaces (RFC 5322 2.2.3)."""
    if len(field) <= 78:
        return field
    return "\r\n".join(
        textwrap.wrap(
            field, 78, subsequent_indent=" ", break_on_hyphens=False, break_long_words=False
        )
    )


def _boundary(queue_id: str, reporting_mta: str, parts: Sequence[bytes]) -> str:
    for _ in range(8):
        boundary = f"{queue_id}.{secrets.token_hex(8)}/{reporting_mta}"
        if not any(boundary.encode() in part for part in parts):
            return boundary
    raise RuntimeError("could not find a MIME boundary absent from the content")


def _date(timestamp: float) -> str:
    return format_datetime(datetime.fromtimestamp(timestamp, UTC))


def _is_7bit(data: bytes) -> bool:
    """RFC 2045 2.7: ASCII, no NUL, CR only in CRLF, lines of at most 998 octets."""
    if not data.isascii() or b"\0" in data:
        return False
    lines = data.split(_CRLF)
    return all(b"\r" not in line and b"\n" not in line and len(line) <= _MAX_LINE for line in lines)
