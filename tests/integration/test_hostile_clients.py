"""Hostile clients on a real socket: the server answers, never crashes, loses nothing."""

from __future__ import annotations

import random
import smtplib
import socket
import ssl
import time

import pytest

from tests.conftest import BOB
from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow


def converse(port: int, payload: bytes, *, read_for: float = 2.0) -> bytes:
    """Send ``payload`` after the banner and collect what the server says."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        received = sock.recv(4096)
        try:
            sock.sendall(payload)
        except OSError:
            return received  # the server closed on us mid-send: acceptable
        sock.settimeout(0.3)
        deadline = time.monotonic() + read_for
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            received += chunk
        return received


def test_smuggling_yields_one_message_and_no_injected_recipient(server: ServerProcess) -> None:
    smuggle = (
        b"EHLO evil.example\r\nMAIL FROM:<a@evil.example>\r\nRCPT TO:<bob@example.test>\r\n"
        b"DATA\r\n"
        b"Subject: one\r\n\r\nbody\n.\nMAIL FROM:<x@evil.example>\r\n"
        b"RCPT TO:<alice@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nhi\r\n.\r\n"
        b"QUIT\r\n"
    )
    answer = converse(server.ports["mx"], smuggle)
    assert b"354 " in answer
    # The bare LF makes the whole DATA refused (never two messages out of one DATA).
    assert b"250 2.0.0 Ok: queued" not in answer
    assert answer.count(b"\r\n5") >= 1
    time.sleep(0.5)
    assert server.delivered_files("alice@example.test") == []
    assert server.delivered_files(BOB[0]) == []
    server.wait_for_log(event="rejected", client="127.0.0.1")


def test_pipelined_plaintext_after_starttls_is_discarded(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.ports["mx"]), timeout=5) as sock:
        sock.recv(4096)
        sock.sendall(b"EHLO a.example\r\n")
        time.sleep(0.2)
        sock.recv(4096)
        sock.sendall(b"STARTTLS\r\nRSET\r\nMAIL FROM:<inject@evil.example>\r\n")
        reply = sock.recv(4096)
        assert reply.startswith(b"220 ")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with context.wrap_socket(sock) as tls:
            tls.sendall(b"RCPT TO:<bob@example.test>\r\n")
            answer = tls.recv(4096)
    # The injected MAIL must not exist after the handshake: RCPT is out of sequence.
    assert answer.startswith(b"503 5.5.1"), answer


def test_garbage_never_kills_the_server(server: ServerProcess) -> None:
    rng = random.Random(20261203)
    payloads = [
        b"\x00" * 100 + b"\r\n",
        b"A" * 70000 + b"\r\n",
        b"EHLO x\r\nMAIL FROM:<" + b"b" * 5000 + b">\r\n",
        b"EHLO x\r\nBDAT 99999999999999999999 LAST\r\n",
        b"EHLO x\r\nBDAT -1\r\n",
        b"EHLO x\r\nAUTH PLAIN !!!notbase64\r\n",
        b"\xff\xfe\xfd\r\nHELO \xc3\x28\r\n",
        b"EHLO x\r\nMAIL FROM:<a@b> SIZE=abc\r\nRCPT TO:<@@@>\r\n",
        b"\r\n" * 1000,
    ]
    payloads += [
        bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 3000))) for _ in range(20)
    ]
    for payload in payloads:
        converse(server.ports[rng.choice(["mx", "submission"])], payload, read_for=0.3)
        assert server.process is not None and server.process.poll() is None
    # Still fully working afterwards.
    with smtplib.SMTP("127.0.0.1", server.ports["mx"], timeout=10) as client:
        client.sendmail("peer@example.org", [BOB[0]], b"Subject: after the storm\r\n\r\nok\r\n")
    assert server.wait_for_delivery(BOB[0])
    crashes = [r for r in server.log_records() if r.get("event") == "session crashed"]
    assert crashes == []


def test_oversized_header_section_is_refused(server: ServerProcess) -> None:
    # 2 MiB of folded From: addresses, far under the message size limit but over
    # limits.max_header_size: refused before any header parsing can cost anything.
    authors = ",\r\n ".join(f"a{i}@example.org" for i in range(100_000))
    message = f"From: {authors}\r\nSubject: big\r\n\r\nbody\r\n".encode()
    with smtplib.SMTP("127.0.0.1", server.ports["mx"], timeout=30) as client:
        client.ehlo("big.example")
        client.mail("peer@example.org")
        client.rcpt(BOB[0])
        code, text = client.data(message)
        assert (code, text[:5]) == (552, b"5.3.4"), (code, text)
        assert client.noop()[0] == 250  # the session goes on
    record = server.wait_for_log(event="rejected", stage="data", reply="552 5.3.4")
    assert "max_header_size" in str(record["reason"])
