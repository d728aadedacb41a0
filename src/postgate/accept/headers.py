"""accept.headers — what we add to an accepted message before it is queued.

SYNOPSIS
    received = received_header(...)                 # bytes, CRLF-terminated
    message = prepend_trace(message, received)
    message = add_missing_submission_headers(message, hostname, queue_id, now)

DESCRIPTION
    RFC 5321 4.4: every SMTP server that accepts a message for relaying or final
    delivery prepends a Received trace header; we never alter the rest of the message.
    RFC 6409 8.2/8.3: a submission server MAY add Message-ID and Date when the client
    left them out. Only submissions (authenticated clients) get those fixes; mail
    arriving on port 25 is passed on untouched apart from the trace header.
    All work is on bytes: headers are located with bytes.find, never decoded whole.
"""

from __future__ import annotations

import email.utils
import secrets

# RFC 3848: the "with" protocol keyword records TLS (S) and AUTH (A); RFC 6531 3.7.3:
# UTF8SMTP variants when the transaction used SMTPUTF8.


def protocol_keyword(*, extended: bool, tls: bool, authenticated: bool, smtputf8: bool) -> str:
    if not extended:
        return "SMTP"
    base = "UTF8SMTP" if smtputf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if authenticated else "")


def _clean(text: str) -> str:
    """Keep a client-supplied word from breaking the header: no CR/LF, no parentheses
    that would end our comment early, bounded length."""
    kept = "".join(ch for ch in text if ch.isprintable() and ch not in "()\\")
    return kept[:200] or "unknown"


def received_header(
    *,
    helo: str,
    client_address: str,
    client_hostname: str | None,
    hostname: str,
    protocol: str,
    queue_id: str,
    recipient: str | None,
    tls_version: str | None,
    tls_cipher: str | None,
    now: float,
) -> bytes:
    """A RFC 5321 4.4 Received header (folded, CRLF-terminated).

    ``recipient`` is given only when the message has exactly one recipient: naming
    one of several would leak the other recipients' Bcc status.
    """
    remote = f"{_clean(client_hostname)} " if client_hostname else ""
    literal = f"IPv6:{client_address}" if ":" in client_address else client_address
    lines = [f"Received: from {_clean(helo)} ({remote}[{literal}])"]
    by = f"\tby {hostname} (postgate)"
    if tls_version:
        by += f" ({_clean(tls_version)} {_clean(tls_cipher or '')})".replace(" )", ")")
    lines.append(by)
    with_line = f"\twith {protocol} id {queue_id}"
    if recipient is not None and "\r" not in recipient and "\n" not in recipient:
        with_line += f"\r\n\tfor <{recipient}>"
    lines.append(with_line + ";")
    lines.append("\t" + email.utils.formatdate(now, localtime=False))
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")


def prepend_trace(message: bytes, header: bytes) -> bytes:
    return header + message


def _header_section(message: bytes) -> bytes:
    """The bytes of the header section, without the blank line (RFC 5322 2.1)."""
    if message.startswith(b"\r\n"):
        return b""
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def has_header(message: bytes, name: bytes) -> bool:
    """Whether the header section has a field called ``name`` (case-insensitive)."""
    section = b"\r\n" + _header_section(message).lower()
    return (b"\r\n" + name.lower() + b":") in section


def add_missing_submission_headers(
    message: bytes, *, hostname: str, queue_id: str, now: float
) -> bytes:
    """RFC 6409 8.2 and 8.3: add Date and Message-ID when the submission lacks them."""
    extra = b""
    if not has_header(message, b"date"):
        extra += b"Date: " + email.utils.formatdate(now, localtime=False).encode() + b"\r\n"
    if not has_header(message, b"message-id"):
        token = f"{queue_id}.{secrets.token_hex(6)}"
        extra += f"Message-ID: <{token}@{hostname}>\r\n".encode()
    if not extra:
        return message
    if message.startswith(b"\r\n") or message == b"":
        # No header section at all: the new fields become it.
        return extra + (message if message.startswith(b"\r\n") else b"\r\n" + message)
    return _insert_after_headers(message, extra)


def _insert_after_headers(message: bytes, extra: bytes) -> bytes:
    """Insert fields at the end of the header section, keeping the body untouched."""
    end = message.find(b"\r\n\r\n")
    if end < 0:
        # Headers only, no body: RFC 5322 allows it; append after the last field.
        if not message.endswith(b"\r\n"):
            message += b"\r\n"
        return message + extra
    return message[: end + 2] + extra + message[end + 2 :]
