"""server.tls — TLS contexts for the listeners, reloaded when the files change.

SYNOPSIS
    holder = TlsContextHolder(cert_file, key_file, min_version="1.2")   # raises TlsError
    context = holder.current()        # a fresh context after certbot renewed the files
    generate_self_signed(cert_file, key_file, hostname)

DESCRIPTION
    Server contexts accept TLS 1.2 and 1.3 only (RFC 8996 deprecates 1.0/1.1); with
    min_version "1.3" only TLS 1.3. For TLS 1.2 the cipher list is limited to AEAD
    suites with forward secrecy (ECDHE + AES-GCM / ChaCha20-Poly1305). Certificate
    files follow the Let's Encrypt layout (fullchain.pem + privkey.pem). Renewal
    replaces the files; ``current()`` notices a changed mtime/size/inode (checked at
    most once a second) and builds a new context, so established sessions keep theirs
    and the next handshake serves the new certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# TLS 1.2 suites: ECDHE key exchange (forward secrecy) with AEAD ciphers only.
# TLS 1.3 suites are all AEAD with forward secrecy and are not affected by this string.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!SHA1:!SHA256:!SHA384"

_CHECK_INTERVAL = 1.0

log = structlog.get_logger("postgate.tls")


class TlsError(Exception):
    """A certificate or key that cannot be used; the message names the file."""


@dataclass(frozen=True)
class _FileStamp:
    cert: tuple[int, int, int]
    key: tuple[int, int, int]


def _stamp(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def build_server_context(
    cert_file: Path, key_file: Path, min_version: str = "1.2", label: str = "tls"
) -> ssl.SSLContext:
    """A server context with our policy; raises TlsError naming the bad file."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    context.set_ciphers(TLS12_CIPHERS)
    # Renegotiation and compression are attack surface we never need.
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    for key, path in ((f"{label}.cert_file", cert_file), (f"{label}.key_file", key_file)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise TlsError(f"{key}: {path}: {exc.strerror or exc}") from None
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except ssl.SSLError as exc:
        raise TlsError(
            f"{label}.cert_file/key_file: {cert_file} and {key_file} are not a usable "
            f"certificate chain and matching private key ({exc.reason or exc})"
        ) from None
    return context


class _ReloadingContext:
    """One certificate/key pair and the context built from it, rebuilt on change."""

    def __init__(self, cert_file: Path, key_file: Path, min_version: str, label: str) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.min_version = min_version
        self.label = label
        self._context = self._build()
        self._stamp = self._read_stamp()
        self._checked_at = time.monotonic()

    def _build(self) -> ssl.SSLContext:
        return build_server_context(self.cert_file, self.key_file, self.min_version, self.label)

    def _read_stamp(self) -> _FileStamp | None:
        try:
            return _FileStamp(_stamp(self.cert_file), _stamp(self.key_file))
        except OSError:
            return None

    def current(self) -> ssl.SSLContext:
        now = time.monotonic()
        if now - self._checked_at < _CHECK_INTERVAL:
            return self._context
        self._checked_at = now
        stamp = self._read_stamp()
        if stamp is not None and stamp != self._stamp:
            try:
                self._context = self._build()
                self._stamp = stamp
            except TlsError as exc:
                # A renewal caught half-written (new cert, old key) must not take the
                # listener down: keep serving the old pair and look again next time.
                # Said loudly: a restart now would fail on these files.
                log.warning("new certificate files unusable, keeping the old ones", reason=str(exc))
        return self._context


class TlsContextHolder:
    """The server's certificates: a default pair plus one per SNI name, each
    re-read when its files change (certbot renew) without a restart."""

    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        min_version: str = "1.2",
        sni: Mapping[str, tuple[Path, Path]] | None = None,
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.min_version = min_version
        self._default = _ReloadingContext(cert_file, key_file, min_version, "tls")
        self._named = {
            name.lower(): _ReloadingContext(cert, key, min_version, f'tls.sni."{name}"')
            for name, (cert, key) in (sni or {}).items()
        }

    def _choose(
        self, ssl_object: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _ctx: object
    ) -> None:
        chosen = self.context_for(server_name)
        if chosen is not ssl_object.context:
            ssl_object.context = chosen

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        """The context for a client that asked for ``server_name`` (None: no SNI)."""
        if server_name:
            named = self._named.get(server_name.lower().rstrip("."))
            if named is not None:
                return named.current()
        return self._default.current()

    def current(self) -> ssl.SSLContext:
        """The context a handshake starts with; SNI may switch it to a named one."""
        context = self._default.current()
        if self._named and context.sni_callback is None:
            context.sni_callback = self._choose
        return context


def switching_context(choose: Callable[[str | None], ssl.SSLContext]) -> ssl.SSLContext:
    """A context for an implicit-TLS listener that hands every handshake to
    ``choose(server_name)``: asyncio fixes a listener's context when it starts
    serving, so renewed certificates reach new connections through the SNI
    callback, which OpenSSL calls for every ClientHello (with or without SNI)
    before it picks the certificate."""
    base = choose(None)
    switcher = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    switcher.minimum_version = base.minimum_version
    switcher.set_ciphers(TLS12_CIPHERS)

    def pick(ssl_object: ssl.SSLObject | ssl.SSLSocket, name: str | None, _ctx: object) -> None:
        ssl_object.context = choose(name)

    switcher.sni_callback = pick
    return switcher


def generate_self_signed(cert_file: Path, key_file: Path, hostname: str) -> None:
    """Write a self-signed ECDSA P-256 certificate for ``hostname`` (embedded default).

    The key file is created 0600 before anything is written to it.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost")]
    alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
