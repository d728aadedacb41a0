"""A real Postfix, configured by the test, relays into our port 25 over STARTTLS."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from tests.conftest import BOB
from tests.fixtures.postfix import PostfixInstance, postfix_binary_or_skip
from tests.integration.test_receive import as_stored, split_delivered
from tests.server_process import DOMAIN, ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.postfix]


def test_postfix_relays_into_our_mx(server: ServerProcess, tmp_path: Path) -> None:
    postfix_binary_or_skip()
    original = (
        b"From: carol@sender.example\r\nTo: bob@example.test\r\nSubject: via postfix\r\n"
        b"Message-ID: <pf-1@sender.example>\r\n\r\n"
        b"Line one.\r\n.leading dot survives\r\n" + b"x" * 900 + b"\r\n"
    )
    with PostfixInstance(tmp_path, relay_routes={DOMAIN: server.ports["mx"]}) as relay:
        with smtplib.SMTP("127.0.0.1", relay.port(), timeout=10) as client:
            client.sendmail("carol@sender.example", [BOB[0]], original)
        files = server.wait_for_delivery(BOB[0], timeout=30)
        relay.wait_for_log(r"status=sent \(250 2\.0\.0 Ok: queued as [0-9A-Z]+\)", timeout=30)
    content = files[0].read_bytes()
    ours, rest = split_delivered(content)
    # Postfix adds its own Received, Date etc.; everything it sent must arrive intact,
    # and our Received header must say the hop was encrypted (ESMTPS).
    assert rest.endswith(as_stored(original.split(b"\r\n\r\n", 1)[1]))
    assert b"Subject: via postfix" in rest
    assert b"ESMTPS" in b"\n".join(ours)
    assert b"Return-Path: <carol@sender.example>" in content
    record = server.wait_for_log(event="accepted", sender="carol@sender.example")
    assert str(record["tls"]).startswith("TLSv1.")
