"""server.workers — several server processes on the same ports (``[server] workers``).

SYNOPSIS
    exit_code = supervise(bound, run_worker)    # run_worker(role) -> exit code, in a child
    role.primary, role.bound, role.poke()       # what a worker needs to know

DESCRIPTION
    One Python process runs its SMTP sessions on one core. With ``workers = N`` the
    supervisor (the process the operator started) binds every listener N times with
    SO_REUSEPORT, so the kernel spreads incoming connections over N sockets, then
    forks one worker per socket set. Binding happens before the fork, in the
    supervisor: a port in use or a missing privilege stops the start with one clear
    line, before any worker exists.

    Worker 0 is the primary: it alone runs the delivery scheduler, the bounce
    notifier and DKIM rotation (one lease owner per node, as before). The others
    only receive; after queueing a message they write a byte into a pipe the
    primary watches, so the primary's scheduler wakes as if it had queued the
    message itself. Every worker has its own queue writer thread; writers of several
    processes take turns through a lock file (queue.sqlite_writer), so group commit
    still applies within each worker.

    The supervisor forwards SIGTERM, SIGINT and SIGHUP to the workers and waits for
    them. A worker that dies unexpectedly is started again (at most 5 times a
    minute; more means something is wrong, and everything stops with exit code 1).
    A worker that cannot start (exit code STARTUP_FAILED: a bad certificate, an
    unreadable file) stops the whole server: starting it again would fail again.

SECURITY
    Workers are forked before any thread or event loop exists in the supervisor,
    so no lock is inherited in a held state.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

import structlog

from postgate.server.listen import BoundListener, close_all

log = structlog.get_logger("postgate.server")

STARTUP_FAILED = 3
_RESTARTS_PER_MINUTE = 5


@dataclass(frozen=True)
class WorkerRole:
    index: int
    count: int
    bound: Sequence[BoundListener]  # this worker's own sockets
    wake_reader: int | None  # the primary: read end of the wake-up pipe
    wake_writer: int | None  # the others: write end

    @property
    def primary(self) -> bool:
        return self.index == 0

    def poke(self) -> None:
        """Tell the primary that a message was queued (never blocks, never fails)."""
        if self.wake_writer is None:
            return
        # A full pipe already holds a wake-up the primary has not read yet.
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.wake_writer, b"!")


def drain(fd: int) -> None:
    """Read every pending wake-up byte (the primary, from its event loop)."""
    with contextlib.suppress(BlockingIOError, OSError):
        while os.read(fd, 4096):
            pass


def supervise(
    bound: Sequence[Sequence[BoundListener]],
    run_worker: Callable[[WorkerRole], int],
) -> int:
    """Fork ``len(bound)`` workers and watch them until they are told to stop."""
    count = len(bound)
    wake_reader, wake_writer = os.pipe()
    os.set_blocking(wake_reader, False)
    os.set_blocking(wake_writer, False)
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False
    failed = False

    def spawn(index: int) -> None:
        role = WorkerRole(
            index,
            count,
            bound[index],
            wake_reader if index == 0 else None,
            wake_writer if index != 0 else None,
        )
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(signum, signal.SIG_DFL)
                _close_others(bound, index)
                structlog.contextvars.bind_contextvars(worker=index)
                code = run_worker(role)
            except BaseException:
                log.exception("worker crashed", worker=index)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = index
        log.info("worker started", worker=index, pid=pid)

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    for index in range(count):
        spawn(index)
    restarts: deque[float] = deque()
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in children:
            continue
        index = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            continue
        if code == STARTUP_FAILED:
            log.error("worker could not start; stopping", worker=index)
            failed = True
            forward(signal.SIGTERM, None)
            continue
        now = time.monotonic()
        while restarts and now - restarts[0] > 60:
            restarts.popleft()
        if len(restarts) >= _RESTARTS_PER_MINUTE:
            log.error("workers keep dying; stopping", worker=index, exit_code=code)
            failed = True
            forward(signal.SIGTERM, None)
            continue
        restarts.append(now)
        log.error("worker died; starting it again", worker=index, exit_code=code)
        spawn(index)
    return 1 if failed else 0


def _close_others(bound: Sequence[Sequence[BoundListener]], keep: int) -> None:
    close_all([listeners for index, listeners in enumerate(bound) if index != keep])
