"""audit.tls_versions — which TLS versions and ciphers does the server negotiate?

SYNOPSIS
    check_old_version(target, "TLSv1")        # CheckResult "tls/1.0": handshake must fail
    check_modern_versions(target)             # "tls/modern": 1.2 and/or 1.3 must work
    check_weak_ciphers(target)                # "tls/weak-ciphers": no NULL/RC4/DES/RSA-kx

DESCRIPTION
    Each attempt is one connection (STARTTLS first unless the port is implicit TLS)
    and a handshake driven through memory BIOs, so the audit knows whether its
    ClientHello actually left: an error before that is the CLIENT's inability (OpenSSL 3
    refuses TLS 1.0/1.1 below security level 0, some builds lack them entirely), an
    error after it is the SERVER's refusal. Only the second may count as a pass.

    When the local OpenSSL cannot even build an old ClientHello, ``openssl s_client
    -tls1|-tls1_1 -cipher DEFAULT@SECLEVEL=0`` is tried; if that cannot either, the
    result is SKIP "unknown (client cannot test)", never a pass.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import socket
import ssl
import subprocess
import warnings
from dataclasses import dataclass

from postgate.audit.model import AuditTarget, CheckResult, Status, TlsMode
from postgate.audit.wire import Conversation, ProbeError, sni_name

_VERSIONS = {
    "TLSv1": "1.0",
    "TLSv1.1": "1.1",
    "TLSv1.2": "1.2",
    "TLSv1.3": "1.3",
}
_S_CLIENT_FLAG = {"TLSv1": "-tls1", "TLSv1.1": "-tls1_1"}
# Suites no server should agree to: no encryption, no authentication, broken ciphers,
# and RSA key exchange (no forward secrecy).
_WEAK_SUITES = "eNULL:aNULL:RC4:DES:3DES:EXPORT:kRSA:@SECLEVEL=0"
_BROKEN = re.compile(r"NULL|RC4|DES|EXP", re.IGNORECASE)  # no or breakable encryption
_ANONYMOUS = re.compile(r"^(ADH|AECDH)|anon", re.IGNORECASE)
_MAX_HANDSHAKE_ROUNDS = 32


@dataclass(frozen=True)
class Handshake:
    """One handshake attempt. ``hello_sent`` False means the client could not even try."""

    completed: bool
    hello_sent: bool
    detail: str
    version: str | None = None
    cipher: str | None = None


def _tls_version(name: str) -> ssl.TLSVersion:
    with warnings.catch_warnings():
        # TLSVersion.TLSv1 / TLSv1_1 are deprecated: exactly what we test for.
        warnings.simplefilter("ignore", DeprecationWarning)
        return getattr(ssl.TLSVersion, name.replace(".", "_"))  # type: ignore[no-any-return]


def context_for(version: str | None, ciphers: str = "DEFAULT:@SECLEVEL=0") -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers(ciphers)
    if version is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = _tls_version(version)
            context.maximum_version = _tls_version(version)
    return context


def handshake(sock: socket.socket, context: ssl.SSLContext, host: str, timeout: float) -> Handshake:
    """Drive a client handshake over ``sock`` through memory BIOs; never raises for
    TLS or socket failures, it describes them."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=sni_name(host))
    sock.settimeout(timeout)
    hello_sent = False
    for _ in range(_MAX_HANDSHAKE_ROUNDS):
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            _flush(sock, outgoing)  # our alert, if any, for a tidy close
            return Handshake(False, hello_sent, _reason(exc))
        else:
            _flush(sock, outgoing)
            cipher = tls.cipher()
            return Handshake(True, True, "completed", tls.version(), cipher[0] if cipher else None)
        try:
            hello_sent = _flush(sock, outgoing) or hello_sent
            chunk = sock.recv(65536)
        except TimeoutError:
            return Handshake(False, hello_sent, f"no answer within {timeout:g}s")
        except OSError as exc:
            return Handshake(False, hello_sent, f"connection error: {exc}")
        if chunk:
            incoming.write(chunk)
        else:
            incoming.write_eof()
    return Handshake(False, hello_sent, "handshake did not finish")


def _flush(sock: socket.socket, outgoing: ssl.MemoryBIO) -> bool:
    data = outgoing.read()
    if data:
        sock.sendall(data)
    return bool(data)


def _reason(exc: ssl.SSLError) -> str:
    return exc.reason.lower().replace("_", " ") if exc.reason else str(exc)


def attempt(
    target: AuditTarget, version: str | None, ciphers: str, evidence: list[str]
) -> Handshake:
    """Connect, STARTTLS unless implicit, and try one handshake."""
    plain = dataclasses.replace(target, tls_mode=TlsMode.PLAIN)
    implicit = target.tls_mode is TlsMode.IMPLICIT
    try:
        context = context_for(version, ciphers)
    except ssl.SSLError as exc:
        return Handshake(False, False, f"local OpenSSL: {_reason(exc)}")
    try:
        talk = Conversation.open(plain, read_banner=not implicit)
    except ProbeError as exc:
        evidence.append(f"-- {exc}")
        return Handshake(False, False, str(exc))
    with talk:
        try:
            if not implicit:
                talk.ehlo()
                if "STARTTLS" not in talk.extensions:
                    return Handshake(False, False, "STARTTLS not offered")
                if talk.command("STARTTLS").code != 220:
                    return Handshake(False, False, "STARTTLS refused")
        except ProbeError as exc:
            return Handshake(False, False, str(exc))
        finally:
            evidence.extend(talk.evidence)
        outcome = handshake(talk.sock, context, target.host, target.timeout)
    shown = version or "any version"
    evidence.append(
        f"-- handshake offering {shown}: "
        + (f"{outcome.version} {outcome.cipher}" if outcome.completed else outcome.detail)
    )
    return outcome


def s_client_attempt(target: AuditTarget, version: str) -> Handshake:
    """The same attempt with ``openssl s_client`` (it may still speak what we cannot)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return Handshake(False, False, "openssl not installed")
    argv = [openssl, "s_client", "-connect", f"{target.host}:{target.port}"]
    argv += [_S_CLIENT_FLAG[version], "-cipher", "DEFAULT@SECLEVEL=0"]
    if target.tls_mode is not TlsMode.IMPLICIT:
        argv += ["-starttls", "smtp"]
    try:
        done = subprocess.run(
            argv, input=b"", capture_output=True, timeout=target.timeout * 2, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Handshake(False, False, f"openssl s_client: {exc}")
    return parse_s_client(
        done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    )


def parse_s_client(output: str) -> Handshake:
    """Read ``openssl s_client`` output: completed, refused by the server, or unusable."""
    protocol = re.search(r"Protocol\s*:\s*(TLSv1(?:\.\d)?)", output)
    cipher = re.search(r"Cipher is (\S+)", output)
    if protocol and cipher and cipher.group(1) != "(NONE)":
        return Handshake(True, True, "completed", protocol.group(1), cipher.group(1))
    lowered = output.lower()
    if "no protocols available" in lowered or "unknown option" in lowered:
        return Handshake(False, False, "openssl s_client cannot offer this version")
    alert = re.search(r"(alert [a-z ]+|wrong version number|unsupported protocol)", lowered)
    return Handshake(False, True, alert.group(1) if alert else "handshake failed")


def check_old_version(target: AuditTarget, version: str) -> CheckResult:
    """TLS 1.0 / 1.1 must be refused."""
    name = f"tls/{_VERSIONS[version]}"
    evidence: list[str] = []
    outcome = attempt(target, version, "DEFAULT:@SECLEVEL=0", evidence)
    if not outcome.hello_sent and outcome.detail in ("STARTTLS not offered", "STARTTLS refused"):
        return CheckResult(name, Status.SKIP, outcome.detail, tuple(evidence))
    if not outcome.hello_sent:
        fallback = s_client_attempt(target, version)
        evidence.append(f"-- openssl s_client {_S_CLIENT_FLAG[version]}: {fallback.detail}")
        outcome = fallback
    if outcome.completed:
        summary = f"{outcome.version} accepted ({outcome.cipher}): turn it off"
        return CheckResult(name, Status.FAIL, summary, tuple(evidence))
    if not outcome.hello_sent:
        return CheckResult(name, Status.SKIP, "unknown (client cannot test)", tuple(evidence))
    return CheckResult(name, Status.PASS, f"refused: {outcome.detail}", tuple(evidence))


def check_modern_versions(target: AuditTarget) -> CheckResult:
    """At least one of TLS 1.2 and 1.3 must be negotiated; report the ciphers."""
    evidence: list[str] = []
    agreed = []
    for version in ("TLSv1.3", "TLSv1.2"):
        outcome = attempt(target, version, "DEFAULT", evidence)
        if outcome.completed:
            agreed.append(f"{outcome.version} {outcome.cipher}")
        elif outcome.detail in ("STARTTLS not offered", "STARTTLS refused"):
            return CheckResult("tls/modern", Status.SKIP, outcome.detail, tuple(evidence))
    if agreed:
        return CheckResult("tls/modern", Status.PASS, "; ".join(agreed), tuple(evidence))
    return CheckResult("tls/modern", Status.FAIL, "neither TLS 1.2 nor 1.3 works", tuple(evidence))


def check_weak_ciphers(target: AuditTarget) -> CheckResult:
    """Offer only weak TLS 1.2 suites: a server must refuse them all."""
    name = "tls/weak-ciphers"
    evidence: list[str] = []
    outcome = attempt(target, "TLSv1.2", _WEAK_SUITES, evidence)
    if outcome.completed:
        cipher = outcome.cipher or "?"
        if _BROKEN.search(cipher):
            status, why = Status.FAIL, "no or breakable encryption"
        elif _ANONYMOUS.search(cipher):
            # Opportunistic STARTTLS is unauthenticated anyway (RFC 7672 1.3), which is
            # why Postfix allows these on port 25; still worth a look.
            status, why = Status.WARN, "anonymous: no server authentication"
        else:
            status, why = Status.WARN, "RSA key exchange: no forward secrecy"
        return CheckResult(name, status, f"accepted {cipher} ({why})", tuple(evidence))
    if not outcome.hello_sent:
        return CheckResult(name, Status.SKIP, f"cannot test: {outcome.detail}", tuple(evidence))
    return CheckResult(name, Status.PASS, f"all refused: {outcome.detail}", tuple(evidence))
