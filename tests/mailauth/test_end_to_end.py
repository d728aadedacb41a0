"""A real postgate on loopback judging inbound mail with SPF/DMARC from a real NSD.

Skipped until the lead adds the [mailauth] configuration keys and calls
evaluate_inbound at end of DATA on the MX listener (see the mailauth report).
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_server
from tests.fixtures.nsd import NsdServer, running_nsd
from tests.server_process import HOSTNAME, ServerProcess

ZONES = {
    "good.test": [
        ("@", "TXT", '"v=spf1 ip4:127.0.0.0/8 -all"'),
        ("_dmarc", "TXT", '"v=DMARC1; p=reject"'),
    ],
    "forged.test": [
        ("@", "TXT", '"v=spf1 ip4:192.0.2.0/24 -all"'),
        ("_dmarc", "TXT", '"v=DMARC1; p=reject"'),
    ],
    "test": [],
}


@pytest.fixture(scope="module")
def nsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NsdServer]:
    with running_nsd(tmp_path_factory.mktemp("nsd"), ZONES) as server:
        yield server


@pytest.fixture
def server(tmp_path: Path, nsd: NsdServer) -> Iterator[ServerProcess]:
    process = make_server(
        tmp_path / "postgate",
        delivery_extra=f'dns_servers = ["{nsd.nameserver}"]',
        mailauth_extra='dmarc_enforcement = "reject"',
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def message(sender: str) -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <alice@example.test>\r\nSubject: auth\r\n"
        f"Authentication-Results: {HOSTNAME}; dmarc=pass (forged)\r\n\r\nbody\r\n"
    ).encode()


def test_dmarc_reject_and_authentication_results(server: ServerProcess) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["mx"], timeout=10) as client:
        client.ehlo("client.good.test")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@forged.test", ["alice@example.test"], message("a@forged.test"))
        assert refused.value.smtp_code == 550
        assert b"5.7.1" in refused.value.smtp_error
        client.sendmail("b@good.test", ["alice@example.test"], message("b@good.test"))
    (delivered,) = server.wait_for_delivery("alice@example.test")
    content = delivered.read_bytes()
    assert f"Authentication-Results: {HOSTNAME};".encode() in content
    assert b"spf=pass" in content and b"dmarc=pass" in content
    assert b"(forged)" not in content
