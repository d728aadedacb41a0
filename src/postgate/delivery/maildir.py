"""delivery.maildir — local delivery into Maildir folders.

SYNOPSIS
    transport = MaildirTransport(mailbox_path=lambda address: Path("/var/mail/vhosts/a"))
    results = await transport.deliver(message, leased_recipients)

DESCRIPTION
    Writes one file per recipient into that recipient's Maildir, the qmail way
    (https://cr.yp.to/proto/maildir.html): create the file in tmp/ under a name no
    other delivery can pick, write it, fsync it, rename it into new/, fsync new/.
    A reader never sees a half-written message, and once new/ is synced the mail
    survives a crash.

    Each file starts with ``Return-Path: <sender>`` (RFC 5321 4.4: the final
    delivery MTA records the reverse-path) and ``Delivered-To: <address>`` (qmail
    and Postfix convention, used for loop detection), followed by the message with
    CRLF line ends turned into LF, as Unix mail files are written (Postfix's local
    and virtual do the same; Dovecot and MUAs expect it).

    Missing cur/, new/ and tmp/ are created with mode 0700; files get mode 0600.

DIAGNOSTICS
    mailbox_path(address) is None   BOUNCED 550 5.1.1 (no such mailbox).
    disk full                       DEFERRED 452 4.3.1.
    quota exceeded (EDQUOT)         DEFERRED 452 4.2.2.
    any other OS error              DEFERRED 451 4.3.0 with the error text.
    Every result carries remote_host "maildir". Nothing here raises.

SEE ALSO
    delivery.base, queue.scheduler
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from postgate.delivery.base import bounced, deferred
from postgate.queue.model import AttemptResult, LeasedRecipient, RecipientStatus

log = structlog.get_logger("postgate.maildir")

REMOTE_HOST = "maildir"


def _safe_hostname(hostname: str) -> str:
    # Maildir spec: '/' and ':' would break the file name and the ":2,flags" suffix.
    return hostname.replace("/", "\\057").replace(":", "\\072")


def _header_value(text: str) -> str:
    # An address cannot legally hold CR or LF; never let one start a new header.
    return text.replace("\r", "").replace("\n", "")


# Maildir++ subfolder that IMAP servers (Dovecot, Courier) show as "Junk".
JUNK_FOLDER = ".Junk"
QUARANTINE_HEADER = b"x-postgate-quarantine:"


def is_quarantined(message: bytes) -> bool:
    """Whether the inbound checks marked this message for quarantine. The receiving
    side removes any such field a sender wrote, so only ours can be present."""
    end = message.find(b"\r\n\r\n")
    section = b"\r\n" + (message if end < 0 else message[: end + 2]).lower()
    return b"\r\n" + QUARANTINE_HEADER in section


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MaildirTransport:
    """Delivers to Maildir folders on this host."""

    name = "maildir"

    def __init__(
        self,
        mailbox_path: Callable[[str], Path | None],
        *,
        hostname: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._mailbox_path = mailbox_path
        self._hostname = _safe_hostname(hostname or socket.gethostname())
        self._clock = clock

    async def deliver(
        self, message: bytes, recipients: Sequence[LeasedRecipient]
    ) -> list[AttemptResult]:
        results: list[AttemptResult | None] = [None] * len(recipients)
        jobs: list[tuple[int, LeasedRecipient, Path]] = []
        for index, recipient in enumerate(recipients):
            try:
                maildir = self._mailbox_path(recipient.address)
            except Exception as exc:
                log.exception("mailbox lookup failed", to=recipient.address)
                results[index] = deferred(
                    f"451 4.3.0 mailbox lookup failed: {exc}", remote_host=REMOTE_HOST
                )
                continue
            if maildir is None:
                results[index] = bounced(
                    f"550 5.1.1 <{recipient.address}>: no such mailbox", "5.1.1", REMOTE_HOST
                )
            else:
                jobs.append((index, recipient, maildir))
        if jobs:
            # Writing and fsyncing files blocks for milliseconds (more on a busy
            # disk); on the event loop that would stall every SMTP session, so the
            # whole group goes to one worker thread.
            written = await asyncio.to_thread(self._write_all, message, jobs)
            for index, result in written:
                results[index] = result
        return [r if r is not None else deferred("451 4.3.0 not attempted") for r in results]

    def _write_all(
        self, message: bytes, jobs: list[tuple[int, LeasedRecipient, Path]]
    ) -> list[tuple[int, AttemptResult]]:
        body = message.replace(b"\r\n", b"\n")
        junk = is_quarantined(message)
        return [
            (index, self._write_one(body, rcpt, maildir / JUNK_FOLDER if junk else maildir))
            for index, rcpt, maildir in jobs
        ]

    def _write_one(self, body: bytes, recipient: LeasedRecipient, maildir: Path) -> AttemptResult:
        headers = (
            f"Return-Path: <{_header_value(recipient.envelope.sender)}>\n"
            f"Delivered-To: {_header_value(recipient.address)}\n"
        ).encode()
        tmp_path: Path | None = None
        try:
            self._ensure_maildir(maildir)
            name = self._unique_name()
            tmp_path = maildir / "tmp" / name
            fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(headers)
                file.write(body)
                file.flush()
                os.fsync(file.fileno())
            os.rename(tmp_path, maildir / "new" / name)
            tmp_path = None
            # The rename is durable only once the directory entry is on disk.
            _fsync_directory(maildir / "new")
        except OSError as exc:
            log.error(
                "maildir delivery failed",
                to=recipient.address,
                maildir=str(maildir),
                reason=str(exc),
            )
            if tmp_path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_path)
            return self._failure(exc)
        return AttemptResult(
            status=RecipientStatus.DELIVERED,
            reply=f"250 2.0.0 delivered to maildir as {name}",
            enhanced_status="2.0.0",
            remote_host=REMOTE_HOST,
        )

    def _unique_name(self) -> str:
        # Maildir spec: time, then something unique on this host (microseconds, pid
        # and 64 random bits), then the host name.
        now = self._clock()
        seconds = int(now)
        micros = int((now - seconds) * 1_000_000)
        random_part = secrets.token_hex(8)
        return f"{seconds}.M{micros}P{os.getpid()}R{random_part}.{self._hostname}"

    @staticmethod
    def _ensure_maildir(maildir: Path) -> None:
        created = False
        for directory in (maildir, maildir / "cur", maildir / "new", maildir / "tmp"):
            if not directory.is_dir():
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                created = True
        if created:
            if maildir.name == JUNK_FOLDER:
                # Maildir++: a subfolder carries this marker file.
                (maildir / "maildirfolder").touch(mode=0o600)
            # Make the new directories themselves survive a crash.
            _fsync_directory(maildir)
            _fsync_directory(maildir.parent)

    @staticmethod
    def _failure(exc: OSError) -> AttemptResult:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EDQUOT:
            return deferred(f"452 4.2.2 mailbox full: {reason}", "4.2.2", REMOTE_HOST)
        if exc.errno == errno.ENOSPC:
            return deferred(f"452 4.3.1 mail system full: {reason}", "4.3.1", REMOTE_HOST)
        return deferred(f"451 4.3.0 maildir delivery failed: {reason}", "4.3.0", REMOTE_HOST)
