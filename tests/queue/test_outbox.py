"""The notification outbox of the SQLite store: rows, removal rule, migration."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from postgate.queue.admin import Selector
from postgate.queue.model import (
    AttemptResult,
    DsnNotify,
    Envelope,
    EnvelopeRecipient,
    NotificationKind,
    RecipientStatus,
)
from postgate.queue.sqlite import SqliteStore
from postgate.queue.sqlite_schema import SCHEMA_VERSION
from postgate.queue.store import NotificationOutbox
from tests.queue.conftest import FakeClock, make_envelope

MESSAGE = b"Subject: test\r\n\r\nhello\r\n"
BOUNCED = AttemptResult(RecipientStatus.BOUNCED, "550 5.1.1 no such user", "5.1.1", "mx.example")
DELIVERED = AttemptResult(RecipientStatus.DELIVERED, "250 2.0.0 ok", "2.0.0", "mx.example")


def deferred(*, warn: bool) -> AttemptResult:
    return AttemptResult(
        RecipientStatus.DEFERRED,
        "451 4.4.1 later",
        "4.4.1",
        next_attempt_at=0.0,
        delay_warning=warn,
    )


async def notification_rows(path: Path) -> list[tuple[str, int, str | None]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT kind, done, dsn_queue_id FROM notifications ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


async def test_bounce_writes_one_row_pointing_at_its_status_log_row(
    store: SqliteStore, clock: FakeClock
) -> None:
    outbox: NotificationOutbox = store  # the notifier's view of the store (checked by mypy)
    queue_id = await store.enqueue(make_envelope("a@example.org", "b@example.com"), MESSAGE)
    [leased] = await store.lease_due(clock.now, 10, 60, "A")
    clock.advance(5)
    await store.record_attempt(leased, BOUNCED)

    [group] = await outbox.pending_notifications()
    assert (group.queue_id, group.kind) == (queue_id, NotificationKind.FAILED)
    assert group.envelope.sender == "a@example.org"
    [recipient] = group.recipients
    assert recipient.address == "b@example.com"
    assert recipient.status is RecipientStatus.BOUNCED
    assert recipient.attempt.reply == "550 5.1.1 no such user"
    assert recipient.attempt.remote_host == "mx.example"
    assert recipient.attempt.logged_at == clock.now


async def test_delay_warning_is_written_once_per_recipient(
    store: SqliteStore, clock: FakeClock, tmp_path: Path
) -> None:
    await store.enqueue(make_envelope("a@example.org", "b@example.com"), MESSAGE)
    for warn in (False, True, True, True):
        [leased] = await store.lease_due(clock.now, 10, 60, "A")
        await store.record_attempt(leased, deferred(warn=warn))
    assert await notification_rows(tmp_path / "queue.db") == [("delayed", 0, None)]


async def test_a_fenced_stale_attempt_writes_no_notification(
    store: SqliteStore, clock: FakeClock
) -> None:
    await store.enqueue(make_envelope("a@example.org", "b@example.com"), MESSAGE)
    [stale] = await store.lease_due(clock.now, 10, 60, "A")
    clock.advance(61)
    [current] = await store.lease_due(clock.now, 10, 60, "B")
    await store.record_attempt(stale, BOUNCED)
    assert await store.pending_notifications() == []
    await store.record_attempt(current, BOUNCED)
    assert len(await store.pending_notifications()) == 1


async def test_operator_delete_writes_no_notification(store: SqliteStore, tmp_path: Path) -> None:
    queue_id = await store.enqueue(make_envelope("a@example.org", "b@example.com"), MESSAGE)
    assert await store.delete(Selector(queue_id=queue_id)) == 1
    assert await store.get_message(queue_id) is None
    assert await notification_rows(tmp_path / "queue.db") == []


async def test_message_stays_until_recipients_final_and_notifications_done(
    store: SqliteStore, clock: FakeClock, tmp_path: Path
) -> None:
    queue_id = await store.enqueue(
        make_envelope("a@example.org", "b@example.com", "c@example.com"), MESSAGE
    )
    first, second = await store.lease_due(clock.now, 10, 60, "A")
    await store.record_attempt(first, BOUNCED)
    [group] = await store.pending_notifications()
    assert await store.finish_notifications(group.notification_ids, "DSN1") == 1
    assert await store.get_message(queue_id) is not None  # c is still to be delivered
    assert await store.finish_notifications(group.notification_ids, "DSN1") == 0  # idempotent

    await store.record_attempt(second, DELIVERED)  # no NOTIFY=SUCCESS: nothing pending
    assert await store.get_message(queue_id) is None
    assert await notification_rows(tmp_path / "queue.db") == [("failed", 1, "DSN1")]


async def test_groups_by_message_and_kind_and_pages_by_oldest_row(
    store: SqliteStore, clock: FakeClock
) -> None:
    success = frozenset({DsnNotify.SUCCESS, DsnNotify.FAILURE})
    envelope = Envelope(
        sender="a@example.org",
        recipients=tuple(
            EnvelopeRecipient(address, address, notify=success)
            for address in ("b@example.com", "c@example.com", "d@example.com")
        ),
    )
    queue_id = await store.enqueue(envelope, MESSAGE)
    b, c, d = await store.lease_due(clock.now, 10, 60, "A")
    await store.record_attempt(b, BOUNCED)
    await store.record_attempt(c, DELIVERED)
    await store.record_attempt(d, BOUNCED)

    groups = await store.pending_notifications()
    assert [(g.queue_id, g.kind, [r.address for r in g.recipients]) for g in groups] == [
        (queue_id, NotificationKind.FAILED, ["b@example.com", "d@example.com"]),
        (queue_id, NotificationKind.DELIVERED, ["c@example.com"]),
    ]
    [first_page] = await store.pending_notifications(1)
    assert first_page.kind is NotificationKind.FAILED
    [second_page] = await store.pending_notifications(1, after_id=first_page.first_notification_id)
    assert second_page.kind is NotificationKind.DELIVERED
    assert await store.pending_notifications(after_id=second_page.first_notification_id) == []


V1_SCHEMA = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    "INSERT INTO schema_version VALUES (1)",
    """CREATE TABLE messages (queue_id TEXT PRIMARY KEY, sender TEXT NOT NULL, ret TEXT,
        envid TEXT, smtputf8 INTEGER NOT NULL DEFAULT 0, body_type TEXT,
        client_address TEXT NOT NULL DEFAULT '', client_helo TEXT NOT NULL DEFAULT '',
        authenticated_user TEXT, received_at REAL NOT NULL, size INTEGER NOT NULL,
        message BLOB NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE recipients (id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue_id TEXT NOT NULL, address TEXT NOT NULL, original TEXT NOT NULL DEFAULT '',
        notify TEXT, orcpt TEXT, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL, lease_owner TEXT, lease_until REAL,
        last_reply TEXT NOT NULL DEFAULT '', first_queued_at REAL NOT NULL)""",
    """CREATE INDEX recipients_due ON recipients (next_attempt_at)
        WHERE status IN ('queued', 'deferred')""",
    "CREATE INDEX recipients_queue_id ON recipients (queue_id)",
    """CREATE TABLE status_log (id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue_id TEXT NOT NULL, recipient_id INTEGER NOT NULL, address TEXT NOT NULL,
        status TEXT NOT NULL, reply TEXT NOT NULL, enhanced_status TEXT NOT NULL DEFAULT '',
        remote_host TEXT NOT NULL DEFAULT '', remote_address TEXT NOT NULL DEFAULT '',
        tls_version TEXT NOT NULL DEFAULT '', attempt INTEGER NOT NULL,
        logged_at REAL NOT NULL)""",
    "CREATE INDEX status_log_queue_id ON status_log (queue_id)",
    "INSERT INTO messages VALUES ('OLDQUEUEID000001', 'a@example.org', NULL, NULL, 0, NULL,"
    " '', '', NULL, 1000.0, 24, X'5375626A6563743A20746573740D0A0D0A68656C6C6F0D0A')",
    "INSERT INTO recipients (queue_id, address, original, status, next_attempt_at,"
    " first_queued_at) VALUES ('OLDQUEUEID000001', 'b@example.com', 'b@example.com',"
    " 'queued', 1000.0, 1000.0)",
)


async def test_a_version_1_queue_is_migrated_and_keeps_working(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "queue.db"
    conn = sqlite3.connect(path)
    for statement in V1_SCHEMA:
        conn.execute(statement)
    conn.commit()
    conn.close()

    store = await SqliteStore.open(path, clock=clock)
    try:
        assert await store.load_message("OLDQUEUEID000001") == MESSAGE
        [leased] = await store.lease_due(clock.now, 10, 60, "A")
        await store.record_attempt(leased, BOUNCED)
        [group] = await store.pending_notifications()
        assert group.queue_id == "OLDQUEUEID000001"
    finally:
        await store.close()
    assert schema_versions(path) == [(1,), (SCHEMA_VERSION,)]
    # Opening again does not migrate twice.
    await (await SqliteStore.open(path, clock=clock)).close()
    assert schema_versions(path) == [(1,), (SCHEMA_VERSION,)]


def schema_versions(path: Path) -> list[tuple[int]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    finally:
        conn.close()
