"""End to end: postgate delivers to the world — MX from a real DNS server (NSD), remote
peers that are a real Postfix or a scripted SMTP server, retries, DSNs, reuse, crashes.

Every MX host listens on the same port (``delivery.smtp_port`` in the test config) at
different loopback addresses; an address where nothing listens plays a dead MX.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import smtplib
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
import trustme

from tests.conftest import ALICE, make_server
from tests.fixtures.nsd import NsdServer, running_nsd
from tests.fixtures.postfix import PostfixInstance, postfix_binary_or_skip
from tests.fixtures.scripted_peer import PeerScript, ScriptedPeer
from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow

ZONES = {
    "dest.test": [("@", "MX", "10 mx1"), ("mx1", "A", "127.0.0.1")],
    "twomx.test": [
        ("@", "MX", "10 down"),
        ("@", "MX", "20 up"),
        ("down", "A", "127.0.0.3"),
        ("up", "A", "127.0.0.1"),
    ],
    "nullmx.test": [("@", "MX", "0 .")],
    "implicit.test": [("@", "A", "127.0.0.1")],
}


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NsdServer]:
    with running_nsd(tmp_path_factory.mktemp("nsd"), ZONES) as server:
        yield server


def world_server(
    root: Path, dns: NsdServer, mx_port: int, delivery_extra: str = ""
) -> ServerProcess:
    return make_server(
        root,
        queue_extra='retry_schedule = ["1s"]',
        delivery_extra=(
            f'dns_servers = ["{dns.nameserver}"]\nsmtp_port = {mx_port}\n'
            f'connection_reuse_time = "2s"\n{delivery_extra}'
        ),
    )


def insecure_context() -> ssl.SSLContext:
    # Our test server's certificate is self-signed; the SMTP side is the point here.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def submit(server: ServerProcess, recipient: str, subject: str, body: str = "Hello.\r\n") -> str:
    """Alice submits on 587 with STARTTLS + AUTH; returns the queue id."""
    context = insecure_context()
    message = (
        f"From: {ALICE[0]}\r\nTo: {recipient}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@example.test>\r\n\r\n{body}"
    ).encode()
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as client:
        client.starttls(context=context)
        client.login(*ALICE)
        client.mail(ALICE[0])
        client.rcpt(recipient)
        code, reply = client.data(message)
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[-1]


async def started(server: ServerProcess) -> ServerProcess:
    await asyncio.to_thread(server.start)
    return server


def parse_dsn(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert message.get_content_type() == "multipart/report"
    return message


def dsn_fields(message: EmailMessage) -> str:
    status = next(p for p in message.walk() if p.get_content_type() == "message/delivery-status")
    return "\n".join(str(part) for part in status.get_payload())  # type: ignore[union-attr]


@pytest.mark.postfix
def test_submission_delivered_to_postfix_mx_over_tls(dns: NsdServer, tmp_path: Path) -> None:
    postfix_binary_or_skip()
    with PostfixInstance(tmp_path / "pf", mailboxes=["rcpt@dest.test"]) as postfix:
        server = world_server(tmp_path / "pg", dns, postfix.port())
        server.start()
        try:
            body = "Line one.\r\n.dot line\r\n" + "y" * 990 + "\r\n"
            queue_id = submit(server, "rcpt@dest.test", "to-postfix", body)
            stored = postfix.wait_for_maildir("rcpt@dest.test", timeout=30)[0]
            record = server.wait_for_log(event="delivery", queue_id=queue_id)
        finally:
            server.stop()
        postfix.wait_for_log(r"TLS connection established from \S+: TLSv1\.[23]")
    assert stored.replace(b"\r\n", b"\n").endswith(body.replace("\r\n", "\n").encode())
    assert b"Subject: to-postfix" in stored
    assert (
        b"by mx.example.test (postgate)" in stored
        and b"with ESMTPSA id " + queue_id.encode() in stored
    )
    assert record["status"] == "delivered"
    assert record["relay"] == "mx1.dest.test" and str(record["tls"]).startswith("TLSv1.")
    assert "250" in str(record["reply"])
    rows = server.status_rows(queue_id)
    assert [r["status"] for r in rows] == ["delivered"]
    assert rows[0]["remote_host"] == "mx1.dest.test" and rows[0]["tls_version"].startswith("TLSv1.")


async def test_451_twice_then_delivered_on_third_attempt(dns: NsdServer, tmp_path: Path) -> None:
    script = PeerScript(rcpt=["451 4.3.0 busy, try later", "451 4.3.0 still busy"])
    async with ScriptedPeer(script) as peer:
        server = await started(world_server(tmp_path / "pg", dns, peer.port))
        try:
            queue_id = await asyncio.to_thread(submit, server, "rcpt@dest.test", "retry")
            await peer.wait_for(1, timeout=30)
            await asyncio.to_thread(
                server.wait_for_log, 20.0, event="delivery", queue_id=queue_id, status="delivered"
            )
        finally:
            await asyncio.to_thread(server.stop)
    statuses = [row["status"] for row in server.status_rows(queue_id)]
    assert statuses == ["deferred", "deferred", "delivered"]
    assert "451 4.3.0 busy, try later" in server.status_rows(queue_id)[0]["reply"]
    assert len(peer.transactions) == 1


async def test_550_bounces_with_the_remote_text(dns: NsdServer, tmp_path: Path) -> None:
    script = PeerScript(rcpt=["550 5.1.1 <rcpt@dest.test>: user has left the building"])
    async with ScriptedPeer(script) as peer:
        server = await started(world_server(tmp_path / "pg", dns, peer.port))
        try:
            queue_id = await asyncio.to_thread(submit, server, "rcpt@dest.test", "bounce-me")
            files = await asyncio.to_thread(server.wait_for_delivery, ALICE[0], 1, 30.0)
        finally:
            await asyncio.to_thread(server.stop)
    assert len(files) == 1
    dsn = parse_dsn(files[0])
    assert dsn["From"].addresses[0].username == "MAILER-DAEMON"
    assert b"Return-Path: <>" in files[0].read_bytes()
    fields = dsn_fields(dsn)
    assert "Action: failed" in fields and "Status: 5.1.1" in fields
    assert "user has left the building" in fields
    assert re.search(r"Remote-MTA: dns; ?mx1\.dest\.test", fields)
    assert "user has left the building" in str(dsn.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    assert [r["status"] for r in server.status_rows(queue_id)] == ["bounced"]
    assert peer.transactions == []


async def test_first_mx_down_second_mx_used(dns: NsdServer, tmp_path: Path) -> None:
    async with ScriptedPeer(PeerScript()) as peer:
        server = await started(world_server(tmp_path / "pg", dns, peer.port))
        try:
            queue_id = await asyncio.to_thread(submit, server, "someone@twomx.test", "two-mx")
            await peer.wait_for(1, timeout=30)
            record = await asyncio.to_thread(
                server.wait_for_log, 20.0, event="delivery", queue_id=queue_id
            )
        finally:
            await asyncio.to_thread(server.stop)
    assert record["status"] == "delivered"
    assert record["relay"] == "up.twomx.test"
    assert peer.transactions[0].recipients == ["someone@twomx.test"]


async def test_null_mx_bounces_at_once(dns: NsdServer, tmp_path: Path) -> None:
    async with ScriptedPeer(PeerScript()) as peer:
        server = await started(world_server(tmp_path / "pg", dns, peer.port))
        try:
            queue_id = await asyncio.to_thread(submit, server, "anyone@nullmx.test", "null-mx")
            files = await asyncio.to_thread(server.wait_for_delivery, ALICE[0], 1, 30.0)
        finally:
            await asyncio.to_thread(server.stop)
    fields = dsn_fields(parse_dsn(files[0]))
    assert "Status: 5.1.10" in fields and "Action: failed" in fields
    rows = server.status_rows(queue_id)
    assert [r["status"] for r in rows] == ["bounced"]  # one attempt: no retries
    assert peer.connections == 0


async def test_implicit_mx_from_a_record(dns: NsdServer, tmp_path: Path) -> None:
    async with ScriptedPeer(PeerScript()) as peer:
        server = await started(world_server(tmp_path / "pg", dns, peer.port))
        try:
            await asyncio.to_thread(submit, server, "x@implicit.test", "implicit")
            await peer.wait_for(1, timeout=30)
        finally:
            await asyncio.to_thread(server.stop)
    assert peer.transactions[0].recipients == ["x@implicit.test"]


@pytest.mark.postfix
def test_twenty_messages_share_few_connections(dns: NsdServer, tmp_path: Path) -> None:
    postfix_binary_or_skip()
    with PostfixInstance(tmp_path / "pf", mailboxes=["rcpt@dest.test"]) as postfix:
        server = world_server(
            tmp_path / "pg", dns, postfix.port(), "max_connections_per_destination = 2\n"
        )
        server.start()
        try:
            # One quick session of 20 transactions: the queue fills faster than one
            # connection drains it, so the concurrency limit is what holds it at 2.
            with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as client:
                client.starttls(context=insecure_context())
                client.login(*ALICE)
                for number in range(20):
                    client.sendmail(
                        ALICE[0],
                        ["rcpt@dest.test"],
                        f"Subject: bulk-{number}\r\n\r\nbody {number}\r\n".encode(),
                    )
            postfix.wait_for_maildir("rcpt@dest.test", count=20, timeout=60)
        finally:
            server.stop()
        log = postfix.log_text()
    events = re.findall(r"/smtpd\[\d+\]: (connect|disconnect) from", log)
    opened, most = 0, 0
    for kind in events:
        opened += 1 if kind == "connect" else -1
        most = max(most, opened)
    # Connections that carried mail (the fixture's readiness probe carried none).
    carrying = re.findall(r"/smtpd\[\d+\]: disconnect from .* mail=(\d+)", log)
    assert 1 <= len(carrying) < 20, carrying
    assert sum(int(count) for count in carrying) == 20
    assert most <= 2, most


async def test_sigkill_during_delivery_loses_nothing(dns: NsdServer, tmp_path: Path) -> None:
    """Killed while the peer holds back its reply to the end of data: after restart
    the message is delivered again. The peer never acknowledged the first copy, so it
    counts one delivery. (The unavoidable window: a peer that *did* answer 250 just
    before the kill, before our status row was committed, gets the message twice.)"""
    gate = asyncio.Event()
    async with ScriptedPeer(PeerScript(hold_final=[gate])) as peer:
        server = await started(world_server(tmp_path / "pg", dns, peer.port))
        try:
            queue_id = await asyncio.to_thread(submit, server, "rcpt@dest.test", "in-flight")
            async with asyncio.timeout(20):
                while not peer.held:
                    await asyncio.sleep(0.01)
            await asyncio.to_thread(server.kill)
            await asyncio.to_thread(server.start)
            await peer.wait_for(1, timeout=30)
            await asyncio.to_thread(
                server.wait_for_log, 20.0, event="delivery", queue_id=queue_id, status="delivered"
            )
            # Counted before the held first copy is released: its client died, so a
            # real peer would have discarded that transaction.
            acknowledged = list(peer.transactions)
        finally:
            gate.set()
            await asyncio.to_thread(server.stop)
    assert len(acknowledged) == 1
    assert acknowledged[0].message.endswith(b"Hello.\r\n")
    assert [r["status"] for r in server.status_rows(queue_id)][-1] == "delivered"


async def test_sender_domain_relay_host_with_auth(dns: NsdServer, tmp_path: Path) -> None:
    """Mail from example.test goes through its configured relay host with AUTH over
    STARTTLS (never MX), whatever the recipient domain."""
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("relay.test").configure_cert(tls)
    script = PeerScript(tls_context=tls, auth_users={"relay-user": "relay-secret"})
    async with ScriptedPeer(script) as relay, ScriptedPeer(PeerScript()) as mx:
        root = tmp_path / "pg"
        root.mkdir()
        (root / "relay-password").write_text("relay-secret\n")
        server = await started(
            world_server(
                root,
                dns,
                mx.port,
                'relay_username = "relay-user"\nrelay_password_file = "relay-password"\n'
                f'sender_relay_hosts = {{ "example.test" = "[127.0.0.1]:{relay.port}" }}\n',
            )
        )
        try:
            queue_id = await asyncio.to_thread(submit, server, "rcpt@dest.test", "via-relay")
            await relay.wait_for(1, timeout=30)
            record = await asyncio.to_thread(
                server.wait_for_log, 20.0, event="delivery", queue_id=queue_id
            )
        finally:
            await asyncio.to_thread(server.stop)
    transaction = relay.transactions[0]
    assert transaction.tls and transaction.recipients == ["rcpt@dest.test"]
    assert transaction.sender == ALICE[0]
    assert any(command.upper().startswith("AUTH") for command in relay.commands)
    assert record["status"] == "delivered"
    assert mx.connections == 0
