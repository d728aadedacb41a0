"""delivery.smtp_client against a scripted SMTP peer on loopback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from postgate.delivery.smtp_client import SmtpClient, SmtpClientError, SmtpReply, xtext
from postgate.delivery.smtp_wire import normalize_line_ends, prepare_for_data
from postgate.queue.model import BodyType, DsnRet
from tests.fixtures.scripted_peer import PeerScript, ScriptedPeer

MESSAGE = b"Subject: hi\r\n\r\nline one\r\n.dot line\r\nlast\r\n"
NO_PIPELINING = ("8BITMIME", "SIZE 1000000", "ENHANCEDSTATUSCODES")


async def _client(peer: ScriptedPeer, timeout: float = 5.0) -> SmtpClient:
    return await SmtpClient.connect(
        "127.0.0.1", peer.port, local_hostname="client.test", timeout=timeout
    )


@pytest.fixture
async def peer() -> AsyncIterator[ScriptedPeer]:
    async with ScriptedPeer() as running:
        yield running


# -- framing ------------------------------------------------------------------------------


def test_prepare_for_data_normalises_and_dot_stuffs() -> None:
    raw = b".first\nsecond\r\n.\rthird\n..x"
    assert prepare_for_data(raw) == b"..first\r\nsecond\r\n..\r\nthird\r\n...x\r\n.\r\n"
    assert prepare_for_data(b"") == b".\r\n"


@given(st.binary(max_size=300))
def test_data_framing_round_trips_through_unstuffing(raw: bytes) -> None:
    wire = prepare_for_data(raw)
    framed = b"\r\n" + wire
    # The first end-of-data marker is the one we appended: nothing inside can end early.
    assert framed.find(b"\r\n.\r\n") == len(framed) - 5
    body = framed[:-3].replace(b"\r\n.", b"\r\n")[2:]
    expected = normalize_line_ends(raw)
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert body == expected
    assert b"\r" not in body.replace(b"\r\n", b"") and b"\n" not in body.replace(b"\r\n", b"")


def test_reply_values() -> None:
    reply = SmtpReply(550, ("5.1.1 no such user", "really"))
    assert (reply.enhanced, reply.text, reply.is_permanent) == (
        "5.1.1",
        "no such user really",
        True,
    )
    assert str(reply) == "550 5.1.1 no such user really"
    assert SmtpReply(250, ("4.1.1 mismatch",)).enhanced == ""  # RFC 3463: class must agree
    assert SmtpReply(451, ("busy",)).is_temporary
    assert xtext("a+b=c d") == "a+2Bb+3Dc+20d"


# -- transactions -------------------------------------------------------------------------


async def test_pipelined_transaction_in_one_write(peer: ScriptedPeer) -> None:
    client = await _client(peer)
    assert "PIPELINING" in client.extensions
    result = await client.send_transaction(
        "from@origin.test", [("a@dest.test", ""), ("b@dest.test", "NOTIFY=NEVER")], MESSAGE
    )
    await client.quit()

    assert result.pipelined and not result.used_bdat
    assert [r.code for r in result.recipient_outcomes()] == [250, 250]
    assert result.final_reply is not None and result.final_reply.code == 250
    group = [read for read in peer.reads if b"MAIL FROM" in read]
    assert len(group) == 1, peer.reads
    assert group[0] == (
        b"MAIL FROM:<from@origin.test> SIZE=42\r\nRCPT TO:<a@dest.test>\r\n"
        b"RCPT TO:<b@dest.test> NOTIFY=NEVER\r\nDATA\r\n"
    )
    assert peer.transactions[0].message == MESSAGE
    assert peer.transactions[0].recipients == ["a@dest.test", "b@dest.test"]


async def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    async with ScriptedPeer(PeerScript(extensions=NO_PIPELINING)) as peer:
        client = await _client(peer)
        result = await client.send_transaction("s@o.test", [("a@d.test", "")], MESSAGE)
        await client.quit()
    assert not result.pipelined
    assert result.final_reply is not None and result.final_reply.code == 250
    assert not any(b"MAIL" in read and b"RCPT" in read for read in peer.reads)
    assert peer.transactions[0].message == MESSAGE


async def test_bare_lf_and_dots_arrive_normalised(peer: ScriptedPeer) -> None:
    client = await _client(peer)
    await client.send_transaction("s@o.test", [("a@d.test", "")], b"A: b\n\n.\n..two\nend")
    await client.quit()
    assert peer.transactions[0].message == b"A: b\r\n\r\n.\r\n..two\r\nend\r\n"
    assert b"\r\n..\r\n...two\r\nend\r\n.\r\n" in bytes(peer.streams[0])


async def test_per_recipient_replies() -> None:
    script = PeerScript(rcpt=["451 4.3.0 busy", "550 5.1.1 no such user", "250 2.1.5 ok"])
    async with ScriptedPeer(script) as peer:
        client = await _client(peer)
        rcpts = [("a@d.test", ""), ("b@d.test", ""), ("c@d.test", "")]
        result = await client.send_transaction("s@o.test", rcpts, MESSAGE)
        await client.quit()
    outcomes = result.recipient_outcomes()
    assert [r.code for r in outcomes] == [451, 550, 250]
    assert outcomes[1].enhanced == "5.1.1" and outcomes[1].text == "no such user"
    assert peer.transactions[0].recipients == ["c@d.test"]


async def test_all_recipients_refused_sends_no_message() -> None:
    script = PeerScript(rcpt=["550 5.1.1 no", "550 5.1.1 no"])
    async with ScriptedPeer(script) as peer:
        client = await _client(peer)
        result = await client.send_transaction(
            "s@o.test", [("a@d.test", ""), ("b@d.test", "")], MESSAGE
        )
        assert result.final_reply is None
        assert (await client.rset()).code == 250
        assert client.is_usable
        await client.quit()
    assert peer.transactions == []
    assert b"line one" not in bytes(peer.streams[0])


async def test_mail_refused_is_every_recipients_outcome() -> None:
    async with ScriptedPeer(PeerScript(mail=["553 5.7.1 sender rejected"])) as peer:
        client = await _client(peer)
        result = await client.send_transaction(
            "s@o.test", [("a@d.test", ""), ("b@d.test", "")], MESSAGE
        )
        await client.quit()
    assert [str(r) for r in result.recipient_outcomes()] == ["553 5.7.1 sender rejected"] * 2


async def test_bdat_when_chunking_offered_and_message_large() -> None:
    script = PeerScript(extensions=("PIPELINING", "CHUNKING", "8BITMIME", "SIZE 0"))
    big = b"Subject: big\r\n\r\n" + b".starts with a dot\nx\r\n" * 100_000
    async with ScriptedPeer(script) as peer:
        client = await _client(peer)
        result = await client.send_transaction("s@o.test", [("a@d.test", "")], big)
        small = await client.send_transaction("s@o.test", [("a@d.test", "")], MESSAGE)
        await client.quit()
    assert result.used_bdat and not small.used_bdat
    assert result.final_reply is not None and result.final_reply.code == 250
    assert peer.transactions[0].via_bdat
    assert peer.transactions[0].message == big.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert b"BDAT" in bytes(peer.streams[0]) and b"LAST\r\n" in bytes(peer.streams[0])
    assert peer.transactions[1].message == MESSAGE


async def test_binarymime_sent_raw_via_bdat() -> None:
    script = PeerScript(extensions=("CHUNKING", "BINARYMIME", "8BITMIME"))
    raw = b"Content-Type: application/octet-stream\r\n\r\n\x00\xff\n\r bytes"
    async with ScriptedPeer(script) as peer:
        client = await _client(peer)
        result = await client.send_transaction(
            "s@o.test", [("a@d.test", "")], raw, body_type=BodyType.BINARY_MIME
        )
        await client.quit()
    assert result.used_bdat
    assert peer.transactions[0].message == raw
    assert peer.transactions[0].mail_line.endswith("BODY=BINARYMIME")


async def test_smtputf8_needed_but_not_offered_fails_before_sending(peer: ScriptedPeer) -> None:
    client = await _client(peer)
    result = await client.send_transaction("s@o.test", [("jörg@d.test", "")], MESSAGE)
    await client.quit()
    (outcome,) = result.recipient_outcomes()
    assert outcome.code == 553 and outcome.enhanced == "5.6.7"
    assert not any(command.startswith("MAIL") for command in peer.commands)


async def test_smtputf8_sent_when_offered_and_needed() -> None:
    script = PeerScript(extensions=("PIPELINING", "8BITMIME", "SMTPUTF8"))
    async with ScriptedPeer(script) as peer:
        client = await _client(peer)
        await client.send_transaction("s@o.test", [("jörg@d.test", "")], MESSAGE)
        await client.quit()
    assert peer.transactions[0].mail_line == "MAIL FROM:<s@o.test> SMTPUTF8"
    assert peer.transactions[0].recipients == ["jörg@d.test"]


async def test_size_over_peer_limit_fails_before_sending() -> None:
    async with ScriptedPeer(PeerScript(extensions=("PIPELINING", "SIZE 20"))) as peer:
        client = await _client(peer)
        result = await client.send_transaction("s@o.test", [("a@d.test", "")], MESSAGE)
        await client.quit()
    assert result.recipient_outcomes()[0].enhanced == "5.3.4"
    assert not any(command.startswith("MAIL") for command in peer.commands)


async def test_eight_bit_body_params() -> None:
    body = "Subject: é\r\n\r\nçà\r\n".encode()
    async with ScriptedPeer() as with_8bit, ScriptedPeer(PeerScript(extensions=())) as without:
        first = await _client(with_8bit)
        announced = await first.send_transaction("s@o.test", [("a@d.test", "")], body)
        second = await _client(without)
        unannounced = await second.send_transaction("s@o.test", [("a@d.test", "")], body)
        await first.quit()
        await second.quit()
    assert "BODY=8BITMIME" in with_8bit.transactions[0].mail_line
    assert not announced.unannounced_8bit
    assert unannounced.unannounced_8bit
    assert without.transactions[0].message == body


async def test_dsn_parameters_only_when_offered() -> None:
    async with ScriptedPeer(PeerScript(extensions=("PIPELINING", "DSN"))) as peer:
        client = await _client(peer)
        await client.send_transaction(
            "s@o.test", [("a@d.test", "")], MESSAGE, dsn_ret=DsnRet.HDRS, envid="id+1"
        )
        await client.quit()
    assert peer.transactions[0].mail_line == "MAIL FROM:<s@o.test> RET=HDRS ENVID=id+2B1"


# -- session ------------------------------------------------------------------------------


async def test_helo_fallback_when_ehlo_refused() -> None:
    async with ScriptedPeer(PeerScript(ehlo=["502 5.5.2 what"])) as peer:
        client = await _client(peer)
        assert not client.esmtp and client.extensions == {}
        result = await client.send_transaction("s@o.test", [("a@d.test", "")], MESSAGE)
        await client.quit()
    assert result.final_reply is not None and result.final_reply.code == 250
    assert peer.commands[:2] == ["EHLO client.test", "HELO client.test"]


@pytest.mark.parametrize(("greeting", "temporary"), [("421 4.3.2 busy", True), ("554 no", False)])
async def test_refused_greeting_raises(greeting: str, temporary: bool) -> None:
    async with ScriptedPeer(PeerScript(greeting=greeting)) as peer:
        with pytest.raises(SmtpClientError) as caught:
            await _client(peer)
    assert caught.value.temporary is temporary
    assert caught.value.reply is not None and str(caught.value.reply) == greeting


async def test_reply_code_mismatch_is_a_protocol_error() -> None:
    async with ScriptedPeer(PeerScript(greeting="220-peer\r\n250 peer")) as peer:
        with pytest.raises(SmtpClientError, match="reply code changed") as caught:
            await _client(peer)
    assert caught.value.temporary and caught.value.reply is None


async def test_silent_server_times_out() -> None:
    async def never_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(never_greet, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(SmtpClientError, match="timeout"):
            await SmtpClient.connect("127.0.0.1", port, local_hostname="c.test", timeout=0.2)


async def test_connection_refused_is_temporary() -> None:
    async with ScriptedPeer() as peer:
        port = peer.port
    with pytest.raises(SmtpClientError) as caught:
        await SmtpClient.connect("127.0.0.1", port, local_hostname="c.test", timeout=2)
    assert caught.value.temporary


# -- STARTTLS and AUTH ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.dest.test").configure_cert(context)
    return context


async def test_starttls_verified_then_transaction(ca: trustme.CA) -> None:
    async with ScriptedPeer(PeerScript(tls_context=_server_context(ca))) as peer:
        client = await _client(peer)
        assert "STARTTLS" in client.extensions and client.tls_version == ""
        verify = ssl.create_default_context()
        ca.configure_trust(verify)
        await client.starttls(verify, "mx.dest.test")
        assert client.tls_version == "TLSv1.3"
        assert "STARTTLS" not in client.extensions  # the EHLO after TLS
        await client.send_transaction("s@o.test", [("a@d.test", "")], MESSAGE)
        await client.quit()
    assert peer.transactions[0].tls
    assert peer.commands.count("EHLO client.test") == 2


async def test_starttls_with_wrong_name_fails_verification(ca: trustme.CA) -> None:
    async with ScriptedPeer(PeerScript(tls_context=_server_context(ca))) as peer:
        client = await _client(peer)
        verify = ssl.create_default_context()
        ca.configure_trust(verify)
        with pytest.raises(SmtpClientError, match="TLS handshake failed") as caught:
            await client.starttls(verify, "other.test")
    assert caught.value.temporary and not client.is_usable


async def test_starttls_response_injection_is_refused(ca: trustme.CA) -> None:
    script = PeerScript(
        tls_context=_server_context(ca), trailing_after_starttls=b"250 injected\r\n"
    )
    async with ScriptedPeer(script) as peer:
        client = await _client(peer)
        with pytest.raises(SmtpClientError, match="after its STARTTLS reply"):
            await client.starttls(ssl.create_default_context(), "mx.dest.test")
    assert not client.is_usable


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_auth(mechanism: str) -> None:
    async with ScriptedPeer(PeerScript(auth_users={"user": "secret"})) as peer:
        client = await _client(peer)
        reply = await client.auth(mechanism, "user", "secret")
        assert reply.code == 235
        with pytest.raises(SmtpClientError) as caught:
            await client.auth(mechanism, "user", "wrong")
        assert not caught.value.temporary and caught.value.reply is not None
        assert caught.value.reply.code == 535
        await client.quit()
