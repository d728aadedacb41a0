"""delivery.remote against scripted peers and a real Postfix MX, all on loopback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import cast

import pytest
import trustme

from postgate.delivery.mx import MxError, MxHost, NullMxError
from postgate.delivery.remote import (
    MxResolver,
    RelayHost,
    RemoteSmtpTransport,
    TlsMode,
    TlsPolicy,
)
from postgate.dns.resolver import Resolver
from postgate.queue.model import DsnNotify, Envelope, EnvelopeRecipient, LeasedRecipient
from postgate.queue.model import RecipientStatus as S
from tests.fixtures.postfix import PostfixInstance, postfix_binary_or_skip
from tests.fixtures.scripted_peer import PeerScript, ScriptedPeer

NO_DNS = cast(Resolver, object())  # the fake MX resolvers below never use it
MESSAGE = (
    b"From: s@origin.test\r\nTo: a@dest.test\r\nSubject: remote\r\n"
    b"Date: Thu, 03 Dec 2026 12:00:00 +0000\r\nMessage-ID: <remote@origin.test>\r\n"
    b"\r\nhello\r\n.dot\r\n"
)


def leased(*addresses: str, queue_id: str = "Q1", **per_rcpt: object) -> list[LeasedRecipient]:
    envelope = Envelope(
        sender="s@origin.test",
        recipients=tuple(EnvelopeRecipient(a) for a in addresses),
        received_at=1.0,
    )
    return [
        LeasedRecipient(
            recipient_id=i,
            queue_id=queue_id,
            address=address,
            original=address,
            notify=cast(frozenset[DsnNotify] | None, per_rcpt.get("notify")),
            orcpt=cast(tuple[str, str] | None, per_rcpt.get("orcpt")),
            attempts=0,
            first_queued_at=1.0,
            lease_until=9e9,
            envelope=envelope,
        )
        for i, address in enumerate(addresses)
    ]


def fake_mx(*hosts: MxHost, error: MxError | None = None) -> MxResolver:
    async def resolve(
        resolver: Resolver,
        domain: str,
        *,
        local_names: Collection[str],
        local_addresses: Collection[str] = (),
    ) -> list[MxHost]:
        if error is not None:
            raise error
        return list(hosts)

    return resolve


def mx(name: str, *addresses: str, preference: int = 10) -> MxHost:
    return MxHost(name, preference, addresses or ("127.0.0.1",), implicit=False)


def transport(port: int, *hosts: MxHost, **options: object) -> RemoteSmtpTransport:
    resolver = cast(MxResolver, options.pop("mx_resolver", None)) or fake_mx(
        *(hosts or (mx("mx.dest.test"),))
    )
    return RemoteSmtpTransport(
        NO_DNS,
        local_hostname="out.ours.test",
        mx_resolver=resolver,
        port=port,
        connect_timeout=5,
        command_timeout=5,
        **options,
    )


# -- outcomes -----------------------------------------------------------------------------


async def test_delivers_with_pipelining_and_reports_the_host() -> None:
    async with ScriptedPeer() as peer:
        remote = transport(peer.port)
        results = await remote.deliver(MESSAGE, leased("a@dest.test", "b@dest.test"))
        await remote.close()
    assert [r.status for r in results] == [S.DELIVERED, S.DELIVERED]
    assert results[0].remote_host == "mx.dest.test"
    assert results[0].remote_address == "127.0.0.1"
    assert results[0].enhanced_status == "2.0.0"
    assert results[0].reply.startswith("250 2.0.0")
    assert peer.transactions[0].message == MESSAGE
    assert any(b"MAIL FROM" in r and b"RCPT TO" in r and b"DATA\r\n" in r for r in peer.reads)


async def test_per_recipient_temporary_and_permanent_replies() -> None:
    script = PeerScript(rcpt=["451 4.3.0 try later", "451 4.3.0 try later", "250 2.1.5 ok"])
    async with ScriptedPeer(script) as peer:
        remote = transport(peer.port)
        first = await remote.deliver(MESSAGE, leased("a@dest.test", "b@dest.test", "c@dest.test"))
        peer.script.rcpt.append("550 5.1.1 <a@dest.test>: no such user")
        second = await remote.deliver(MESSAGE, leased("a@dest.test"))
        await remote.close()
    assert [r.status for r in first] == [S.DEFERRED, S.DEFERRED, S.DELIVERED]
    assert first[0].reply == "451 4.3.0 try later" and first[0].enhanced_status == "4.3.0"
    assert second[0].status is S.BOUNCED
    assert second[0].enhanced_status == "5.1.1"
    assert "no such user" in second[0].reply
    assert peer.connections == 1  # the second message reused the session


async def test_first_mx_down_second_up() -> None:
    async with ScriptedPeer() as peer:
        hosts = (mx("mx1.dest.test", "127.0.0.2", preference=10), mx("mx2.dest.test"))
        remote = transport(peer.port, *hosts)
        results = await remote.deliver(MESSAGE, leased("a@dest.test"))
        await remote.close()
    assert results[0].status is S.DELIVERED
    assert results[0].remote_host == "mx2.dest.test"


async def test_421_greeting_moves_to_the_next_host() -> None:
    async with (
        ScriptedPeer(PeerScript(greeting="421 4.3.2 busy")) as busy,
        ScriptedPeer(host="127.0.0.2", port=busy.port) as good,
    ):
        hosts = (mx("busy.dest.test"), mx("good.dest.test", "127.0.0.2", preference=20))
        remote = transport(busy.port, *hosts)
        results = await remote.deliver(MESSAGE, leased("a@dest.test"))
        await remote.close()
    assert results[0].status is S.DELIVERED
    assert results[0].remote_host == "good.dest.test"
    assert busy.connections == 1 and len(good.transactions) == 1


async def test_all_hosts_down_defers_with_the_last_error() -> None:
    async with ScriptedPeer() as closed:
        port = closed.port
    remote = transport(port, mx("mx1.dest.test"), mx("mx2.dest.test", "127.0.0.2"))
    results = await remote.deliver(MESSAGE, leased("a@dest.test", "b@dest.test"))
    assert [r.status for r in results] == [S.DEFERRED, S.DEFERRED]
    assert results[0].enhanced_status == "4.4.1"
    assert results[0].remote_host == "mx2.dest.test"
    assert "mx2.dest.test[127.0.0.2]" in results[0].reply


async def test_every_host_refusing_permanently_bounces() -> None:
    async with ScriptedPeer(PeerScript(greeting="554 5.7.1 go away")) as peer:
        remote = transport(peer.port)
        results = await remote.deliver(MESSAGE, leased("a@dest.test"))
    assert results[0].status is S.BOUNCED
    assert results[0].enhanced_status == "5.7.1"
    assert "554 5.7.1 go away" in results[0].reply


@pytest.mark.parametrize(
    ("error", "status", "enhanced"),
    [
        (NullMxError("dest.test"), S.BOUNCED, "5.1.10"),
        (MxError(temporary=True, enhanced="4.4.3", text="SERVFAIL"), S.DEFERRED, "4.4.3"),
    ],
)
async def test_mx_errors_become_results(error: MxError, status: S, enhanced: str) -> None:
    remote = transport(1, mx_resolver=fake_mx(error=error))
    results = await remote.deliver(MESSAGE, leased("a@dest.test"))
    assert (results[0].status, results[0].enhanced_status) == (status, enhanced)


async def test_recipients_of_two_domains_keep_their_order() -> None:
    async with ScriptedPeer(PeerScript(rcpt=["250 ok", "550 5.1.1 no", "250 ok"])) as peer:
        remote = transport(peer.port)
        results = await remote.deliver(MESSAGE, leased("a@one.test", "b@two.test", "c@one.test"))
        await remote.close()
    assert [r.status for r in results] == [S.DELIVERED, S.DELIVERED, S.BOUNCED]
    assert [t.recipients for t in peer.transactions] == [["a@one.test"], ["b@two.test"]]


async def test_dsn_parameters_passed_on_when_offered() -> None:
    async with ScriptedPeer(PeerScript(extensions=("PIPELINING", "DSN"))) as peer:
        remote = transport(peer.port)
        rcpts = leased(
            "a@dest.test",
            notify=frozenset({DsnNotify.FAILURE, DsnNotify.DELAY}),
            orcpt=("rfc822", "a+x@dest.test"),
        )
        await remote.deliver(MESSAGE, rcpts)
        await remote.close()
    assert peer.transactions[0].rcpt_lines == [
        "RCPT TO:<a@dest.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;a+2Bx@dest.test"
    ]


# -- connection pool ----------------------------------------------------------------------


async def test_concurrency_cap_and_reuse_for_one_destination() -> None:
    async with ScriptedPeer() as peer:
        remote = transport(peer.port, max_connections_per_destination=2)
        batches = [
            remote.deliver(MESSAGE, leased("a@dest.test", queue_id=f"Q{i}")) for i in range(20)
        ]
        results = await asyncio.gather(*batches)
        await remote.close()
    assert all(r[0].status is S.DELIVERED for r in results)
    assert len(peer.transactions) == 20
    assert peer.max_concurrent <= 2
    assert peer.connections < 20
    # Each reused session went straight to its next MAIL (RFC 5321 4.1.1.4).
    assert "RSET" not in peer.commands
    assert sum(c.startswith("MAIL") for c in peer.commands) == 20


async def test_idle_sessions_are_closed_with_quit() -> None:
    async with ScriptedPeer() as peer:
        remote = transport(peer.port, idle_seconds=0.05)
        await remote.deliver(MESSAGE, leased("a@dest.test"))
        async with asyncio.timeout(5):
            while peer.open_connections:
                await asyncio.sleep(0.01)
    assert peer.commands[-1] == "QUIT"


async def test_a_parked_session_the_peer_closes_is_replaced() -> None:
    # The peer answers the second MAIL on the reused session with 421 (closing).
    async with ScriptedPeer(PeerScript(mail=["250 2.1.0 Ok", "421 4.4.2 closing"])) as peer:
        remote = transport(peer.port)
        await remote.deliver(MESSAGE, leased("a@dest.test"))
        results = await remote.deliver(MESSAGE, leased("b@dest.test"))
        await remote.close()
    assert results[0].status is S.DELIVERED
    assert peer.connections == 2
    assert [t.recipients for t in peer.transactions] == [["a@dest.test"], ["b@dest.test"]]


async def test_a_session_left_in_a_transaction_gets_rset_and_is_replaced_if_broken() -> None:
    # Every recipient of the first message is refused: MAIL stays open on the peer, so
    # the session needs RSET before reuse; the peer refuses that, so a new one is used.
    script = PeerScript(rcpt=["550 5.1.1 no such user"], rset=["421 4.4.2 closing"])
    async with ScriptedPeer(script) as peer:
        remote = transport(peer.port)
        first = await remote.deliver(MESSAGE, leased("gone@dest.test"))
        results = await remote.deliver(MESSAGE, leased("b@dest.test"))
        await remote.close()
    assert first[0].status is S.BOUNCED
    assert "RSET" in peer.commands
    assert results[0].status is S.DELIVERED
    assert peer.connections == 2


# -- TLS and relay ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA, name: str = "mx.dest.test") -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return context


def verify_policy(ca: trustme.CA, mode: TlsMode = TlsMode.VERIFY) -> TlsPolicy:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return TlsPolicy(per_destination={"dest.test": mode}, verify_context=context)


async def test_opportunistic_tls_needs_no_valid_certificate(ca: trustme.CA) -> None:
    async with ScriptedPeer(PeerScript(tls_context=server_tls(ca, "wrong.test"))) as peer:
        remote = transport(peer.port)
        results = await remote.deliver(MESSAGE, leased("a@dest.test"))
        await remote.close()
    assert results[0].status is S.DELIVERED
    assert results[0].tls_version == "TLSv1.3"
    assert peer.transactions[0].tls


async def test_verified_tls(ca: trustme.CA) -> None:
    async with ScriptedPeer(PeerScript(tls_context=server_tls(ca))) as peer:
        remote = transport(peer.port, tls_policy=verify_policy(ca))
        results = await remote.deliver(MESSAGE, leased("a@dest.test"))
        await remote.close()
    assert (results[0].status, results[0].tls_version) == (S.DELIVERED, "TLSv1.3")


async def test_verified_tls_with_a_bad_certificate_defers(ca: trustme.CA) -> None:
    async with ScriptedPeer(PeerScript(tls_context=server_tls(ca, "other.test"))) as peer:
        remote = transport(peer.port, tls_policy=verify_policy(ca))
        results = await remote.deliver(MESSAGE, leased("a@dest.test"))
    assert (results[0].status, results[0].enhanced_status) == (S.DEFERRED, "4.7.5")
    assert peer.transactions == []


async def test_verified_tls_without_starttls_defers(ca: trustme.CA) -> None:
    async with ScriptedPeer() as peer:
        remote = transport(peer.port, tls_policy=verify_policy(ca))
        results = await remote.deliver(MESSAGE, leased("a@dest.test"))
    assert (results[0].status, results[0].enhanced_status) == (S.DEFERRED, "4.7.10")
    assert peer.transactions == []


async def test_relay_host_with_auth_skips_mx_lookup(ca: trustme.CA) -> None:
    script = PeerScript(tls_context=server_tls(ca, "relay.test"), auth_users={"u": "pw"})
    async with ScriptedPeer(script) as peer:
        relay = RelayHost.parse(f"[127.0.0.1]:{peer.port}", username="u", password="pw")
        never = fake_mx(error=MxError(temporary=False, enhanced="5.1.2", text="no lookup"))
        remote = RemoteSmtpTransport(
            NO_DNS, local_hostname="out.ours.test", relay_host=relay, mx_resolver=never
        )
        results = await remote.deliver(MESSAGE, leased("a@elsewhere.test"))
        await remote.close()
    assert results[0].status is S.DELIVERED
    assert results[0].tls_version == "TLSv1.3"
    starttls_at = peer.commands.index("STARTTLS")
    assert any(c.startswith("AUTH PLAIN") for c in peer.commands[starttls_at:])


async def test_relay_auth_failure_defers(ca: trustme.CA) -> None:
    script = PeerScript(tls_context=server_tls(ca), auth_users={"u": "pw"})
    async with ScriptedPeer(script) as peer:
        relay = RelayHost("127.0.0.1", peer.port, username="u", password="bad")
        remote = RemoteSmtpTransport(NO_DNS, local_hostname="o.test", relay_host=relay)
        results = await remote.deliver(MESSAGE, leased("a@elsewhere.test"))
    assert (results[0].status, results[0].enhanced_status) == (S.DEFERRED, "4.7.8")
    assert peer.transactions == []


async def test_relay_credentials_never_sent_in_clear_text() -> None:
    async with ScriptedPeer(PeerScript(auth_users={"u": "pw"})) as peer:
        relay = RelayHost("127.0.0.1", peer.port, username="u", password="pw")
        remote = RemoteSmtpTransport(NO_DNS, local_hostname="o.test", relay_host=relay)
        results = await remote.deliver(MESSAGE, leased("a@elsewhere.test"))
    assert (results[0].status, results[0].enhanced_status) == (S.DEFERRED, "4.7.10")
    assert not any(command.startswith("AUTH") for command in peer.commands)


async def test_cancelled_delivery_closes_its_connection() -> None:
    greeted, closed = asyncio.Event(), asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 slow.test\r\n")  # ...and never answer EHLO
        greeted.set()
        await reader.read()  # returns at EOF: the client closed
        closed.set()
        writer.close()

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    async with server:
        remote = transport(server.sockets[0].getsockname()[1])
        task = asyncio.create_task(remote.deliver(MESSAGE, leased("a@dest.test")))
        await greeted.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with asyncio.timeout(5):
            await closed.wait()


def test_relay_host_parse() -> None:
    assert RelayHost.parse("[smtp.example.net]:587") == RelayHost("smtp.example.net", 587)
    assert RelayHost.parse("smtp.example.net").port == 25


# -- the real thing: Postfix as the MX ------------------------------------------------------


@pytest.fixture
def postfix_mx(tmp_path: Path) -> Iterator[PostfixInstance]:
    postfix_binary_or_skip()
    with PostfixInstance(
        tmp_path, mailboxes=["rcpt@dest.test"], hostname="mx.dest.test"
    ) as instance:
        yield instance


@pytest.mark.postfix
@pytest.mark.parametrize("mode", [TlsMode.MAY, TlsMode.VERIFY])
async def test_postfix_mx_receives_byte_for_byte_over_tls(
    postfix_mx: PostfixInstance, mode: TlsMode
) -> None:
    remote = transport(postfix_mx.port(), tls_policy=verify_policy(postfix_mx.ca, mode))
    results = await remote.deliver(MESSAGE, leased("rcpt@dest.test"))
    await remote.close()
    assert results[0].status is S.DELIVERED, results[0]
    assert results[0].tls_version == "TLSv1.3"
    (stored,) = await postfix_mx.wait_for_maildir_async("rcpt@dest.test")
    assert stored.endswith(MESSAGE.replace(b"\r\n", b"\n"))
    await postfix_mx.wait_for_log_async(r"TLS connection established from \S+: TLSv1\.3")
    await postfix_mx.wait_for_log_async(r"to=<rcpt@dest\.test>, relay=virtual.*status=sent")


@pytest.mark.postfix
async def test_postfix_mx_large_message_via_bdat(postfix_mx: PostfixInstance) -> None:
    body = b"".join(b".line %d with a leading dot\r\n" % i for i in range(5000))
    large = MESSAGE + body  # ~150 KB: over the chunking threshold
    remote = transport(postfix_mx.port())
    results = await remote.deliver(large, leased("rcpt@dest.test"))
    await remote.close()
    assert results[0].status is S.DELIVERED, results[0]
    (stored,) = await postfix_mx.wait_for_maildir_async("rcpt@dest.test")
    assert stored.endswith(large.replace(b"\r\n", b"\n"))
    await postfix_mx.wait_for_log_async(r"rcpt=1 bdat=1 quit=1")
