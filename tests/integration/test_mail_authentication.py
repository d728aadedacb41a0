"""End to end: postgate DKIM-signs what users submit and ARC-seals what an alias
forwards to another domain; both verify against keys served by a real DNS server."""

from __future__ import annotations

import asyncio
import smtplib
import subprocess
from pathlib import Path

import pytest

from postgate.dkim.keys import KeyStore
from postgate.dkim.verify import verify_dkim
from postgate.dns.resolver import Resolver
from postgate.mailauth.arc import verify_arc
from tests.conftest import BOB, make_server
from tests.dkim.helpers import zone_txt
from tests.fixtures.nsd import running_nsd
from tests.fixtures.scripted_peer import PeerScript, ScriptedPeer
from tests.integration.test_delivery_world import submit
from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow


def keygen(server: ServerProcess, domain: str) -> KeyStore:
    """Keys made the way an operator makes them; published in our NSD at once."""
    result = subprocess.run(
        server.command("dkim", "keygen", domain, "--activate-now"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return KeyStore(server.data_dir / "dkim")


def key_records(keys: KeyStore, domain: str) -> list[tuple[str, str, str]]:
    return [
        (f"{key.selector}._domainkey", "TXT", zone_txt(key.txt_value))
        for key in keys.active_keys(domain)
    ]


async def test_submitted_mail_is_signed_and_forwarded_mail_is_sealed(tmp_path: Path) -> None:
    async with ScriptedPeer(PeerScript()) as peer:
        root = tmp_path / "pg"
        root.mkdir()
        (root / "virtual").write_text("fwd@example.test  friend@dest.test\n")
        server = make_server(root, routing_extra='alias_file = "virtual"', mailauth_extra="")
        keys = keygen(server, "example.test")
        zones = {
            "example.test": key_records(keys, "example.test"),
            "dest.test": [("@", "MX", "10 mx"), ("mx", "A", "127.0.0.1")],
            "sender.test": [("@", "TXT", '"v=spf1 ip4:127.0.0.1 -all"')],
            # The DMARC tree walk asks up to the TLD: it must get NXDOMAIN, not REFUSED.
            "test": [],
        }
        with running_nsd(tmp_path / "nsd", zones) as dns:
            server.delivery_extra = f'dns_servers = ["{dns.nameserver}"]\nsmtp_port = {peer.port}'
            server.write_config()
            await asyncio.to_thread(server.start)
            try:
                # 1. A user's submission, delivered locally, carries our signatures.
                await asyncio.to_thread(submit, server, BOB[0], "signed")
                (delivered,) = await asyncio.to_thread(server.wait_for_delivery, BOB[0])
                # 2. Mail from the internet to an alias that forwards to another domain.
                inbound = (
                    b"From: carol@sender.test\r\nTo: fwd@example.test\r\nSubject: forwarded\r\n"
                    b"Message-ID: <fwd-1@sender.test>\r\n\r\nplease pass this on\r\n"
                )
                await asyncio.to_thread(_send_inbound, server, inbound)
                await peer.wait_for(1, timeout=30)
            finally:
                await asyncio.to_thread(server.stop)
            resolver = Resolver([dns.nameserver])
            signed = delivered.read_bytes().replace(b"\n", b"\r\n")
            # Our delivery headers on top (Return-Path, Delivered-To) are not signed.
            results = await verify_dkim(signed, resolver)
            forwarded = peer.transactions[0].message
            arc = await verify_arc(forwarded, resolver)
    assert sorted((r.algorithm, str(r.result)) for r in results) == [
        ("ed25519-sha256", "pass"),
        ("rsa-sha256", "pass"),
    ], results
    assert {r.domain for r in results} == {"example.test"}
    assert peer.transactions[0].recipients == ["friend@dest.test"]
    assert forwarded.startswith(b"Received: ")  # our trace on top, then the ARC set
    assert b"ARC-Seal: i=1;" in forwarded and b"d=example.test" in forwarded
    assert b"ARC-Authentication-Results: i=1; mx.example.test;" in forwarded
    assert b"spf=pass" in forwarded
    assert arc.status.value == "pass", arc


def _send_inbound(server: ServerProcess, message: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["mx"], timeout=10) as client:
        client.ehlo("mail.sender.test")
        client.sendmail("carol@sender.test", ["fwd@example.test"], message)
