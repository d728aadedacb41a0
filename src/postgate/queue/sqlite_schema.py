"""queue.sqlite_schema — tables of the SQLite queue and the row codecs.

SYNOPSIS
    apply_schema(conn)                       # idempotent; records schema_version
    message_row(queue_id, envelope, message, now)
    recipient_rows(queue_id, envelope, now)
    envelope_from_row(row, recipients)

DESCRIPTION
    messages      one row per queued message: the envelope fields and the bytes.
                  Removed when every recipient is final.
    recipients    one row per envelope recipient: status, attempts, the next
                  attempt time and the lease (owner, until).
    status_log    one row per attempt or operator deletion; never removed by the
                  queue (invariant 3: the status log is the truth).
    notifications the DSN outbox: one row per recipient outcome that asks for a
                  DSN (kind failed, delayed or delivered), written in the same
                  transaction as its status-log row and pointing at it. ``done``
                  is set when the DSN is queued; a message is not removed while
                  it has an undone row. Done rows stay, naming the DSN's queue id.

    A leased recipient has ``next_attempt_at = lease_until``, so the "due" query is
    only ``status IN ('queued','deferred') AND next_attempt_at <= now`` on a partial
    index, and a lease that runs out makes the recipient due again by itself.

    ``recipients.delay_notified`` is 1 once a "delayed" notification was written
    for that recipient, so the sender is warned once, not at every retry.

    Times are unix seconds (REAL). NOTIFY is stored as a comma list, ORCPT as
    ``addr-type;address`` (RFC 3461 4.2 form, split at the first ';').

MIGRATIONS
    ``schema_version`` holds one row per version applied. A file of an older
    version is upgraded in place, in one transaction, by the statements of
    ``_MIGRATIONS`` (version 2: the notifications table and delay_notified);
    a file of a newer version is refused.

SEE ALSO
    queue.sqlite, queue.sqlite_writer
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from postgate.queue.model import (
    BodyType,
    DsnNotify,
    DsnRet,
    Envelope,
    EnvelopeRecipient,
    RecipientStatus,
    StatusLogEntry,
)
from postgate.queue.store import QueueError

SCHEMA_VERSION = 2

FINAL_SQL = "('delivered', 'bounced', 'deleted')"

# Stay well under SQLite's limit on host parameters in one statement.
_CHUNK = 500


def chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def marks(count: int) -> str:
    return ",".join("?" * count)


_NOTIFICATIONS_DDL = (
    """CREATE TABLE IF NOT EXISTS notifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue_id TEXT NOT NULL,
        recipient_id INTEGER NOT NULL,
        status_log_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        created_at REAL NOT NULL,
        done INTEGER NOT NULL DEFAULT 0,
        dsn_queue_id TEXT
    )""",
    """CREATE INDEX IF NOT EXISTS notifications_pending ON notifications (queue_id, kind)
        WHERE done = 0""",
)

_DDL = (
    """CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS messages (
        queue_id TEXT PRIMARY KEY,
        sender TEXT NOT NULL,
        ret TEXT,
        envid TEXT,
        smtputf8 INTEGER NOT NULL DEFAULT 0,
        body_type TEXT,
        client_address TEXT NOT NULL DEFAULT '',
        client_helo TEXT NOT NULL DEFAULT '',
        authenticated_user TEXT,
        received_at REAL NOT NULL,
        size INTEGER NOT NULL,
        message BLOB NOT NULL
    ) WITHOUT ROWID""",
    # AUTOINCREMENT: a recipient id is never reused, so status_log rows keep
    # pointing at one recipient even after old messages are removed.
    """CREATE TABLE IF NOT EXISTS recipients (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue_id TEXT NOT NULL,
        address TEXT NOT NULL,
        original TEXT NOT NULL DEFAULT '',
        notify TEXT,
        orcpt TEXT,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        lease_owner TEXT,
        lease_until REAL,
        last_reply TEXT NOT NULL DEFAULT '',
        first_queued_at REAL NOT NULL,
        delay_notified INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE INDEX IF NOT EXISTS recipients_due ON recipients (next_attempt_at)
        WHERE status IN ('queued', 'deferred')""",
    """CREATE INDEX IF NOT EXISTS recipients_queue_id ON recipients (queue_id)""",
    """CREATE TABLE IF NOT EXISTS status_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue_id TEXT NOT NULL,
        recipient_id INTEGER NOT NULL,
        address TEXT NOT NULL,
        status TEXT NOT NULL,
        reply TEXT NOT NULL,
        enhanced_status TEXT NOT NULL DEFAULT '',
        remote_host TEXT NOT NULL DEFAULT '',
        remote_address TEXT NOT NULL DEFAULT '',
        tls_version TEXT NOT NULL DEFAULT '',
        attempt INTEGER NOT NULL,
        logged_at REAL NOT NULL
    )""",
    """CREATE INDEX IF NOT EXISTS status_log_queue_id ON status_log (queue_id)""",
    *_NOTIFICATIONS_DDL,
)

# The columns of ``messages`` that make up an Envelope, in envelope_from_row order.
ENVELOPE_COLUMNS = (
    "queue_id, sender, ret, envid, smtputf8, body_type, client_address, client_helo,"
    " authenticated_user, received_at"
)


# Statements that bring a file of version ``key - 1`` to version ``key``.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE recipients ADD COLUMN delay_notified INTEGER NOT NULL DEFAULT 0",
        *_NOTIFICATIONS_DDL,
    ),
}


def apply_schema(conn: sqlite3.Connection) -> None:
    """Create the tables if missing, upgrade an older file, refuse a newer one."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        found = None
        if row is not None:
            found = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        if found is None:
            for statement in _DDL:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        elif found > SCHEMA_VERSION:
            raise QueueError(
                f"queue schema version {found} is newer than this postgate ({SCHEMA_VERSION})"
            )
        else:
            for version in range(found + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def encode_notify(notify: frozenset[DsnNotify] | None) -> str | None:
    if notify is None:
        return None
    return ",".join(sorted(n.value for n in notify))


def decode_notify(text: str | None) -> frozenset[DsnNotify] | None:
    if text is None:
        return None
    return frozenset(DsnNotify(part) for part in text.split(",") if part)


def encode_orcpt(orcpt: tuple[str, str] | None) -> str | None:
    return None if orcpt is None else f"{orcpt[0]};{orcpt[1]}"


def decode_orcpt(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    addr_type, _, address = text.partition(";")
    return (addr_type, address)


def message_row(queue_id: str, envelope: Envelope, message: bytes, now: float) -> tuple[Any, ...]:
    return (
        queue_id,
        envelope.sender,
        envelope.ret.value if envelope.ret is not None else None,
        envelope.envid,
        1 if envelope.smtputf8 else 0,
        envelope.body_type.value if envelope.body_type is not None else None,
        envelope.client_address,
        envelope.client_helo,
        envelope.authenticated_user,
        envelope.received_at or now,
        len(message),
        message,
    )


def recipient_rows(
    queue_id: str, envelope: Envelope, now: float, *, hold: bool = False
) -> list[tuple[Any, ...]]:
    first_queued_at = envelope.received_at or now
    status = "held" if hold else "queued"
    return [
        (
            queue_id,
            r.address,
            r.original,
            encode_notify(r.notify) if r.notify is not None else None,
            encode_orcpt(r.orcpt) if r.orcpt is not None else None,
            status,
            now,
            first_queued_at,
        )
        for r in envelope.recipients
    ]


def envelope_from_row(
    row: sqlite3.Row | tuple[Any, ...], recipients: tuple[EnvelopeRecipient, ...]
) -> Envelope:
    """Rebuild an Envelope from a row selected with ENVELOPE_COLUMNS."""
    (_, sender, ret, envid, smtputf8, body_type, address, helo, user, received_at) = row
    return Envelope(
        sender=sender,
        recipients=recipients,
        ret=DsnRet(ret) if ret is not None else None,
        envid=envid,
        smtputf8=bool(smtputf8),
        body_type=BodyType(body_type) if body_type is not None else None,
        client_address=address,
        client_helo=helo,
        authenticated_user=user,
        received_at=received_at,
    )


def envelope_recipient_from_row(row: tuple[Any, ...]) -> EnvelopeRecipient:
    """From (address, original, notify, orcpt)."""
    address, original, notify, orcpt = row
    return EnvelopeRecipient(
        address=address,
        original=original,
        notify=decode_notify(notify),
        orcpt=decode_orcpt(orcpt),
    )


def status_log_entry_from_row(row: Sequence[Any]) -> StatusLogEntry:
    """From (queue_id, recipient_id, address, status, reply, enhanced_status,
    remote_host, tls_version, attempt, logged_at)."""
    return StatusLogEntry(
        queue_id=row[0],
        recipient_id=row[1],
        address=row[2],
        status=RecipientStatus(row[3]),
        reply=row[4],
        enhanced_status=row[5],
        remote_host=row[6],
        tls_version=row[7],
        attempt=row[8],
        logged_at=row[9],
    )
