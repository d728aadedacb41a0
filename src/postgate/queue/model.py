"""queue.model — the values that cross the queue boundary.

SYNOPSIS
    Envelope, EnvelopeRecipient, DsnRet, RecipientStatus, LeasedRecipient,
    AttemptResult, QueuedMessageSummary, StatusLogEntry, NotificationKind,
    PendingNotification, NotificationRecipient

DESCRIPTION
    Plain frozen dataclasses shared by the receiving side (server/, accept/), the
    store (queue/), the scheduler and the transports (delivery/). Nothing here does
    I/O. Addresses are kept exactly as the client gave them inside the angle brackets
    (an empty string is the null reverse-path ``<>``).

SEE ALSO
    queue.store (the Store protocol), queue.scheduler, delivery
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class DsnRet(enum.StrEnum):
    """RFC 3461 4.3: how much of the message a DSN returns."""

    FULL = "FULL"
    HDRS = "HDRS"


class DsnNotify(enum.StrEnum):
    """RFC 3461 4.1: when a DSN is wanted for one recipient."""

    NEVER = "NEVER"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DELAY = "DELAY"


class BodyType(enum.StrEnum):
    """RFC 6152 / RFC 3030: the BODY= parameter of MAIL FROM."""

    SEVEN_BIT = "7BIT"
    EIGHT_BIT_MIME = "8BITMIME"
    BINARY_MIME = "BINARYMIME"


class RecipientStatus(enum.StrEnum):
    """Where one queued recipient stands. QUEUED and DEFERRED are due for delivery
    at ``next_attempt_at``; HELD waits for an operator; the rest are final."""

    QUEUED = "queued"
    DEFERRED = "deferred"
    HELD = "held"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    DELETED = "deleted"


FINAL_STATUSES = frozenset(
    {RecipientStatus.DELIVERED, RecipientStatus.BOUNCED, RecipientStatus.DELETED}
)


@dataclass(frozen=True, slots=True)
class EnvelopeRecipient:
    """One RCPT TO, after alias expansion.

    ``address`` is the final address to deliver to; ``original`` is what the client
    wrote in RCPT TO (used in DSNs when no ORCPT was given). ``orcpt`` is the decoded
    ORCPT parameter as ``(addr-type, address)``, e.g. ``("rfc822", "a@b")``.
    ``notify`` is None when the client gave no NOTIFY (the default policy applies).
    """

    address: str
    original: str = ""
    notify: frozenset[DsnNotify] | None = None
    orcpt: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """Everything the SMTP transaction told us besides the message bytes."""

    sender: str
    recipients: tuple[EnvelopeRecipient, ...]
    ret: DsnRet | None = None
    envid: str | None = None
    smtputf8: bool = False
    body_type: BodyType | None = None
    client_address: str = ""
    client_helo: str = ""
    authenticated_user: str | None = None
    received_at: float = 0.0  # unix time, set by the receiver


@dataclass(frozen=True, slots=True)
class LeasedRecipient:
    """A recipient the scheduler handed to one owner until ``lease_until``.

    Invariant 2 of ARCHITECTURE.md: only the holder of a live lease delivers it.
    """

    recipient_id: int
    queue_id: str
    address: str
    original: str
    notify: frozenset[DsnNotify] | None
    orcpt: tuple[str, str] | None
    attempts: int  # attempts made before this one
    first_queued_at: float
    lease_until: float
    envelope: Envelope


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """The outcome of one delivery attempt for one recipient, as a transport reports it.

    ``status`` is DELIVERED, DEFERRED or BOUNCED. ``reply`` is the remote or local
    reply text (e.g. ``"550 5.1.1 no such user"``); ``enhanced_status`` the RFC 3463
    code (``"5.1.1"``). ``remote_host`` is the MX host or ``"maildir"``/``"lmtp"``.
    ``next_attempt_at`` is set by the scheduler for DEFERRED, and so is
    ``delay_warning``: True once the message has waited ``delay_warning_after``
    seconds, asking the store for a "delayed" DSN (written once per recipient).
    """

    status: RecipientStatus
    reply: str
    enhanced_status: str = ""
    remote_host: str = ""
    remote_address: str = ""
    tls_version: str = ""
    next_attempt_at: float | None = None
    # Delivered to another SMTP server rather than a mailbox; ``dsn_passed_on`` when that
    # server took our DSN parameters and so reports success itself (RFC 3461 5.2.2).
    relayed: bool = False
    dsn_passed_on: bool = False
    delay_warning: bool = False


@dataclass(frozen=True, slots=True)
class StatusLogEntry:
    """One row of the status log: the truth about one attempt (invariant 3)."""

    queue_id: str
    recipient_id: int
    address: str
    status: RecipientStatus
    reply: str
    enhanced_status: str
    remote_host: str
    tls_version: str
    attempt: int
    logged_at: float


@dataclass(frozen=True, slots=True)
class QueuedRecipientSummary:
    recipient_id: int
    address: str
    original: str
    status: RecipientStatus
    attempts: int
    next_attempt_at: float | None
    last_reply: str


@dataclass(frozen=True, slots=True)
class QueuedMessageSummary:
    """What `postgate queue list|show` prints for one message."""

    queue_id: str
    sender: str
    size: int
    received_at: float
    recipients: tuple[QueuedRecipientSummary, ...] = field(default=())


class NotificationKind(enum.StrEnum):
    """Which DSN an outbox row asks for; the value is the RFC 3464 2.3.3 Action."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"  # handed to a next hop that does not speak DSN (RFC 3461 5.2.2)


@dataclass(frozen=True, slots=True)
class NotificationRecipient:
    """One recipient of a pending notification, with the attempt that caused it.

    ``status`` is the recipient's state now (a "delayed" row whose recipient has
    since been delivered is stale). ``attempt`` is the status-log row written in the
    same transaction as the notification row.
    """

    notification_id: int
    recipient_id: int
    address: str
    original: str
    notify: frozenset[DsnNotify] | None
    orcpt: tuple[str, str] | None
    first_queued_at: float
    status: RecipientStatus
    attempt: StatusLogEntry


@dataclass(frozen=True, slots=True)
class PendingNotification:
    """Undone notification rows of one message and one kind: one DSN's worth."""

    queue_id: str
    kind: NotificationKind
    envelope: Envelope
    recipients: tuple[NotificationRecipient, ...]

    @property
    def notification_ids(self) -> tuple[int, ...]:
        return tuple(r.notification_id for r in self.recipients)

    @property
    def first_notification_id(self) -> int:
        """The oldest row of the group: the paging cursor of ``pending_notifications``."""
        return min(self.notification_ids)
