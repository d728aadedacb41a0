"""queue.sqlite — the embedded queue store: one SQLite file in WAL mode.

SYNOPSIS
    store = await SqliteStore.open(Path("/var/spool/postgate/queue.db"))
    queue_id = await store.enqueue(envelope, message)    # after commit + fsync
    leased = await store.lease_due(now, limit, lease_seconds, owner)
    message = await store.load_message(queue_id)
    await store.record_attempt(leased_recipient, result)
    groups = await store.pending_notifications(limit)    # the DSN outbox
    await store.finish_notifications(ids, dsn_queue_id)
    count = await store.hold(Selector(recipient_domain="example.com"))
    await store.close()

DESCRIPTION
    Implements the Store and NotificationOutbox protocols (queue.store) and
    QueueAdmin (queue.admin) for one node. Two threads own the two connections, so
    no SQLite call ever blocks the event loop:

    writer  every change (enqueue, lease, attempt result, operator action,
            notification done) goes through queue.sqlite_writer, which commits
            concurrent requests together (group commit: one fsync per batch).
    reader  load_message, next_due_at, list_messages, get_message, status_log
            and pending_notifications run on a one-thread executor with its own
            connection; WAL lets it read while the writer writes.

    The SQL itself is in queue.sqlite_ops and queue.sqlite_outbox, the tables in
    queue.sqlite_schema.

DURABILITY
    ``enqueue`` returns after COMMIT with ``synchronous=FULL``, i.e. after the WAL
    was fsync'd. A failed commit raises QueueError for every message of the batch
    (the receiver answers 451; nothing is acknowledged that is not on disk).

CONFIGURATION
    queue.path      The database file; its directory must exist.
    max_batch (512) Most requests one commit takes. Bigger batches save fsyncs
                    under load; the limit keeps one commit's latency bounded.

SEE ALSO
    queue.store, queue.admin, queue.sqlite_writer, queue.sqlite_ops, queue.scheduler
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from postgate.queue import sqlite_ops, sqlite_outbox
from postgate.queue.admin import Selector
from postgate.queue.ids import QueueIdGenerator
from postgate.queue.model import (
    AttemptResult,
    Envelope,
    LeasedRecipient,
    PendingNotification,
    QueuedMessageSummary,
    RecipientStatus,
    StatusLogEntry,
)
from postgate.queue.sqlite_ops import AdminAction
from postgate.queue.sqlite_schema import apply_schema, message_row, recipient_rows
from postgate.queue.sqlite_writer import SqliteWriter, connect
from postgate.queue.store import QueueError

T = TypeVar("T")


class SqliteStore:
    """The SQLite queue store. Make one with ``await SqliteStore.open(path)``."""

    def __init__(
        self,
        writer: SqliteWriter,
        reader: sqlite3.Connection,
        reader_executor: ThreadPoolExecutor,
        clock: Callable[[], float],
    ) -> None:
        self._writer = writer
        self.path = writer.path  # the queue file (its .lock and .wake live beside it)
        self._reader = reader
        self._reader_executor = reader_executor
        self._clock = clock
        self._ids = QueueIdGenerator(clock)

    @classmethod
    async def open(
        cls, path: Path, *, clock: Callable[[], float] = time.time, max_batch: int = 512
    ) -> SqliteStore:
        """Open (creating if needed) the queue at ``path``. Raises QueueError."""
        writer = SqliteWriter(Path(path), prepare=apply_schema, max_batch=max_batch)
        await writer.start()
        # One thread for reads: sqlite3 connections must not be used concurrently,
        # and the reads are short. The connection is only ever touched from it.
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postgate-queue-reader")
        try:
            reader = await asyncio.get_running_loop().run_in_executor(executor, connect, Path(path))
        except sqlite3.Error as exc:
            executor.shutdown(wait=False)
            await writer.close()
            raise QueueError(f"cannot open queue database {path}: {exc}") from exc
        return cls(writer, reader, executor, clock)

    @property
    def commit_count(self) -> int:
        """Commits made by the writer so far (tests use it to see group commit work)."""
        return self._writer.commit_count

    # --- Store protocol -----------------------------------------------------

    async def enqueue(
        self,
        envelope: Envelope,
        message: bytes,
        *,
        queue_id: str | None = None,
        hold: bool = False,
    ) -> str:
        if not envelope.recipients:
            raise QueueError("a message needs at least one recipient")
        now = self._clock()
        if queue_id is None:
            queue_id = self._ids.new()
        await self._writer.enqueue(
            message_row(queue_id, envelope, message, now),
            recipient_rows(queue_id, envelope, now, hold=hold),
        )
        return queue_id

    async def lease_due(
        self, now: float, limit: int, lease_seconds: float, owner: str
    ) -> list[LeasedRecipient]:
        lease_until = now + lease_seconds
        return await self._writer.run(
            lambda conn: sqlite_ops.lease_due(conn, now, limit, lease_until, owner)
        )

    async def record_attempt(self, leased: LeasedRecipient, result: AttemptResult) -> None:
        now = self._clock()
        await self._writer.run(lambda conn: sqlite_ops.record_attempt(conn, leased, result, now))

    async def load_message(self, queue_id: str) -> bytes:
        return await self._read(lambda conn: sqlite_ops.load_message(conn, queue_id))

    async def next_due_at(self) -> float | None:
        return await self._read(sqlite_ops.next_due_at)

    async def list_messages(
        self, statuses: Sequence[RecipientStatus] | None = None
    ) -> list[QueuedMessageSummary]:
        return await self._read(lambda conn: sqlite_ops.list_messages(conn, statuses))

    async def get_message(self, queue_id: str) -> QueuedMessageSummary | None:
        found = await self._read(lambda conn: sqlite_ops.list_messages(conn, None, queue_id))
        return found[0] if found else None

    async def status_log(self, queue_id: str) -> list[StatusLogEntry]:
        return await self._read(lambda conn: sqlite_ops.status_log(conn, queue_id))

    # --- NotificationOutbox -------------------------------------------------

    async def pending_notifications(
        self, limit: int = 100, *, after_id: int = 0
    ) -> list[PendingNotification]:
        return await self._read(
            lambda conn: sqlite_outbox.pending_notifications(conn, limit, after_id)
        )

    async def finish_notifications(
        self, notification_ids: Sequence[int], dsn_queue_id: str | None
    ) -> int:
        ids = list(notification_ids)
        return await self._writer.run(
            lambda conn: sqlite_outbox.finish_notifications(conn, ids, dsn_queue_id)
        )

    async def close(self) -> None:
        await self._writer.close()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._reader_executor, self._reader.close)
        self._reader_executor.shutdown(wait=True)

    # --- QueueAdmin ---------------------------------------------------------

    async def hold(self, selector: Selector) -> int:
        return await self._admin(AdminAction.HOLD, selector)

    async def release(self, selector: Selector) -> int:
        return await self._admin(AdminAction.RELEASE, selector)

    async def release_leases(self, owner: str) -> int:
        """Hand back the leases a dead process of ``owner`` left behind (see
        sqlite_ops.release_leases). Only call it for an owner name no live process uses."""
        now = self._clock()
        return await self._writer.run(lambda conn: sqlite_ops.release_leases(conn, owner, now))

    async def requeue(self, selector: Selector) -> int:
        return await self._admin(AdminAction.REQUEUE, selector)

    async def delete(self, selector: Selector) -> int:
        return await self._admin(AdminAction.DELETE, selector)

    async def _admin(self, action: AdminAction, selector: Selector) -> int:
        now = self._clock()
        return await self._writer.run(
            lambda conn: sqlite_ops.change_status(conn, action, selector, now)
        )

    async def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reader_executor, query, self._reader)
        except sqlite3.Error as exc:
            raise QueueError(f"queue read failed: {exc}") from exc
