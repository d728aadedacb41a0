"""queue.sqlite_outbox — the DSN outbox of the SQLite queue, and message removal.

SYNOPSIS
    add_notification(conn, leased, result, status_log_id, now) -> NotificationKind | None
    remove_if_done(conn, queue_ids)
    finish_notifications(conn, notification_ids, dsn_queue_id) -> int
    pending_notifications(conn, limit, after_id) -> list[PendingNotification]

DESCRIPTION
    ARCHITECTURE.md invariant 4 (notifications cannot be lost): an outcome that
    asks for a DSN writes a ``notifications`` row in the same transaction as its
    status-log row and the recipient's new state (queue.sqlite_ops.record_attempt
    calls add_notification). The notifier (delivery.bounces) reads the pending rows,
    queues the DSN, then marks them done; until then the message stays.

    Which outcomes: BOUNCED asks for "failed", DELIVERED for "delivered",
    DEFERRED with ``delay_warning`` (set by the scheduler) for "delayed", at most
    once per recipient (``recipients.delay_notified``). Whether the sender wants
    it is decided here, at write time, by delivery.dsn.should_notify (RFC 3461
    4.1: NOTIFY, its default, and never for the null sender ``<>``), so a message
    that needs no DSN is removed at once instead of waiting for the notifier.

    remove_if_done removes a message when every recipient is final and none of
    its notifications is pending: the DSN needs the original message and its
    envelope. Status-log and notification rows stay.

    pending_notifications is a read (reader thread) and returns the pending rows
    grouped by (message, kind): one group is one DSN. Each recipient carries the
    exact status-log row that caused it, not merely the latest one.

SEE ALSO
    queue.sqlite_ops, queue.sqlite_schema, delivery.bounces, delivery.dsn
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from postgate.delivery.dsn import should_notify
from postgate.queue.model import (
    AttemptResult,
    Envelope,
    LeasedRecipient,
    NotificationKind,
    NotificationRecipient,
    PendingNotification,
    RecipientStatus,
)
from postgate.queue.sqlite_schema import (
    ENVELOPE_COLUMNS,
    FINAL_SQL,
    chunks,
    decode_notify,
    decode_orcpt,
    envelope_from_row,
    envelope_recipient_from_row,
    marks,
    status_log_entry_from_row,
)

# --- writes (writer thread) --------------------------------------------------


def add_notification(
    conn: sqlite3.Connection,
    leased: LeasedRecipient,
    result: AttemptResult,
    status_log_id: int,
    now: float,
) -> NotificationKind | None:
    """Write the notification this outcome asks for, if any; return its kind."""
    if result.status is RecipientStatus.BOUNCED:
        kind = NotificationKind.FAILED
    elif result.status is RecipientStatus.DELIVERED:
        if result.dsn_passed_on:
            # RFC 3461 5.2.2.1: the next hop got NOTIFY and will report success itself;
            # a second report from us would be wrong (we did not deliver it finally).
            return None
        kind = NotificationKind.RELAYED if result.relayed else NotificationKind.DELIVERED
    elif result.status is RecipientStatus.DEFERRED and result.delay_warning:
        kind = NotificationKind.DELAYED
    else:
        return None
    if not should_notify(leased.envelope, leased.notify, kind.value):
        return None
    if kind is NotificationKind.DELAYED:
        # Once per recipient: the flag flips in this same transaction.
        flipped = conn.execute(
            "UPDATE recipients SET delay_notified = 1 WHERE id = ? AND delay_notified = 0",
            (leased.recipient_id,),
        ).rowcount
        if not flipped:
            return None
    conn.execute(
        "INSERT INTO notifications (queue_id, recipient_id, status_log_id, kind, created_at)"
        " VALUES (?,?,?,?,?)",
        (leased.queue_id, leased.recipient_id, status_log_id, kind.value, now),
    )
    return kind


def remove_if_done(conn: sqlite3.Connection, queue_ids: Iterable[str]) -> None:
    """Remove messages whose recipients are all final and that have no pending
    notification (their status_log and notification rows stay)."""
    for queue_id in queue_ids:
        pending = conn.execute(
            f"SELECT 1 FROM recipients WHERE queue_id = ? AND status NOT IN {FINAL_SQL}"
            " UNION ALL SELECT 1 FROM notifications WHERE queue_id = ? AND done = 0 LIMIT 1",
            (queue_id, queue_id),
        ).fetchone()
        if pending is None:
            conn.execute("DELETE FROM recipients WHERE queue_id = ?", (queue_id,))
            conn.execute("DELETE FROM messages WHERE queue_id = ?", (queue_id,))


def finish_notifications(
    conn: sqlite3.Connection, notification_ids: Sequence[int], dsn_queue_id: str | None
) -> int:
    """Mark notifications done, naming the DSN that answered them (None when none
    was wanted after all), and remove their messages if now finished. Returns how
    many were still pending."""
    queue_ids: set[str] = set()
    done = 0
    for chunk in chunks(notification_ids):
        rows = conn.execute(
            "UPDATE notifications SET done = 1, dsn_queue_id = ?"
            f" WHERE done = 0 AND id IN ({marks(len(chunk))}) RETURNING queue_id",
            (dsn_queue_id, *chunk),
        ).fetchall()
        done += len(rows)
        queue_ids.update(row[0] for row in rows)
    remove_if_done(conn, sorted(queue_ids))
    return done


# --- reads (reader thread) ---------------------------------------------------

_GROUP_ROWS = (
    "SELECT n.id, r.id, r.address, r.original, r.notify, r.orcpt, r.first_queued_at, r.status,"
    " s.queue_id, s.recipient_id, s.address, s.status, s.reply, s.enhanced_status,"
    " s.remote_host, s.tls_version, s.attempt, s.logged_at"
    " FROM notifications n"
    " JOIN recipients r ON r.id = n.recipient_id"
    " JOIN status_log s ON s.id = n.status_log_id"
    " WHERE n.done = 0 AND n.queue_id = ? AND n.kind = ? ORDER BY r.id, n.id"
)


def pending_notifications(
    conn: sqlite3.Connection, limit: int, after_id: int = 0
) -> list[PendingNotification]:
    """Up to ``limit`` groups of pending notifications, one per (message, kind),
    oldest first, leaving out groups whose oldest row id is <= ``after_id``."""
    conn.execute("BEGIN")  # one snapshot for all the queries
    try:
        groups = conn.execute(
            "SELECT queue_id, kind, MIN(id) AS first FROM notifications WHERE done = 0"
            " GROUP BY queue_id, kind HAVING first > ? ORDER BY first LIMIT ?",
            (after_id, limit),
        ).fetchall()
        pending = []
        for queue_id, kind, _ in groups:
            envelope = _stored_envelope(conn, queue_id)
            if envelope is None:
                continue  # cannot happen while remove_if_done honours the outbox
            recipients = tuple(
                NotificationRecipient(
                    notification_id=row[0],
                    recipient_id=row[1],
                    address=row[2],
                    original=row[3],
                    notify=decode_notify(row[4]),
                    orcpt=decode_orcpt(row[5]),
                    first_queued_at=row[6],
                    status=RecipientStatus(row[7]),
                    attempt=status_log_entry_from_row(row[8:]),
                )
                for row in conn.execute(_GROUP_ROWS, (queue_id, kind))
            )
            if recipients:
                pending.append(
                    PendingNotification(queue_id, NotificationKind(kind), envelope, recipients)
                )
    finally:
        conn.execute("COMMIT")
    return pending


def _stored_envelope(conn: sqlite3.Connection, queue_id: str) -> Envelope | None:
    row = conn.execute(
        f"SELECT {ENVELOPE_COLUMNS} FROM messages WHERE queue_id = ?", (queue_id,)
    ).fetchone()
    if row is None:
        return None
    recipients = tuple(
        envelope_recipient_from_row(r)
        for r in conn.execute(
            "SELECT address, original, notify, orcpt FROM recipients WHERE queue_id = ?"
            " ORDER BY id",
            (queue_id,),
        )
    )
    return envelope_from_row(row, recipients)
