"""delivery.bounces — send the DSNs the queue's notification outbox asks for.

SYNOPSIS
    notifier = Notifier(store, reporting_mta="mail.example.org",
                        postmaster="postmaster@example.org",
                        on_enqueued=scheduler.wake, max_lifetime=5 * 86400)
    scheduler = Scheduler(..., on_outcome=lambda leased, result: notifier.wake())
    task = asyncio.create_task(notifier.run())
    await notifier.stop()

DESCRIPTION
    Postfix's bounce daemon. The store writes one notification row per recipient
    outcome that asks for a delivery status notification, in the same transaction
    as the status-log row (queue.sqlite_outbox): "failed" for a bounce or an
    expiry, "delayed" once per recipient after delay_warning_after, "delivered"
    for NOTIFY=SUCCESS. This program turns those rows into DSN messages.

    Draining reads the pending rows grouped by (message, kind) and builds ONE
    DSN per group (delivery.dsn.build_dsn) with one block per recipient: Action,
    Status (the attempt's enhanced status code, else the one in its reply, else
    X.0.0), Remote-MTA when the attempt named a host, Diagnostic-Code with the
    reply (typed "smtp" when it is an SMTP reply, "x-postgate" for our own text
    such as an expiry), Last-Attempt-Date, and for "delayed" Will-Retry-Until
    (arrival + max_lifetime, when given). The DSN is queued through the store
    like any message, from ``<>`` to the original envelope sender, and routed by
    the scheduler; then the rows are marked done, and the store removes the
    original message if nothing else keeps it.

    Whether a DSN is wanted (RFC 3461 4.1 NOTIFY, never for the null sender)
    is decided when the row is written, and checked again here; a "delayed" row
    whose recipient has become final since is dropped, not reported.

    After a wake() the notifier waits ``batch_window`` before draining, so the
    recipients of one message that fail in the same delivery round share one DSN.

DURABILITY
    At least once. The DSN is committed to the queue (enqueue) before its rows
    are marked done, in a second transaction. A crash between the two sends the
    DSN again after restart: a duplicate, never a lost DSN (invariant 4). A DSN
    that cannot be built or queued leaves its rows pending and the original
    message in the queue; it is retried at the next drain and logged each time.

LOGS
    One line per DSN: event "dsn" with queue_id, dsn_queue_id, kind, recipients.

CONFIGURATION
    reporting_mta     Our host name, for Reporting-MTA and the From address.
    postmaster        The address a DSN's reader is told to write to.
    max_lifetime      queue.max_lifetime, for Will-Retry-Until (None: omitted).
    batch_window (1)  Seconds to wait after a wake before draining.
    poll (30)         Seconds between drains when nothing wakes the notifier.

SEE ALSO
    delivery.dsn, queue.sqlite_outbox, queue.scheduler, RFC 3461, RFC 3464
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable

import structlog

from postgate.delivery.dsn import DsnRecipient, build_dsn, should_notify
from postgate.queue.model import (
    FINAL_STATUSES,
    NotificationKind,
    NotificationRecipient,
    PendingNotification,
    StatusLogEntry,
)
from postgate.queue.store import NotificationOutbox, QueueError

log = structlog.get_logger("postgate.bounce")

_ENHANCED = re.compile(r"([245])\.\d{1,3}\.\d{1,3}")
_ENHANCED_IN_REPLY = re.compile(r"^(?:\d{3}[ -])?([245]\.\d{1,3}\.\d{1,3})\b")
_SMTP_REPLY = re.compile(r"^[2-5]\d\d(?:[ -]|$)")
# RFC 3464 2.3.4: the class of Status each Action may carry ("failed" includes
# 4.x.x for an expired message: RFC 3463 4.4.7).
_CLASSES = {
    NotificationKind.FAILED: ("5", "4"),
    NotificationKind.DELAYED: ("4",),
    NotificationKind.DELIVERED: ("2",),
    NotificationKind.RELAYED: ("2",),
}


class Notifier:
    """Drains the notification outbox into DSN messages. See the module docstring."""

    def __init__(
        self,
        store: NotificationOutbox,
        *,
        reporting_mta: str,
        postmaster: str,
        clock: Callable[[], float] = time.time,
        on_enqueued: Callable[[], None] = lambda: None,
        batch_window: float = 1.0,
        poll: float = 30.0,
        max_lifetime: float | None = None,
        page_size: int = 100,
        return_size_limit: int = 1_048_576,
    ) -> None:
        if batch_window < 0 or poll <= 0 or page_size < 1:
            raise ValueError("batch_window must be >= 0, poll > 0 and page_size >= 1")
        self._store = store
        self._reporting_mta = reporting_mta
        self._postmaster = postmaster
        self._clock = clock
        self._on_enqueued = on_enqueued
        self._batch_window = batch_window
        self._poll = poll
        self._max_lifetime = max_lifetime
        self._page_size = page_size
        self._return_size_limit = return_size_limit
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running = False

    # --- control ------------------------------------------------------------

    def wake(self) -> None:
        """Drain soon (after ``batch_window``); cheap, call from the loop's thread."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop the run() loop after the drain in progress, if any."""
        self._stop.set()
        self._wake.set()
        if self._running:
            await self._stopped.wait()

    async def run(self) -> None:
        """Drain at start (rows left by a crash), then on wake() or every ``poll``."""
        self._stop.clear()
        self._stopped.clear()
        self._running = True
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    await self.drain_once()
                except QueueError as exc:
                    log.error("dsn outbox unavailable", reason=str(exc))
                except Exception:
                    # A bug must not stop DSNs for good: log it and try again later.
                    log.exception("notifier loop failed")
                woke = await _wait(self._wake, self._poll)
                if woke and not self._stop.is_set() and self._batch_window > 0:
                    # Let the rest of the delivery round record its outcomes first.
                    await _wait(self._stop, self._batch_window)
        finally:
            self._running = False
            self._stopped.set()

    async def drain_once(self) -> int:
        """Process every notification pending now; return how many DSNs were queued.

        Raises QueueError when a DSN cannot be queued or its rows marked done (the
        rest waits for the next drain). A group that fails otherwise is logged
        and skipped: it stays pending and is tried again next time.
        """
        enqueued = 0
        after_id = 0
        # Bounded: after_id grows with every page, and a page is never empty here.
        while groups := await self._store.pending_notifications(self._page_size, after_id=after_id):
            for group in groups:
                after_id = max(after_id, group.first_notification_id)
                try:
                    if await self._notify(group):
                        enqueued += 1
                except QueueError:
                    raise
                except Exception:
                    log.exception("cannot build dsn", queue_id=group.queue_id, kind=group.kind)
        return enqueued

    # --- one DSN ------------------------------------------------------------

    async def _notify(self, group: PendingNotification) -> bool:
        wanted = [r for r in group.recipients if _wanted(group, r)]
        if not wanted:
            await self._store.finish_notifications(group.notification_ids, None)
            return False
        message = await self._store.load_message(group.queue_id)
        dsn_envelope, dsn_message = build_dsn(
            reporting_mta=self._reporting_mta,
            original_envelope=group.envelope,
            original_message=message,
            recipients=[self._block(group.kind, r) for r in wanted],
            queue_id=group.queue_id,
            arrival_date=group.envelope.received_at,
            now=self._clock(),
            postmaster_address=self._postmaster,
            return_size_limit=self._return_size_limit,
        )
        dsn_queue_id = await self._store.enqueue(dsn_envelope, dsn_message)
        # A crash right here sends this DSN again after restart: a duplicate, not a loss.
        log.info(
            "dsn",
            queue_id=group.queue_id,
            dsn_queue_id=dsn_queue_id,
            kind=group.kind.value,
            recipients=[r.address for r in wanted],
        )
        try:
            self._on_enqueued()
        except Exception:
            log.exception("on_enqueued failed", queue_id=dsn_queue_id)
        await self._store.finish_notifications(group.notification_ids, dsn_queue_id)
        return True

    def _block(self, kind: NotificationKind, recipient: NotificationRecipient) -> DsnRecipient:
        attempt = recipient.attempt
        retry_until = None
        if kind is NotificationKind.DELAYED and self._max_lifetime is not None:
            retry_until = recipient.first_queued_at + self._max_lifetime
        return DsnRecipient(
            final_recipient=recipient.address,
            original_recipient=_original_recipient(recipient),
            action=kind.value,
            status=dsn_status(kind, attempt),
            remote_mta=_remote_mta(attempt.remote_host),
            diagnostic_code=_diagnostic(attempt.reply),
            last_attempt_date=attempt.logged_at,
            will_retry_until=retry_until,
        )


def dsn_status(kind: NotificationKind, attempt: StatusLogEntry) -> str:
    """The RFC 3463 code for the Status field: the attempt's, else the one at the
    start of its reply, else the class's generic X.0.0."""
    classes = _CLASSES[kind]
    candidates = [attempt.enhanced_status.strip()]
    found = _ENHANCED_IN_REPLY.match(attempt.reply.strip())
    if found:
        candidates.append(found.group(1))
    for candidate in candidates:
        match = _ENHANCED.fullmatch(candidate)
        if match and match.group(1) in classes:
            return candidate
    return f"{classes[0]}.0.0"


def _wanted(group: PendingNotification, recipient: NotificationRecipient) -> bool:
    if group.kind is NotificationKind.DELAYED and recipient.status in FINAL_STATUSES:
        return False  # delivered or bounced since: "still trying" would be false
    return should_notify(group.envelope, recipient.notify, group.kind.value)


def _remote_mta(host: str) -> str | None:
    """RFC 3464 2.3.5: a DNS name or address; "maildir" or "lmtp" name no MTA."""
    if "." in host or ":" in host:
        return f"dns; {host}"
    return None


def _diagnostic(reply: str) -> str | None:
    """RFC 3464 2.3.6: "smtp" for a remote SMTP reply, our own type otherwise."""
    text = reply.strip()
    if not text:
        return None
    if _SMTP_REPLY.match(text):
        return f"smtp; {text}"
    return f"x-postgate; {text}"


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """True if ``event`` was set within ``timeout`` seconds."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
        return True
    return False


def _original_recipient(recipient: NotificationRecipient) -> tuple[str, str] | None:
    """ORCPT when the client gave one; else the RCPT TO address when an alias changed it,
    so the sender can tell which of their recipients failed (RFC 3461 4.2: an MTA MAY
    supply ORCPT from the RCPT command; RFC 3464 2.3.1 Original-Recipient)."""
    if recipient.orcpt is not None:
        return recipient.orcpt
    if recipient.original and recipient.original.lower() != recipient.address.lower():
        return ("rfc822", recipient.original)
    return None
