"""queue.store — the durable message store interface.

SYNOPSIS
    store = await open_store(url)            # "sqlite:///path/queue.db"
    queue_id = await store.enqueue(envelope, message)   # returns after commit + sync
    leased = await store.lease_due(now, limit, lease_seconds, owner)
    message = await store.load_message(queue_id)
    await store.record_attempt(leased, result)
    await store.close()

DESCRIPTION
    The only writer of message state. No DNS, no SMTP. One interface; SQLite (WAL)
    is the embedded default and MariaDB/PostgreSQL implement the same protocol later.

DURABILITY
    ``enqueue`` returns only after the message bytes, the envelope and every
    recipient row are committed and synced to disk (invariant 1: 250 means durable).
    Concurrent enqueues may share one commit (group commit); none may skip it.

LEASES
    ``lease_due`` hands out due recipients (status QUEUED/DEFERRED with
    ``next_attempt_at <= now`` and no live lease) to one owner until ``now +
    lease_seconds``. A crashed owner's leases simply expire and are handed out
    again (invariant 2).

STATUS LOG
    ``record_attempt`` writes one status-log row and the recipient's new state in one
    transaction (invariant 3). An outcome that asks for a DSN also writes a
    notification row in that transaction (invariant 4). A message whose recipients
    are all final and that has no pending notification is removed from the queue
    (its status-log rows stay).

NOTIFICATION OUTBOX
    ``pending_notifications`` returns the pending DSN requests grouped by (message,
    kind); ``finish_notifications`` marks them done once the DSN is queued (or
    found unwanted) and removes the message if it is now finished.

SEE ALSO
    queue.model, queue.sqlite, queue.scheduler
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from postgate.queue.model import (
    AttemptResult,
    Envelope,
    LeasedRecipient,
    PendingNotification,
    QueuedMessageSummary,
    RecipientStatus,
    StatusLogEntry,
)


class QueueError(Exception):
    """An expected failure of the store (full disk, database gone). Carries a message
    suitable for a 451 reply or a CLI error line."""


class Store(Protocol):
    async def enqueue(
        self,
        envelope: Envelope,
        message: bytes,
        *,
        queue_id: str | None = None,
        hold: bool = False,
    ) -> str:
        """Store durably; return the queue id (``queue_id`` when the caller chose it,
        e.g. to name it in the Received header). ``hold`` stores every recipient on
        hold (not delivered until released). Raises QueueError on failure."""
        ...

    async def lease_due(
        self, now: float, limit: int, lease_seconds: float, owner: str
    ) -> list[LeasedRecipient]: ...

    async def load_message(self, queue_id: str) -> bytes: ...

    async def record_attempt(self, leased: LeasedRecipient, result: AttemptResult) -> None: ...

    async def next_due_at(self) -> float | None:
        """Earliest ``next_attempt_at`` of any recipient that is not final or held."""
        ...

    async def list_messages(
        self, statuses: Sequence[RecipientStatus] | None = None
    ) -> list[QueuedMessageSummary]: ...

    async def get_message(self, queue_id: str) -> QueuedMessageSummary | None: ...

    async def status_log(self, queue_id: str) -> list[StatusLogEntry]: ...

    async def close(self) -> None: ...


class NotificationOutbox(Protocol):
    """What the DSN notifier (delivery.bounces) needs from the store."""

    async def enqueue(
        self, envelope: Envelope, message: bytes, *, queue_id: str | None = None
    ) -> str: ...

    async def load_message(self, queue_id: str) -> bytes: ...

    async def pending_notifications(
        self, limit: int = 100, *, after_id: int = 0
    ) -> list[PendingNotification]:
        """Up to ``limit`` pending groups, one per (message, kind), oldest first,
        leaving out groups whose oldest notification id is <= ``after_id``."""
        ...

    async def finish_notifications(
        self, notification_ids: Sequence[int], dsn_queue_id: str | None
    ) -> int:
        """Mark done; remove messages now finished. Returns how many were pending."""
        ...
