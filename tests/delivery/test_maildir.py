"""MaildirTransport on real directories in tmp_path."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from postgate.delivery.maildir import MaildirTransport
from postgate.queue.model import Envelope, EnvelopeRecipient, LeasedRecipient, RecipientStatus

MESSAGE = b"From: a@example.org\r\nSubject: hi\r\n\r\nline 1\r\nline 2\r\n"


def leased(address: str, sender: str = "a@example.org", recipient_id: int = 1) -> LeasedRecipient:
    envelope = Envelope(sender=sender, recipients=(EnvelopeRecipient(address, address),))
    return LeasedRecipient(
        recipient_id=recipient_id,
        queue_id="0000000000000001",
        address=address,
        original=address,
        notify=None,
        orcpt=None,
        attempts=0,
        first_queued_at=0.0,
        lease_until=60.0,
        envelope=envelope,
    )


async def test_writes_exact_content_into_new_with_private_modes(tmp_path: Path) -> None:
    maildir = tmp_path / "users" / "bob" / "Maildir"
    transport = MaildirTransport(lambda _: maildir, hostname="mx1.example.org")
    [result] = await transport.deliver(MESSAGE, [leased("bob@example.com")])

    assert result.status is RecipientStatus.DELIVERED
    assert result.remote_host == "maildir"
    assert result.enhanced_status == "2.0.0"
    [path] = list((maildir / "new").iterdir())
    assert path.read_bytes() == (
        b"Return-Path: <a@example.org>\n"
        b"Delivered-To: bob@example.com\n"
        b"From: a@example.org\nSubject: hi\n\nline 1\nline 2\n"
    )
    assert path.name.endswith(".mx1.example.org")
    assert path.name in result.reply
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for sub in ("cur", "new", "tmp"):
        assert stat.S_IMODE((maildir / sub).stat().st_mode) == 0o700
    assert list((maildir / "tmp").iterdir()) == []


async def test_null_sender_and_one_file_per_recipient(tmp_path: Path) -> None:
    boxes = {"b@example.com": tmp_path / "b", "c@example.com": tmp_path / "c"}
    transport = MaildirTransport(boxes.get)
    results = await transport.deliver(
        MESSAGE,
        [leased("b@example.com", sender=""), leased("c@example.com", sender="", recipient_id=2)],
    )
    assert [r.status for r in results] == [RecipientStatus.DELIVERED] * 2
    for address, box in boxes.items():
        [path] = list((box / "new").iterdir())
        assert path.read_bytes().startswith(
            b"Return-Path: <>\nDelivered-To: " + address.encode() + b"\n"
        )


async def test_unknown_mailbox_bounces_5_1_1(tmp_path: Path) -> None:
    transport = MaildirTransport(lambda _: None)
    [result] = await transport.deliver(MESSAGE, [leased("nobody@example.com")])
    assert result.status is RecipientStatus.BOUNCED
    assert result.enhanced_status == "5.1.1"
    assert result.reply.startswith("550 5.1.1")


async def test_disk_error_defers_4_3_0_and_leaves_no_temp_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    good = tmp_path / "good"
    transport = MaildirTransport(
        lambda address: blocker / "Maildir" if address.startswith("bad") else good
    )
    bad, ok = await transport.deliver(
        MESSAGE, [leased("bad@example.com"), leased("ok@example.com", recipient_id=2)]
    )
    assert bad.status is RecipientStatus.DEFERRED
    assert bad.enhanced_status == "4.3.0"
    assert bad.reply.startswith("451 4.3.0 maildir delivery failed")
    assert bad.remote_host == "maildir"
    assert ok.status is RecipientStatus.DELIVERED  # one broken mailbox spoils nothing else


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
async def test_unwritable_tmp_defers(tmp_path: Path) -> None:
    maildir = tmp_path / "box"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "tmp").chmod(0o500)
    try:
        [result] = await MaildirTransport(lambda _: maildir).deliver(MESSAGE, [leased("b@x.org")])
    finally:
        (maildir / "tmp").chmod(0o700)
    assert result.status is RecipientStatus.DEFERRED
    assert list((maildir / "new").iterdir()) == []


async def test_lookup_exception_defers(tmp_path: Path) -> None:
    def lookup(address: str) -> Path | None:
        raise OSError("user database gone")

    [result] = await MaildirTransport(lookup).deliver(MESSAGE, [leased("b@x.org")])
    assert result.status is RecipientStatus.DEFERRED
    assert "user database gone" in result.reply


async def test_header_injection_through_an_address_is_impossible(tmp_path: Path) -> None:
    transport = MaildirTransport(lambda _: tmp_path / "box")
    await transport.deliver(MESSAGE, [leased("b@x.org", sender="a@x.org>\r\nX-Evil: 1")])
    [path] = list((tmp_path / "box" / "new").iterdir())
    first_lines = path.read_bytes().split(b"\n")[:3]
    assert first_lines[0] == b"Return-Path: <a@x.org>X-Evil: 1>"
    assert first_lines[1] == b"Delivered-To: b@x.org"


async def test_many_deliveries_get_distinct_names(tmp_path: Path) -> None:
    transport = MaildirTransport(lambda _: tmp_path / "box", clock=lambda: 1_700_000_000.0)
    recipients = [leased(f"u{i}@x.org", recipient_id=i) for i in range(50)]
    results = await transport.deliver(MESSAGE, recipients)
    assert all(r.status is RecipientStatus.DELIVERED for r in results)
    assert len(list((tmp_path / "box" / "new").iterdir())) == 50


async def test_quarantined_message_goes_to_the_junk_folder(tmp_path: Path) -> None:
    maildir = tmp_path / "bob"
    transport = MaildirTransport(lambda _: maildir, hostname="mx.test")
    marked = b"X-Postgate-Quarantine: dmarc=fail (p=quarantine)\r\nSubject: s\r\n\r\nbody\r\n"
    plain = b"Subject: ok\r\n\r\nX-Postgate-Quarantine: only in the body\r\n"
    await transport.deliver(marked, [leased("bob@example.test")])
    await transport.deliver(plain, [leased("bob@example.test", recipient_id=2)])
    junk = list((maildir / ".Junk" / "new").iterdir())
    inbox = list((maildir / "new").iterdir())
    assert len(junk) == 1 and b"dmarc=fail" in junk[0].read_bytes()
    assert len(inbox) == 1 and b"Subject: ok" in inbox[0].read_bytes()
    assert (maildir / ".Junk" / "maildirfolder").exists()  # Maildir++ subfolder marker
