"""SqliteStore on real files: durability, group commit, leases, attempts."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from pathlib import Path

import pytest

from postgate.queue import open_store
from postgate.queue.model import (
    AttemptResult,
    BodyType,
    DsnNotify,
    DsnRet,
    Envelope,
    EnvelopeRecipient,
    RecipientStatus,
)
from postgate.queue.sqlite import SqliteStore
from postgate.queue.sqlite_schema import SCHEMA_VERSION
from postgate.queue.store import QueueError
from tests.queue.conftest import FakeClock, make_envelope

MESSAGE = b"Subject: test\r\n\r\nhello\r\n"


def delivered(reply: str = "250 2.0.0 ok") -> AttemptResult:
    return AttemptResult(RecipientStatus.DELIVERED, reply, "2.0.0", remote_host="mx.example.com")


def deferred(next_attempt_at: float) -> AttemptResult:
    return AttemptResult(
        RecipientStatus.DEFERRED, "451 4.4.1 try later", "4.4.1", next_attempt_at=next_attempt_at
    )


async def test_200_concurrent_enqueues_get_distinct_ids_and_survive_reopen(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "queue.db"
    store = await SqliteStore.open(path, clock=clock)
    commits_before = store.commit_count
    ids = await asyncio.gather(
        *(
            store.enqueue(make_envelope("a@example.org", f"r{i}@example.com"), MESSAGE)
            for i in range(200)
        )
    )
    commits = store.commit_count - commits_before
    await store.close()

    assert len(set(ids)) == 200
    # Group commit: the 200 concurrent callers shared far fewer commits than 200.
    assert 1 <= commits < 50

    reopened = await SqliteStore.open(path, clock=clock)
    try:
        listed = await reopened.list_messages()
        assert {m.queue_id for m in listed} == set(ids)
        for queue_id in ids[:5]:
            assert await reopened.load_message(queue_id) == MESSAGE
    finally:
        await reopened.close()


async def test_sequential_enqueues_commit_once_each(store: SqliteStore) -> None:
    before = store.commit_count
    for _ in range(3):
        await store.enqueue(make_envelope(), MESSAGE)
    assert store.commit_count - before == 3


async def test_database_is_in_wal_mode_with_schema_version(
    store: SqliteStore, tmp_path: Path
) -> None:
    await store.enqueue(make_envelope(), MESSAGE)
    conn = sqlite3.connect(tmp_path / "queue.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    finally:
        conn.close()


async def test_the_wal_is_checkpointed_and_stays_bounded(
    store: SqliteStore, tmp_path: Path
) -> None:
    # SQLite's auto-checkpoint is off (it would run inside COMMIT, in front of the
    # replies); the checkpointer thread copies the WAL and the writer finishes the copy
    # between batches. Without that the WAL would hold all 24 MiB below; with it, at
    # most two checkpoint intervals (4 MiB each) and a message.
    big = b"Subject: big\r\n\r\n" + b"x" * (1 << 20) + b"\r\n"
    ids = [await store.enqueue(make_envelope(), big) for _ in range(24)]
    assert (tmp_path / "queue.db-wal").stat().st_size < 10 << 20
    assert (tmp_path / "queue.db").stat().st_size > 12 << 20  # copied into the database
    assert await store.load_message(ids[0]) == big


async def test_a_writer_waits_for_its_turn_then_commits(store: SqliteStore, tmp_path: Path) -> None:
    # Another process's writer (a second server worker, the CLI) holds the turn:
    # ours must wait for it rather than write beside it, then carry on.
    lock_path = tmp_path / "queue.db.lock"
    other = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        pending = asyncio.ensure_future(
            store.enqueue(make_envelope("a@example.org", "b@example.com"), MESSAGE)
        )
        done, _ = await asyncio.wait([pending], timeout=0.5)
        assert not done, "enqueue committed while another writer held the turn"
        fcntl.flock(other, fcntl.LOCK_UN)
        queue_id = await asyncio.wait_for(pending, 10)
    finally:
        os.close(other)
    assert [m.queue_id for m in await store.list_messages()] == [queue_id]


async def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    await (await SqliteStore.open(path)).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(QueueError, match="newer"):
        await SqliteStore.open(path)


async def test_envelope_round_trips_through_a_lease(store: SqliteStore, clock: FakeClock) -> None:
    envelope = Envelope(
        sender="",
        recipients=(
            EnvelopeRecipient(
                address="bob@example.com",
                original="Bob@Example.com",
                notify=frozenset({DsnNotify.FAILURE, DsnNotify.DELAY}),
                orcpt=("rfc822", "bob;x@example.com"),
            ),
            EnvelopeRecipient(address="carol@example.net"),
        ),
        ret=DsnRet.HDRS,
        envid="env-1",
        smtputf8=True,
        body_type=BodyType.EIGHT_BIT_MIME,
        client_address="2001:db8::1",
        client_helo="helo.example",
        authenticated_user="alice",
        received_at=clock.now - 5,
    )
    queue_id = await store.enqueue(envelope, MESSAGE)
    leased = await store.lease_due(clock.now, 10, 60, "node1")

    assert [r.address for r in leased] == ["bob@example.com", "carol@example.net"]
    first = leased[0]
    assert first.queue_id == queue_id
    assert first.original == "Bob@Example.com"
    assert first.notify == frozenset({DsnNotify.FAILURE, DsnNotify.DELAY})
    assert first.orcpt == ("rfc822", "bob;x@example.com")
    assert first.attempts == 0
    assert first.first_queued_at == clock.now - 5
    assert first.lease_until == clock.now + 60
    assert first.envelope == envelope
    assert leased[1].notify is None and leased[1].orcpt is None


async def test_enqueue_without_recipients_is_refused(store: SqliteStore) -> None:
    with pytest.raises(QueueError):
        await store.enqueue(Envelope(sender="a@example.org", recipients=()), MESSAGE)


async def test_failed_insert_fails_only_its_caller_and_loses_nobody(store: SqliteStore) -> None:
    # Force primary-key clashes: every enqueue names the same queue id.
    outcomes = await asyncio.gather(
        *(store.enqueue(make_envelope(), MESSAGE, queue_id="0000000000000000") for _ in range(10)),
        return_exceptions=True,
    )
    succeeded = [o for o in outcomes if isinstance(o, str)]
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert succeeded == ["0000000000000000"]
    assert len(failed) == 9 and all(isinstance(e, QueueError) for e in failed)
    # What was acknowledged is exactly what is stored.
    [message] = await store.list_messages()
    assert message.queue_id == "0000000000000000"
    assert len(message.recipients) == 1


async def test_a_good_message_shares_a_batch_with_a_bad_one(store: SqliteStore) -> None:
    await store.enqueue(make_envelope(), MESSAGE, queue_id="1111111111111111")
    good, bad = await asyncio.gather(
        store.enqueue(make_envelope(), MESSAGE),
        store.enqueue(make_envelope(), MESSAGE, queue_id="1111111111111111"),
        return_exceptions=True,
    )
    assert isinstance(good, str) and isinstance(bad, QueueError)
    assert await store.load_message(good) == MESSAGE


async def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store = await open_store(f"sqlite://{tmp_path / 'q.db'}")
    await store.close()
    with pytest.raises(QueueError):
        await store.enqueue(make_envelope(), MESSAGE)


async def test_open_store_refuses_unknown_scheme() -> None:
    with pytest.raises(QueueError, match="unsupported"):
        await open_store("redis://localhost/0")


async def test_two_owners_never_lease_the_same_recipient(
    store: SqliteStore, clock: FakeClock
) -> None:
    for i in range(30):
        await store.enqueue(
            make_envelope("a@example.org", f"r{i}@example.com", "x@example.net"), MESSAGE
        )
    first, second = await asyncio.gather(
        store.lease_due(clock.now, 40, 60, "A"), store.lease_due(clock.now, 40, 60, "B")
    )
    ids_a = {r.recipient_id for r in first}
    ids_b = {r.recipient_id for r in second}
    assert ids_a.isdisjoint(ids_b)
    assert len(ids_a | ids_b) == 60
    # All are leased now: nothing more is due.
    assert await store.lease_due(clock.now, 100, 60, "C") == []


async def test_expired_lease_is_leased_again_and_the_stale_owner_is_fenced(
    store: SqliteStore, clock: FakeClock
) -> None:
    queue_id = await store.enqueue(make_envelope(), MESSAGE)
    [by_a] = await store.lease_due(clock.now, 10, 60, "A")
    clock.advance(30)
    assert await store.lease_due(clock.now, 10, 60, "B") == []
    clock.advance(31)
    [by_b] = await store.lease_due(clock.now, 10, 60, "B")
    assert by_b.recipient_id == by_a.recipient_id

    # A comes back late: its attempt is logged, but B's lease decides the state.
    await store.record_attempt(by_a, delivered("250 late"))
    message = await store.get_message(queue_id)
    assert message is not None
    assert message.recipients[0].status is RecipientStatus.QUEUED
    assert [e.reply for e in await store.status_log(queue_id)] == ["250 late"]

    await store.record_attempt(by_b, delivered("250 by B"))
    assert await store.get_message(queue_id) is None


async def test_deferred_keeps_the_recipient_with_its_next_attempt(
    store: SqliteStore, clock: FakeClock
) -> None:
    queue_id = await store.enqueue(make_envelope(), MESSAGE)
    [leased] = await store.lease_due(clock.now, 10, 60, "A")
    await store.record_attempt(leased, deferred(clock.now + 300))

    message = await store.get_message(queue_id)
    assert message is not None
    [recipient] = message.recipients
    assert recipient.status is RecipientStatus.DEFERRED
    assert recipient.attempts == 1
    assert recipient.next_attempt_at == clock.now + 300
    assert recipient.last_reply == "451 4.4.1 try later"
    assert await store.next_due_at() == clock.now + 300
    # Lease released, but not due before next_attempt_at.
    assert await store.lease_due(clock.now + 299, 10, 60, "B") == []
    [again] = await store.lease_due(clock.now + 300, 10, 60, "B")
    assert again.attempts == 1

    [entry] = await store.status_log(queue_id)
    assert entry.status is RecipientStatus.DEFERRED
    assert entry.attempt == 1
    assert entry.enhanced_status == "4.4.1"
    assert entry.logged_at == clock.now


async def test_message_is_removed_when_all_recipients_are_final(
    store: SqliteStore, clock: FakeClock
) -> None:
    queue_id = await store.enqueue(
        make_envelope("a@example.org", "b@example.com", "c@example.com"), MESSAGE
    )
    first, second = await store.lease_due(clock.now, 10, 60, "A")
    await store.record_attempt(first, delivered())
    assert await store.get_message(queue_id) is not None  # one still pending
    await store.record_attempt(
        second, AttemptResult(RecipientStatus.BOUNCED, "550 5.1.1 no such user", "5.1.1")
    )
    # All final, but the bounce's DSN is still pending: the DSN needs the message.
    assert await store.get_message(queue_id) is not None
    [pending] = await store.pending_notifications()
    assert await store.finish_notifications(pending.notification_ids, "DSNQUEUEID") == 1

    assert await store.get_message(queue_id) is None
    with pytest.raises(QueueError):
        await store.load_message(queue_id)
    log = await store.status_log(queue_id)
    assert [(e.address, e.status) for e in log] == [
        ("b@example.com", RecipientStatus.DELIVERED),
        ("c@example.com", RecipientStatus.BOUNCED),
    ]
    assert log[0].remote_host == "mx.example.com"
    assert await store.next_due_at() is None


async def test_an_attempt_cannot_end_held(store: SqliteStore, clock: FakeClock) -> None:
    await store.enqueue(make_envelope(), MESSAGE)
    [leased] = await store.lease_due(clock.now, 10, 60, "A")
    with pytest.raises(QueueError):
        await store.record_attempt(leased, AttemptResult(RecipientStatus.HELD, "no"))


async def test_list_messages_filters_by_status(store: SqliteStore, clock: FakeClock) -> None:
    queue_id = await store.enqueue(
        make_envelope("a@example.org", "b@example.com", "c@example.com"), MESSAGE
    )
    first, _ = await store.lease_due(clock.now, 10, 60, "A")
    await store.record_attempt(first, deferred(clock.now + 60))

    [message] = await store.list_messages([RecipientStatus.DEFERRED])
    assert message.queue_id == queue_id
    assert message.sender == "a@example.org"
    assert message.size == len(MESSAGE)
    assert [r.address for r in message.recipients] == ["b@example.com"]
    assert await store.list_messages([RecipientStatus.HELD]) == []
    [everything] = await store.list_messages()
    assert len(everything.recipients) == 2


async def test_queue_files_are_private(tmp_path: Path) -> None:
    # The queue holds whole messages: nobody but the server's user may read it.
    store = await SqliteStore.open(tmp_path / "queue.db")
    try:
        for path in tmp_path.glob("queue.db*"):
            assert path.stat().st_mode & 0o077 == 0, path
    finally:
        await store.close()
