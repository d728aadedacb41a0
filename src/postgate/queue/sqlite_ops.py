"""queue.sqlite_ops — the SQL of each queue operation, as plain functions.

SYNOPSIS
    lease_due(conn, now, limit, lease_until, owner) -> list[LeasedRecipient]
    record_attempt(conn, leased, result, now)
    change_status(conn, action, selector, now) -> int
    load_message(conn, queue_id) -> bytes
    next_due_at(conn) -> float | None
    list_messages(conn, statuses, queue_id=None) -> list[QueuedMessageSummary]
    status_log(conn, queue_id) -> list[StatusLogEntry]

DESCRIPTION
    Each function takes a connection and does its whole job there. Writing ones are
    run by the writer thread inside its batch transaction (queue.sqlite_writer);
    reading ones by the reader thread. Keeping the SQL here, apart from the threads
    and futures, lets a MariaDB or PostgreSQL store mirror it statement by statement.

    lease_due is a conditional UPDATE ... RETURNING: only rows that are still due
    at the moment of the update are taken, so two owners never get the same
    recipient (invariant 2). In PostgreSQL/MariaDB the inner SELECT becomes
    ``FOR UPDATE SKIP LOCKED``.

    record_attempt applies the new state only if the recipient still carries the
    lease this attempt was made under (``lease_until`` acts as a fencing token) and
    is not already final; the status-log row is written either way, because the
    attempt did happen (invariant 3). When the new state asks for a DSN it also
    writes the notification row, in the same transaction (queue.sqlite_outbox).

    Operator deletion writes no notification (Postfix's postsuper -d sends no
    bounce), but notifications already pending for the message are still sent.

SEE ALSO
    queue.sqlite, queue.sqlite_schema, queue.sqlite_outbox, queue.admin
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Sequence
from typing import Any

from postgate.queue.admin import Selector
from postgate.queue.model import (
    FINAL_STATUSES,
    AttemptResult,
    EnvelopeRecipient,
    LeasedRecipient,
    QueuedMessageSummary,
    QueuedRecipientSummary,
    RecipientStatus,
    StatusLogEntry,
)
from postgate.queue.sqlite_outbox import add_notification, remove_if_done
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
from postgate.queue.store import QueueError

_DUE_SQL = "('queued', 'deferred')"

_STATUS_LOG_INSERT = (
    "INSERT INTO status_log (queue_id, recipient_id, address, status, reply, enhanced_status,"
    " remote_host, remote_address, tls_version, attempt, logged_at)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)


class AdminAction(enum.Enum):
    HOLD = "hold"
    RELEASE = "release"
    REQUEUE = "requeue"
    DELETE = "delete"


# --- writes (writer thread) --------------------------------------------------


def lease_due(
    conn: sqlite3.Connection, now: float, limit: int, lease_until: float, owner: str
) -> list[LeasedRecipient]:
    rows = conn.execute(
        "UPDATE recipients SET lease_owner = ?, lease_until = ?, next_attempt_at = ?"
        " WHERE id IN (SELECT id FROM recipients"
        f"  WHERE status IN {_DUE_SQL} AND next_attempt_at <= ?"
        "  ORDER BY next_attempt_at LIMIT ?)"
        " RETURNING id, queue_id, address, original, notify, orcpt, attempts, first_queued_at",
        (owner, lease_until, lease_until, now, limit),
    ).fetchall()
    if not rows:
        return []
    queue_ids = sorted({row[1] for row in rows})
    envelopes = {}
    for chunk in chunks(queue_ids):
        everyone: dict[str, list[EnvelopeRecipient]] = {}
        for row in conn.execute(
            "SELECT queue_id, address, original, notify, orcpt FROM recipients"
            f" WHERE queue_id IN ({marks(len(chunk))}) ORDER BY id",
            chunk,
        ):
            everyone.setdefault(row[0], []).append(envelope_recipient_from_row(row[1:]))
        for row in conn.execute(
            f"SELECT {ENVELOPE_COLUMNS} FROM messages WHERE queue_id IN ({marks(len(chunk))})",
            chunk,
        ):
            envelopes[row[0]] = envelope_from_row(row, tuple(everyone.get(row[0], ())))
    leased = [
        LeasedRecipient(
            recipient_id=row[0],
            queue_id=row[1],
            address=row[2],
            original=row[3],
            notify=decode_notify(row[4]),
            orcpt=decode_orcpt(row[5]),
            attempts=row[6],
            first_queued_at=row[7],
            lease_until=lease_until,
            envelope=envelopes[row[1]],
        )
        for row in rows
        if row[1] in envelopes  # a recipient row without its message cannot be delivered
    ]
    leased.sort(key=lambda r: (r.queue_id, r.recipient_id))
    return leased


def release_leases(conn: sqlite3.Connection, owner: str, now: float) -> int:
    """Make every live lease of ``owner`` due now; for a restarted node whose previous
    process died holding them (its attempts can no longer report back)."""
    cursor = conn.execute(
        "UPDATE recipients SET lease_owner = NULL, lease_until = NULL, next_attempt_at = ?"
        f" WHERE lease_owner = ? AND lease_until > ? AND status IN {_DUE_SQL}",
        (now, owner, now),
    )
    return cursor.rowcount


def record_attempt(
    conn: sqlite3.Connection, leased: LeasedRecipient, result: AttemptResult, now: float
) -> bool:
    """Write the status row, the new recipient state and, when a DSN is wanted, the
    notification row; True if the state changed."""
    status = result.status
    if status not in (RecipientStatus.DELIVERED, RecipientStatus.DEFERRED, RecipientStatus.BOUNCED):
        raise QueueError(f"an attempt cannot end in status {status.value}")
    status_log_id = conn.execute(
        _STATUS_LOG_INSERT,
        (
            leased.queue_id,
            leased.recipient_id,
            leased.address,
            status.value,
            result.reply,
            result.enhanced_status,
            result.remote_host,
            result.remote_address,
            result.tls_version,
            leased.attempts + 1,
            now,
        ),
    ).lastrowid
    final = status in FINAL_STATUSES
    if final:
        next_attempt_at = None
    else:
        next_attempt_at = result.next_attempt_at if result.next_attempt_at is not None else now
    # A DEFERRED result for a recipient put on hold during the attempt keeps it held.
    changed = conn.execute(
        "UPDATE recipients SET"
        " status = CASE WHEN status = 'held' AND ? = 'deferred' THEN 'held' ELSE ? END,"
        " attempts = attempts + 1, next_attempt_at = ?, lease_owner = NULL,"
        " lease_until = NULL, last_reply = ?"
        f" WHERE id = ? AND lease_until = ? AND status NOT IN {FINAL_SQL}",
        (
            status.value,
            status.value,
            next_attempt_at,
            result.reply,
            leased.recipient_id,
            leased.lease_until,
        ),
    ).rowcount
    # A fenced (stale) attempt changed nothing, so it asks for no DSN either: the
    # current lease holder's outcome will.
    if changed:
        assert status_log_id is not None  # an INSERT always sets it
        add_notification(conn, leased, result, status_log_id, now)
    if changed and final:
        remove_if_done(conn, (leased.queue_id,))
    return bool(changed)


def _selector_sql(selector: Selector) -> tuple[str, list[Any]]:
    if selector.is_empty():
        return "0", []
    clauses: list[str] = []
    params: list[Any] = []
    if selector.queue_id is not None:
        clauses.append("queue_id = ?")
        params.append(selector.queue_id)
    if selector.sender is not None:
        clauses.append(
            "queue_id IN (SELECT queue_id FROM messages WHERE sender = ? COLLATE NOCASE)"
        )
        params.append(selector.sender)
    if selector.recipient is not None:
        clauses.append("address = ? COLLATE NOCASE")
        params.append(selector.recipient)
    if selector.recipient_domain is not None:
        # The domain is what follows the last '@' (a quoted local part may hold one
        # too, but never at the end); LIKE is ASCII case-insensitive.
        domain = selector.recipient_domain.lstrip("@")
        escaped = domain.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append("address LIKE ? ESCAPE '\\'")
        params.append(f"%@{escaped}")
    return " AND ".join(clauses) or "1", params


def change_status(
    conn: sqlite3.Connection, action: AdminAction, selector: Selector, now: float
) -> int:
    where, params = _selector_sql(selector)
    if action is AdminAction.HOLD:
        sql = f"UPDATE recipients SET status = 'held' WHERE status IN {_DUE_SQL} AND {where}"
        return conn.execute(sql, params).rowcount
    if action is AdminAction.RELEASE:
        # A recipient still leased by a delivery agent becomes due when that lease ends.
        sql = (
            "UPDATE recipients SET status = 'queued',"
            " next_attempt_at = MAX(?, COALESCE(lease_until, 0))"
            f" WHERE status = 'held' AND {where}"
        )
        return conn.execute(sql, [now, *params]).rowcount
    if action is AdminAction.REQUEUE:
        sql = (
            "UPDATE recipients SET next_attempt_at = ?"
            f" WHERE status IN {_DUE_SQL} AND (lease_until IS NULL OR lease_until <= ?)"
            f" AND {where}"
        )
        return conn.execute(sql, [now, now, *params]).rowcount
    rows = conn.execute(
        "UPDATE recipients SET status = 'deleted', next_attempt_at = NULL,"
        " lease_owner = NULL, lease_until = NULL, last_reply = 'deleted by operator'"
        f" WHERE status NOT IN {FINAL_SQL} AND {where}"
        " RETURNING id, queue_id, address, attempts",
        params,
    ).fetchall()
    conn.executemany(
        _STATUS_LOG_INSERT,
        [
            (
                queue_id,
                rid,
                address,
                "deleted",
                "deleted by operator",
                "",
                "",
                "",
                "",
                attempts,
                now,
            )
            for rid, queue_id, address, attempts in rows
        ],
    )
    remove_if_done(conn, sorted({row[1] for row in rows}))
    return len(rows)


# --- reads (reader thread) ---------------------------------------------------


def load_message(conn: sqlite3.Connection, queue_id: str) -> bytes:
    row = conn.execute("SELECT message FROM messages WHERE queue_id = ?", (queue_id,)).fetchone()
    if row is None:
        raise QueueError(f"{queue_id}: no such message in the queue")
    return bytes(row[0])


def next_due_at(conn: sqlite3.Connection) -> float | None:
    row = conn.execute(
        f"SELECT MIN(next_attempt_at) FROM recipients WHERE status IN {_DUE_SQL}"
    ).fetchone()
    return None if row[0] is None else float(row[0])


def list_messages(
    conn: sqlite3.Connection,
    statuses: Sequence[RecipientStatus] | None,
    queue_id: str | None = None,
) -> list[QueuedMessageSummary]:
    """Messages with at least one recipient in ``statuses`` (all when None), each
    with only those recipients, oldest first."""
    where: list[str] = []
    params: list[Any] = []
    if statuses is not None:
        where.append(f"status IN ({marks(len(statuses))})")
        params.extend(s.value for s in statuses)
    if queue_id is not None:
        where.append("queue_id = ?")
        params.append(queue_id)
    condition = " AND ".join(where) or "1"
    conn.execute("BEGIN")  # one snapshot for both queries
    try:
        recipients: dict[str, list[QueuedRecipientSummary]] = {}
        for row in conn.execute(
            "SELECT queue_id, id, address, original, status, attempts, next_attempt_at,"
            f" last_reply FROM recipients WHERE {condition} ORDER BY id",
            params,
        ):
            recipients.setdefault(row[0], []).append(
                QueuedRecipientSummary(
                    recipient_id=row[1],
                    address=row[2],
                    original=row[3],
                    status=RecipientStatus(row[4]),
                    attempts=row[5],
                    next_attempt_at=row[6],
                    last_reply=row[7],
                )
            )
        messages = conn.execute(
            "SELECT queue_id, sender, size, received_at FROM messages"
            f" WHERE queue_id IN (SELECT queue_id FROM recipients WHERE {condition})"
            " ORDER BY received_at, queue_id",
            params,
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    return [
        QueuedMessageSummary(
            queue_id=qid,
            sender=sender,
            size=size,
            received_at=received_at,
            recipients=tuple(recipients.get(qid, ())),
        )
        for qid, sender, size, received_at in messages
    ]


def status_log(conn: sqlite3.Connection, queue_id: str) -> list[StatusLogEntry]:
    return [
        status_log_entry_from_row(row)
        for row in conn.execute(
            "SELECT queue_id, recipient_id, address, status, reply, enhanced_status,"
            " remote_host, tls_version, attempt, logged_at FROM status_log"
            " WHERE queue_id = ? ORDER BY id",
            (queue_id,),
        )
    ]
