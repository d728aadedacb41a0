"""TLS policy on a real server: versions, ciphers, SNI, certificate renewal, banner."""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from postgate.server.tls import generate_self_signed
from tests.conftest import make_server
from tests.server_process import ServerProcess, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning"),
]


def client_context(
    *, minimum: ssl.TLSVersion | None = None, maximum: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if maximum is not None and maximum < ssl.TLSVersion.TLSv1_2:
        # OpenSSL 3 refuses TLS 1.0/1.1 on the client side too unless the security
        # level is lowered: we want to offer them, to see the *server* refuse.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    return context


def implicit_tls(
    port: int, context: ssl.SSLContext, server_name: str | None = None
) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname=server_name)


def peer_certificate(port: int, server_name: str | None = None) -> bytes:
    with implicit_tls(port, client_context(), server_name) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


def pem_to_der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(
        path.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    )


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[ServerProcess]:
    root = tmp_path / "pg"
    (root / "tls").mkdir(parents=True)
    generate_self_signed(root / "tls" / "other.pem", root / "tls" / "other.key", "mail.example.net")
    server = make_server(
        root,
        extra_config='\n[tls.sni]\n"mail.example.net" = ["tls/other.pem", "tls/other.key"]\n',
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _client_can_speak(version: ssl.TLSVersion, cert: Path, key: Path) -> bool:
    """Positive control: a permissive local TLS server with the same kind of
    certificate completes a handshake at ``version`` with our test client. Without
    this, a refusal by postgate could be the client's own OpenSSL refusing."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        server_context.set_ciphers("DEFAULT:@SECLEVEL=0")
        server_context.minimum_version = ssl.TLSVersion.TLSv1
        server_context.load_cert_chain(cert, key)
        client = client_context(minimum=version, maximum=version)
    except (ValueError, ssl.SSLError):
        return False
    listener = socket.create_server(("127.0.0.1", 0))
    result: list[str | None] = []

    def accept() -> None:
        conn, _ = listener.accept()
        try:
            with server_context.wrap_socket(conn, server_side=True) as tls:
                result.append(tls.version())
        except (ssl.SSLError, OSError):
            result.append(None)

    worker = threading.Thread(target=accept, daemon=True)
    worker.start()
    try:
        with client.wrap_socket(socket.create_connection(listener.getsockname(), timeout=5)):
            pass
    except (ssl.SSLError, OSError):
        return False
    finally:
        worker.join(5)
        listener.close()
    return bool(result and result[0])


@pytest.mark.parametrize("old", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_1_0_and_1_1_are_refused(tls_server: ServerProcess, old: ssl.TLSVersion) -> None:
    if not _client_can_speak(old, tls_server.cert_file, tls_server.key_file):
        pytest.skip(f"this machine's OpenSSL cannot speak {old.name} even to a permissive server")
    context = client_context(minimum=old, maximum=old)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        implicit_tls(tls_server.ports["submissions"], context).close()
    with smtplib.SMTP("127.0.0.1", tls_server.ports["submission"], timeout=10) as client:
        client.ehlo("old.example")
        with pytest.raises((ssl.SSLError, ConnectionError, smtplib.SMTPServerDisconnected)):
            client.starttls(context=context)


def test_tls_1_2_uses_aead_with_forward_secrecy(tls_server: ServerProcess) -> None:
    context = client_context(minimum=ssl.TLSVersion.TLSv1_2, maximum=ssl.TLSVersion.TLSv1_2)
    with implicit_tls(tls_server.ports["submissions"], context) as tls:
        assert tls.version() == "TLSv1.2"
        cipher = tls.cipher()
        assert cipher is not None
        assert cipher[0].startswith("ECDHE-") and ("GCM" in cipher[0] or "CHACHA20" in cipher[0])
        banner = tls.recv(1024)
    assert banner.startswith(b"220 mx.example.test ESMTP")
    assert b"postgate" not in banner.lower() and not any(ch.isdigit() for ch in banner[4:].decode())


def test_tls_1_3_only_switch(tmp_path: Path) -> None:
    server = make_server(tmp_path / "pg")
    text = server.config_path.read_text()
    server.config_path.write_text(
        text.replace(
            'key_file = "tls/privkey.pem"', 'key_file = "tls/privkey.pem"\nmin_version = "1.3"'
        )
    )
    server.start()
    try:
        tls12 = client_context(maximum=ssl.TLSVersion.TLSv1_2)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            implicit_tls(server.ports["submissions"], tls12).close()
        with implicit_tls(server.ports["submissions"], client_context()) as tls:
            assert tls.version() == "TLSv1.3"
    finally:
        server.stop()


def test_sni_picks_the_named_certificate(tls_server: ServerProcess) -> None:
    port = tls_server.ports["submissions"]
    other = pem_to_der(tls_server.root / "tls" / "other.pem")
    default = pem_to_der(tls_server.cert_file)
    assert peer_certificate(port, "mail.example.net") == other
    assert peer_certificate(port, "MAIL.example.net") == other
    assert peer_certificate(port, "unknown.example") == default
    assert peer_certificate(port) == default
    with smtplib.SMTP("127.0.0.1", tls_server.ports["submission"], timeout=10) as client:
        client.ehlo("c.example")
        client._host = "mail.example.net"  # smtplib sends SNI for self._host
        client.starttls(context=client_context())
        assert client.sock.getpeercert(binary_form=True) == other


def test_renewed_certificate_is_served_without_restart(tls_server: ServerProcess) -> None:
    port = tls_server.ports["submissions"]
    before = peer_certificate(port)
    # certbot writes new files; simulate with a fresh pair, key first like a renewal.
    staging = tls_server.root / "staging"
    staging.mkdir()
    generate_self_signed(staging / "fullchain.pem", staging / "privkey.pem", "mx.example.test")
    os.replace(staging / "privkey.pem", tls_server.key_file)
    os.replace(staging / "fullchain.pem", tls_server.cert_file)
    renewed = pem_to_der(tls_server.cert_file)
    assert renewed != before
    wait_for(lambda: peer_certificate(port) == renewed, 10.0, "the renewed certificate")
    # STARTTLS on 587 serves it too, and the old session-less server never restarted.
    with smtplib.SMTP("127.0.0.1", tls_server.ports["submission"], timeout=10) as client:
        client.ehlo("c.example")
        client.starttls(context=client_context())
        assert client.sock.getpeercert(binary_form=True) == renewed
    assert tls_server.process is not None and tls_server.process.poll() is None
