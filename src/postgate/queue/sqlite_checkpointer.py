"""queue.sqlite_checkpointer — copy the queue's WAL into the database file beside the writer.

SYNOPSIS
    checkpointer = Checkpointer(path, connect)
    checkpointer.start()
    checkpointer.request()      # from the writer thread, after enough was committed
    checkpointer.prepared       # requests done: most of the WAL copied, the file synced
    checkpointer.stop()

WHY A THREAD OF ITS OWN
    A checkpoint copies the WAL's pages into the database file and syncs that file:
    10-20 ms for 4 MiB on a fast disk. Run by the writer between batches, it held up
    every 250 of the next batch by as much (10 sessions behind a busy event loop: p99
    17 ms with it, 4 ms without). A PASSIVE checkpoint on a connection of its own
    takes no writer lock: it copies the frames committed so far while the writer
    appends new ones behind them. https://sqlite.org/c3ref/wal_checkpoint_v2.html

    SQLite starts the WAL over only at a write that finds ALL of it copied
    (https://sqlite.org/wal.html#avoiding_excessively_large_wal_files), and a writer
    that never pauses leaves this thread no such moment. So the work is split: here,
    the copying of nearly everything and the sync of the database file (an fsync
    through a descriptor of our own; SQLite syncs the file only after copying the
    whole WAL); then the writer, between two batches, runs one more PASSIVE
    checkpoint that copies the last few frames and syncs almost nothing, and its
    next write starts the WAL over.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger("postgate.queue")

# Passes per request: each copies what the previous one left behind.
_PASSES = 8


class Checkpointer:
    """A thread that runs PASSIVE checkpoints of one SQLite file when asked."""

    def __init__(self, path: Path, connect: Callable[[Path], sqlite3.Connection]) -> None:
        self._path = path
        self._connect = connect
        self._wanted = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # Written only by the checkpointer thread; read by the writer and tests.
        self.passes = 0
        self.prepared = 0

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._main, name=f"postgate-queue-checkpoint:{self._path.name}", daemon=True
        )
        self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def stop(self) -> None:
        self._stopping = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join()

    def _main(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._stopping:
                    return
                if conn is None:
                    try:
                        conn = self._connect(self._path)
                    except sqlite3.Error as exc:
                        log.warning("queue checkpoint connection failed", reason=str(exc))
                if conn is not None:
                    # Twice: the second round copies and syncs what was committed
                    # during the first one's sync, so the writer's share stays small.
                    for _ in range(2):
                        self._copy(conn)
                self.prepared += 1  # even after a failure: the writer's checkpoint follows
        finally:
            if conn is not None:
                conn.close()

    def _copy(self, conn: sqlite3.Connection) -> None:
        for _ in range(_PASSES):
            try:
                busy, in_wal, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:
                log.warning("queue checkpoint failed", reason=str(exc))
                return
            self.passes += 1
            # busy: another process's checkpointer holds the file and does the copying;
            # in_wal == -1: not in WAL mode, nothing to copy.
            if busy or in_wal < 0 or copied >= in_wal or self._stopping:
                break
        try:
            descriptor = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fdatasync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as exc:
            log.warning("queue checkpoint sync failed", reason=str(exc))
