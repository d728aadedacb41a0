"""audit.starttls — STARTTLS offered, no AUTH before it, no command injection across it.

SYNOPSIS
    check_starttls_offered(target)      # "tls/starttls-offered"
    check_auth_before_tls(target)       # "auth/before-tls"
    check_starttls_injection(target)    # "tls/starttls-injection"

DESCRIPTION
    Plaintext ports only; on an implicit-TLS port these checks are skipped.

    AUTH before TLS (RFC 4954 4, RFC 8314 3): advertising AUTH on a plaintext
    connection invites clients to send passwords in clear, so it fails. The audit
    then tries ``AUTH PLAIN`` anyway with a DUMMY credential (never the --auth-user
    one): any answer but a refusal of the command itself (235, 334, or 535 "wrong
    password", which proves the server checked it) fails.

    STARTTLS injection (RFC 3207 4.2, CVE-2011-0411): ``STARTTLS\\r\\nNOOP\\r\\n`` in one
    write. A server that buffers the NOOP across the handshake answers it inside TLS,
    where it looks like an answer to the client's first encrypted command: a
    man-in-the-middle can so inject commands. After the handshake the audit sends
    QUIT only; any reply before the 221 fails.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from postgate.audit.model import AuditTarget, CheckResult, Status, TlsMode
from postgate.audit.wire import Conversation, ProbeError, visible

_DUMMY_PLAIN = base64.b64encode(b"\0pgaudit-probe@audit-origin.example\0not-a-password").decode()
_IMPLICIT = "implicit TLS port: the connection is encrypted from the first byte"


def check_starttls_offered(target: AuditTarget) -> CheckResult:
    name = "tls/starttls-offered"
    if target.tls_mode is TlsMode.IMPLICIT:
        return CheckResult(name, Status.SKIP, _IMPLICIT)
    try:
        with Conversation.open(target) as talk:
            try:
                talk.ehlo()
                talk.command("QUIT")
            except ProbeError as exc:
                return CheckResult(
                    name, Status.WARN, f"could not test: {exc}", tuple(talk.evidence)
                )
            evidence = tuple(talk.evidence)
    except ProbeError as exc:
        return CheckResult(name, Status.WARN, f"could not test: {exc}")
    if "STARTTLS" in talk.extensions:
        return CheckResult(name, Status.PASS, "STARTTLS offered", evidence)
    status = Status.FAIL if target.tls_mode is TlsMode.STARTTLS else Status.WARN
    return CheckResult(name, status, "STARTTLS not offered: mail arrives in clear", evidence)


def _plaintext_probe(
    target: AuditTarget, name: str, probe: Callable[[Conversation], tuple[Status, str]]
) -> CheckResult:
    """Run ``probe`` on a fresh plaintext conversation; skipped on implicit-TLS ports."""
    if target.tls_mode is TlsMode.IMPLICIT:
        return CheckResult(name, Status.SKIP, _IMPLICIT)
    try:
        talk = Conversation.open(target)
    except ProbeError as exc:
        return CheckResult(name, Status.WARN, f"could not test: {exc}")
    with talk:
        try:
            status, summary = probe(talk)
        except ProbeError as exc:
            status, summary = Status.WARN, f"could not test: {exc}"
        return CheckResult(name, status, summary, tuple(talk.evidence))


def check_auth_before_tls(target: AuditTarget) -> CheckResult:
    return _plaintext_probe(target, "auth/before-tls", _auth_in_clear)


def _auth_in_clear(talk: Conversation) -> tuple[Status, str]:
    talk.ehlo()
    advertised = "AUTH" in talk.extensions
    reply = talk.command(
        f"AUTH PLAIN {_DUMMY_PLAIN}", shown=f"AUTH PLAIN {_DUMMY_PLAIN}  (dummy credential)"
    )
    if reply.code == 334:
        talk.command("*")  # RFC 4954 4: cancel the exchange
    talk.command("QUIT")
    processed = reply.code in (235, 334, 535)
    if advertised and processed:
        return Status.FAIL, f"AUTH advertised and processed before TLS ({reply.brief()})"
    if advertised:
        return Status.FAIL, f"AUTH {talk.extensions['AUTH']} advertised before TLS"
    if processed:
        return Status.FAIL, f"AUTH processed before TLS though not advertised ({reply.brief()})"
    return Status.PASS, f"AUTH not offered before TLS and refused: {reply.brief()}"


def check_starttls_injection(target: AuditTarget) -> CheckResult:
    return _plaintext_probe(target, "tls/starttls-injection", _inject)


def _inject(talk: Conversation) -> tuple[Status, str]:
    talk.ehlo()
    if "STARTTLS" not in talk.extensions:
        return Status.SKIP, "STARTTLS not offered"
    talk.send_raw(b"STARTTLS\r\nNOOP\r\n")
    reply = talk.read_reply()
    if reply.code != 220:
        return Status.SKIP, f"STARTTLS refused: {reply.brief()}"
    early = talk.pending_bytes()
    talk.starttls_handshake()
    talk.send_raw(b"QUIT\r\n")
    replies = talk.replies_until_closed(221)
    before_quit = [r for r in replies if r.code != 221]
    if before_quit:
        return Status.FAIL, (
            f"the NOOP sent before the handshake was answered inside TLS "
            f"({before_quit[0].brief()}): commands can be injected (CVE-2011-0411)"
        )
    if early:
        return Status.WARN, f"server answered in clear after its 220: {visible(early)}"
    if not replies:
        return Status.WARN, "no reply to QUIT after the handshake: cannot tell"
    return Status.PASS, "pipelined NOOP discarded; only QUIT answered after the handshake"
