"""queue.sqlite_writer — the one SQLite writer, with group commit.

SYNOPSIS
    writer = SqliteWriter(path, prepare=apply_schema)
    await writer.start()
    await writer.enqueue(message_row, recipient_rows)   # returns after commit + fsync
    result = await writer.run(operation)                # operation(conn) in a transaction
    writer.commit_count                                  # for tests and metrics
    await writer.close()

DESCRIPTION
    SQLite allows one writer at a time, so one dedicated thread owns the write
    connection and every change to the queue goes through it: enqueues, leases,
    attempt results and operator actions. Callers put a request on a thread-safe
    queue and await an asyncio future.

    The thread takes everything pending (at most ``max_batch`` requests), runs it in
    ONE transaction and commits once. With ``synchronous=FULL`` in WAL mode that
    commit is one fsync of the WAL for the whole batch: this is group commit, and it
    is what lets many concurrent SMTP sessions share the cost of durability. While a
    batch is being synced the next one piles up in the queue, so batches grow by
    themselves under load and stay at one request when idle (no added latency).

    Enqueues of a batch are inserted with two ``executemany`` calls inside one
    savepoint (if that fails, they are retried one by one so only the culprit
    fails); every other operation runs inside a savepoint of its own, so one bad
    operation fails only its own caller. If the COMMIT itself fails (disk full, I/O
    error) every caller of the batch gets a QueueError: none is lost silently, the
    receiver answers 451 and the client retries.

    Futures are settled with one ``call_soon_threadsafe`` per event loop per batch,
    keeping per-message cross-thread work small.

    Checkpoints (copying the WAL into the database file) run on a thread of their
    own, beside the writer, so no batch waits for one (queue.sqlite_checkpointer).

DURABILITY
    A future is resolved only after COMMIT returned, i.e. after SQLite synced the
    WAL (invariant 1: 250 means durable).

SEE ALSO
    queue.sqlite, queue.sqlite_schema
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import json
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog

from postgate.queue.sqlite_checkpointer import Checkpointer
from postgate.queue.store import QueueError
from postgate.sqlite_file import use_wal

T = TypeVar("T")

log = structlog.get_logger("postgate.queue")

_MESSAGE_COLUMNS = (
    "INSERT INTO messages (queue_id, sender, ret, envid, smtputf8, body_type,"
    " client_address, client_helo, authenticated_user, received_at, size, message) VALUES "
)
_MESSAGE_VALUES = "(?,?,?,?,?,?,?,?,?,?,?,?)"
_RECIPIENT_COLUMNS = (
    "INSERT INTO recipients (queue_id, address, original, notify, orcpt, status,"
    " attempts, next_attempt_at, first_queued_at) VALUES "
)
_RECIPIENT_VALUES = "(?,?,?,?,?,?,0,?,?)"
MESSAGE_INSERT = _MESSAGE_COLUMNS + _MESSAGE_VALUES

# The one-statement enqueue. The sqlite3 module releases the GIL around every
# prepare, step and reset, and each time the writer thread gets it back it may wait
# up to the switch interval for a busy event loop: BEGIN, SAVEPOINT, two INSERTs,
# RELEASE and COMMIT cost up to a dozen such waits per batch, and every session of
# the batch waits with them for its 250. A multi-row INSERT into this view is ONE
# statement: in autocommit mode SQLite runs it as its own transaction (commit and
# WAL sync included) and the trigger writes both tables. Temporary objects live only
# on the writer's connection; the queue file's schema is unchanged.
_ENQUEUE_VIEW_COLUMNS = (
    "queue_id, sender, ret, envid, smtputf8, body_type, client_address, client_helo,"
    " authenticated_user, received_at, size, message, status, next_attempt_at, recipients"
)
_ENQUEUE_VIEW_DDL = "CREATE TEMP VIEW IF NOT EXISTS enqueue_batch AS SELECT " + ", ".join(
    f"NULL AS {name.strip()}" for name in _ENQUEUE_VIEW_COLUMNS.split(",")
)
_ENQUEUE_TRIGGER_DDL = """CREATE TEMP TRIGGER IF NOT EXISTS enqueue_batch_insert
    INSTEAD OF INSERT ON enqueue_batch
    BEGIN
        INSERT INTO messages (queue_id, sender, ret, envid, smtputf8, body_type,
            client_address, client_helo, authenticated_user, received_at, size, message)
        VALUES (NEW.queue_id, NEW.sender, NEW.ret, NEW.envid, NEW.smtputf8, NEW.body_type,
            NEW.client_address, NEW.client_helo, NEW.authenticated_user, NEW.received_at,
            NEW.size, NEW.message);
        INSERT INTO recipients (queue_id, address, original, notify, orcpt, status,
            attempts, next_attempt_at, first_queued_at)
        SELECT NEW.queue_id, json_extract(value, '$[0]'), json_extract(value, '$[1]'),
            json_extract(value, '$[2]'), json_extract(value, '$[3]'), NEW.status,
            0, NEW.next_attempt_at, NEW.received_at
        FROM json_each(NEW.recipients) ORDER BY key;
    END"""
_ENQUEUE_VIEW_INSERT = f"INSERT INTO enqueue_batch ({_ENQUEUE_VIEW_COLUMNS}) VALUES "
_ENQUEUE_VIEW_VALUES = "(" + ",".join("?" * 15) + ")"

RECIPIENT_INSERT = _RECIPIENT_COLUMNS + _RECIPIENT_VALUES
# Rows per multi-row INSERT: well under SQLite's 32,766 bound variables.
_ROWS_PER_INSERT = 256


def insert_rows(
    conn: sqlite3.Connection, columns: str, values: str, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert ``rows`` with as few statements as possible.

    Each statement is one sqlite3_step, and the sqlite3 module releases the GIL around
    every step. Getting it back waits for the event loop thread to let go of it (up
    to the switch interval when the loop is busy), so executemany's one step per row
    made a batch's latency grow with its size. One multi-row INSERT is one wait.
    """
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        part = rows[start : start + _ROWS_PER_INSERT]
        sql = columns + ",".join([values] * len(part))
        conn.execute(sql, [value for row in part for value in row])


MessageRow = tuple[Any, ...]
RecipientRow = tuple[Any, ...]
Operation = Callable[[sqlite3.Connection], Any]


def enqueue_view_row(
    message_row: MessageRow, recipient_rows: Sequence[RecipientRow]
) -> tuple[Any, ...] | None:
    """The enqueue_batch row for one message, or None if its recipients differ in
    what the view takes once per message (status, next attempt, first queued time),
    or hold a NUL: SQLite's JSON functions end a string at an escaped NUL (an ORCPT
    may decode to one), so such a message takes the long way, bound parameters."""
    if not recipient_rows:
        return None
    _, _, _, _, _, status, next_attempt_at, first_queued_at = recipient_rows[0]
    if first_queued_at != message_row[9]:
        return None
    people = []
    for _, address, original, notify, orcpt, r_status, r_next, r_first in recipient_rows:
        if r_status != status or r_next != next_attempt_at or r_first != first_queued_at:
            return None
        person = (address, original, notify, orcpt)
        if any(isinstance(field, str) and "\0" in field for field in person):
            return None
        people.append(person)
    recipients = json.dumps(people, ensure_ascii=False, separators=(",", ":"))
    return (*message_row, status, next_attempt_at, recipients)


class _Enqueue:
    __slots__ = ("future", "loop", "message_row", "recipient_rows")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        message_row: MessageRow,
        recipient_rows: Sequence[RecipientRow],
    ) -> None:
        self.loop = loop
        self.future = future
        self.message_row = message_row
        self.recipient_rows = recipient_rows


class _Run:
    __slots__ = ("future", "loop", "operation")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], operation: Operation
    ) -> None:
        self.loop = loop
        self.future = future
        self.operation = operation


_STOP = object()

# Roughly SQLite's default auto-checkpoint point (1,000 pages of 4 KiB).
_CHECKPOINT_AFTER_BYTES = 4 << 20

# What a batch adds to the WAL, measured on this schema (WAL size over commits, 1-100
# recipients, 1-30 messages per batch; within about a third): every commit rewrites
# some seven 4 KiB pages (table and index leaves) however small it is; a message adds
# its bytes and about two pages; a recipient about 400 bytes of row and index entries.
# Counting only the message bytes, as before, undercounted by 2x to 10x, and with
# many recipients the WAL grew well past the checkpoint point.
_WAL_PER_COMMIT = 28 << 10
_WAL_PER_MESSAGE = 8 << 10
_WAL_PER_RECIPIENT = 400
_WAL_PER_OPERATION = 4 << 10


# Message bytes after which a batch takes no more requests. The WAL holds a whole
# transaction whatever the checkpoints do: fifty sessions of 1 MB messages made one
# commit of dozens of megabytes (the WAL peaked at 39 MiB). Past a few MiB a bigger
# batch saves no fsync worth having, since the sync is paid per byte by then.
_MAX_BATCH_BYTES = 8 << 20


def _message_bytes(request: _Enqueue | _Run) -> int:
    return len(request.message_row[-1]) if isinstance(request, _Enqueue) else 0


def _wal_growth(batch: Sequence[_Enqueue | _Run]) -> int:
    growth = _WAL_PER_COMMIT
    for request in batch:
        if isinstance(request, _Enqueue):
            growth += _message_bytes(request) + _WAL_PER_MESSAGE
            growth += _WAL_PER_RECIPIENT * len(request.recipient_rows)
        else:
            growth += _WAL_PER_OPERATION
    return growth


# (future, result, exception) triples, settled together on the caller's loop.
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _settle(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.done():  # cancelled by the caller, or already answered
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _insert_error(exc: sqlite3.Error) -> QueueError:
    if isinstance(exc, sqlite3.IntegrityError):
        return QueueError(f"queue id already in use: {exc}")
    return QueueError(f"queue insert failed: {exc}")


def connect(path: Path) -> sqlite3.Connection:
    """Open a connection with the settings every queue connection needs."""
    # The queue holds every message in full: readable by its owner only. SQLite gives
    # the -wal and -shm files the database file's permissions, so creating it 0600
    # first covers all three.
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise sqlite3.OperationalError(f"cannot create {path}: {exc.strerror or exc}") from exc
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is
    # exactly one batch.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=10000")
    use_wal(conn)
    # In WAL mode synchronous=FULL syncs the WAL at every commit (NORMAL would only
    # sync at checkpoints and could lose the last commits on power loss). That fsync
    # is what makes "250 means durable" true. https://sqlite.org/pragma.html#pragma_synchronous
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=OFF")
    # Checkpoints run on a thread of their own (queue.sqlite_checkpointer); SQLite's
    # own would run inside COMMIT and make every session of that batch wait for the
    # copy into the database file.
    conn.execute("PRAGMA wal_autocheckpoint=0")
    return conn


def _flock_keeping_the_gil() -> Callable[[int, int], int] | None:
    """libc's flock called WITHOUT releasing the GIL, or None where ctypes cannot.

    fcntl.flock releases the GIL around the call, and getting it back may wait up to
    the switch interval behind a busy event loop, twice per batch. Taking a free
    lock (LOCK_NB) or letting go of one never blocks, so there is nothing to release
    it for; only a turn another process holds is waited for with fcntl.flock.
    """
    try:
        libc = ctypes.PyDLL(None, use_errno=True)
        function = libc.flock
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int)
    function.restype = ctypes.c_int
    return function


_FLOCK_KEEPING_THE_GIL = _flock_keeping_the_gil()


class WriterTurn:
    """Whose turn it is to write, between processes: an flock on ``<queue>.lock``.

    Several server processes (``[server] workers``) and the CLI each have a writer.
    SQLite would make a second writer sleep and retry (busy_timeout polls in steps of
    up to 100 ms); a blocking flock instead wakes the next writer the moment the lock
    is free. Uncontended it costs two system calls per batch.
    """

    def __init__(self, database: Path) -> None:
        self._path = database.with_name(database.name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> None:
        if self._fd is None:
            # O_NOFOLLOW: the CLI runs this as root in the server's directory.
            self._fd = os.open(
                self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
            )
        quick = _FLOCK_KEEPING_THE_GIL
        if quick is not None:
            if quick(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB) == 0:
                return
            code = ctypes.get_errno()
            if code not in (errno.EWOULDBLOCK, errno.EINTR):
                raise OSError(code, os.strerror(code), str(self._path))
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # another process's turn: wait, GIL released

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is None:
            return
        quick = _FLOCK_KEEPING_THE_GIL
        if quick is None or quick(self._fd, fcntl.LOCK_UN) != 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SqliteWriter:
    """The single writer thread of one SQLite queue file."""

    def __init__(
        self,
        path: Path,
        *,
        prepare: Callable[[sqlite3.Connection], None],
        max_batch: int = 512,
    ) -> None:
        self.path = path
        self._prepare = prepare
        self._max_batch = max_batch
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Written only by the writer thread; read by tests and metrics.
        self.commit_count = 0
        self.largest_batch = 0
        self._written = 0  # bytes (roughly) added to the WAL since the last request
        self._checkpointer = Checkpointer(path, connect)
        self._checkpoints_requested = 0
        self._checkpoints_finished = 0
        self.checkpoint_waits = 0  # times the writer did the copying: the thread was behind
        self._turn = WriterTurn(path)
        self._one_statement = True
        self.one_statement_commits = 0  # batches that took the one-statement way

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._main, args=(loop, ready), name=f"postgate-queue-writer:{self.path.name}"
        )
        self._thread.daemon = True
        self._thread.start()
        await ready

    async def enqueue(
        self, message_row: MessageRow, recipient_rows: Sequence[RecipientRow]
    ) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._submit(_Enqueue(loop, future, message_row, recipient_rows))
        await future

    async def run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``operation(conn)`` in the writer's next transaction; return its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._submit(_Run(loop, future, operation))
        return await future

    def _submit(self, request: _Enqueue | _Run) -> None:
        if self._closed:
            raise QueueError("queue store is closed")
        self._requests.put(request)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._requests.put(_STOP)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    # --- the writer thread -------------------------------------------------

    def _main(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = connect(self.path)
            self._prepare(conn)
        except Exception as exc:
            error = QueueError(f"cannot open queue database {self.path}: {exc}")
            failed: list[_Outcome] = [(ready, None, error)]
            loop.call_soon_threadsafe(_settle, failed)
            return
        try:
            conn.execute(_ENQUEUE_VIEW_DDL)
            conn.execute(_ENQUEUE_TRIGGER_DDL)
        except sqlite3.Error as exc:
            # An SQLite without JSON functions: every batch takes the long way.
            log.warning("queue one-statement enqueue unavailable", reason=str(exc))
            self._one_statement = False
        self._checkpointer.start()
        opened: list[_Outcome] = [(ready, None, None)]
        loop.call_soon_threadsafe(_settle, opened)
        try:
            while True:
                batch, stop = self._take_batch()
                if batch:
                    self._execute_guarded(conn, batch)
                if stop:
                    break
        finally:
            self._checkpointer.stop()
            conn.close()
            self._turn.close()

    def _take_batch(self) -> tuple[list[_Enqueue | _Run], bool]:
        first = self._requests.get()
        if first is _STOP:
            return [], True
        batch = [first]
        size = _message_bytes(first)
        while len(batch) < self._max_batch and size < _MAX_BATCH_BYTES:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                break
            if request is _STOP:
                return batch, True
            batch.append(request)
            size += _message_bytes(request)
        return batch, False

    def _execute_guarded(self, conn: sqlite3.Connection, batch: list[_Enqueue | _Run]) -> None:
        # Whatever goes wrong, every caller of the batch gets an answer and the
        # thread lives on to serve the next batch.
        try:
            with self._turn:
                self._execute(conn, batch)
        except Exception as exc:
            log.exception("queue batch failed", batch=len(batch))
            self._rollback(conn)
            self._fail_all(batch, QueueError(f"queue write failed: {exc}"))

    def _execute(self, conn: sqlite3.Connection, batch: list[_Enqueue | _Run]) -> None:
        if self._one_statement and self._execute_enqueues_at_once(conn, batch):
            return
        outcomes: list[tuple[asyncio.AbstractEventLoop, _Outcome]] = []
        enqueues = [r for r in batch if isinstance(r, _Enqueue)]
        runs = [r for r in batch if isinstance(r, _Run)]
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._fail_all(batch, QueueError(f"queue database unavailable: {exc}"))
            return
        if enqueues:
            outcomes.extend(self._insert_messages(conn, enqueues))
        for request in runs:
            outcomes.append((request.loop, self._run_one(conn, request)))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("queue commit failed", batch=len(batch), reason=str(exc))
            self._rollback(conn)
            self._fail_all(batch, QueueError(f"queue commit failed: {exc}"))
            return
        self._committed(conn, batch, outcomes)

    def _committed(
        self,
        conn: sqlite3.Connection,
        batch: Sequence[_Enqueue | _Run],
        outcomes: list[tuple[asyncio.AbstractEventLoop, _Outcome]],
    ) -> None:
        self.commit_count += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        self._deliver_outcomes(outcomes)
        self._written += _wal_growth(batch)
        self._checkpoint_when_due(conn)

    def _execute_enqueues_at_once(
        self, conn: sqlite3.Connection, batch: list[_Enqueue | _Run]
    ) -> bool:
        """The common batch, only enqueues, as one autocommit statement. False (and
        nothing written) when the batch must take the long way: it holds other
        operations, a message does not fit the view, or the statement failed (a
        queue id already in use, say: the long way tells which caller it was)."""
        rows = []
        for request in batch:
            if not isinstance(request, _Enqueue):
                return False
            row = enqueue_view_row(request.message_row, request.recipient_rows)
            if row is None:
                return False
            rows.append(row)
        if len(rows) > _ROWS_PER_INSERT:
            return False
        sql = _ENQUEUE_VIEW_INSERT + ",".join([_ENQUEUE_VIEW_VALUES] * len(rows))
        try:
            conn.execute(sql, [value for row in rows for value in row])
        except (sqlite3.Error, UnicodeError) as exc:
            # Autocommit: the failed statement rolled itself back, nothing was written
            # (a value SQLite cannot take, such as a lone surrogate, fails in binding).
            log.debug("queue one-statement enqueue failed, taking the long way", reason=str(exc))
            return False
        self.one_statement_commits += 1
        self._committed(conn, batch, [(r.loop, (r.future, None, None)) for r in batch])
        return True

    def _insert_messages(
        self, conn: sqlite3.Connection, enqueues: list[_Enqueue]
    ) -> list[tuple[asyncio.AbstractEventLoop, _Outcome]]:
        try:
            conn.execute("SAVEPOINT enqueue")
            insert_rows(conn, _MESSAGE_COLUMNS, _MESSAGE_VALUES, [r.message_row for r in enqueues])
            insert_rows(
                conn,
                _RECIPIENT_COLUMNS,
                _RECIPIENT_VALUES,
                [row for r in enqueues for row in r.recipient_rows],
            )
            conn.execute("RELEASE enqueue")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK TO enqueue")
            conn.execute("RELEASE enqueue")
            if len(enqueues) == 1:
                log.error("queue insert failed", reason=str(exc))
                return [(enqueues[0].loop, (enqueues[0].future, None, _insert_error(exc)))]
            # Slow path, only after a failure (e.g. a caller-chosen queue id that
            # already exists): insert one by one so only the culprit fails.
            return [(r.loop, (r.future, None, self._insert_one(conn, r))) for r in enqueues]
        return [(r.loop, (r.future, None, None)) for r in enqueues]

    @staticmethod
    def _insert_one(conn: sqlite3.Connection, request: _Enqueue) -> QueueError | None:
        try:
            conn.execute("SAVEPOINT enqueue_one")
            conn.execute(MESSAGE_INSERT, request.message_row)
            conn.executemany(RECIPIENT_INSERT, request.recipient_rows)
            conn.execute("RELEASE enqueue_one")
        except sqlite3.Error as exc:
            log.error("queue insert failed", queue_id=request.message_row[0], reason=str(exc))
            conn.execute("ROLLBACK TO enqueue_one")
            conn.execute("RELEASE enqueue_one")
            return _insert_error(exc)
        return None

    @staticmethod
    def _run_one(conn: sqlite3.Connection, request: _Run) -> _Outcome:
        conn.execute("SAVEPOINT operation")
        try:
            result = request.operation(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO operation")
            conn.execute("RELEASE operation")
            error = (
                exc if isinstance(exc, QueueError) else QueueError(f"queue update failed: {exc}")
            )
            if not isinstance(exc, QueueError):
                log.exception("queue operation failed")
            return (request.future, None, error)
        conn.execute("RELEASE operation")
        return (request.future, result, None)

    def _checkpoint_when_due(self, conn: sqlite3.Connection) -> None:
        """Ask the checkpointer thread to copy the WAL once enough was written, and
        finish its copy between two batches (module sqlite_checkpointer says why)."""
        pending = self._checkpoints_requested != self._checkpoints_finished
        if pending and self._checkpointer.prepared >= self._checkpoints_requested:
            self._checkpoint(conn)
            self._checkpoints_finished = self._checkpoints_requested
            pending = False
        if self._written < _CHECKPOINT_AFTER_BYTES:
            return
        self._written = 0
        if pending:
            # A whole threshold later the thread is still copying: copy here, so the
            # WAL stays bounded whatever the thread's pace.
            self.checkpoint_waits += 1
            self._checkpoint(conn)
            self._checkpoints_finished = self._checkpoints_requested
            return
        self._checkpoints_requested += 1
        self._checkpointer.request()

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection) -> None:
        # Run here, between batches, no other writer can add frames meanwhile, so the
        # checkpoint completes and the next transaction starts the WAL over: the file
        # stays bounded. https://sqlite.org/wal.html#automatic_checkpoint
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("queue checkpoint failed", reason=str(exc))

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # SQLite may already have rolled back on its own (e.g. after SQLITE_FULL).
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")

    def _fail_all(self, batch: list[_Enqueue | _Run], error: QueueError) -> None:
        self._deliver_outcomes([(r.loop, (r.future, None, error)) for r in batch])

    @staticmethod
    def _deliver_outcomes(outcomes: list[tuple[asyncio.AbstractEventLoop, _Outcome]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for loop, outcome in outcomes:
            by_loop.setdefault(loop, []).append(outcome)
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:
                # The caller's loop is closed: nobody is waiting any more.
                log.warning("event loop closed, results dropped", count=len(settled))
