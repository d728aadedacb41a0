"""server.workers — several server processes on the same ports (``[server] workers``).

SYNOPSIS
    exit_code = supervise(bound, run_worker, reload=...)   # run_worker(role) -> exit code
    role.primary, role.bound, role.poke()                  # what a worker needs to know
    role.startup_failed(reason)                            # the one line the operator sees

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
    them. On SIGHUP it also calls ``reload`` (the caller re-reads the configuration),
    so a worker started later runs what the others reloaded, not what the server
    started with. A worker that dies unexpectedly is started again (at most 5 times
    a minute each; more means something is wrong, and everything stops with exit
    code 1). A worker that cannot start (exit code STARTUP_FAILED: a bad
    certificate, an unreadable file) stops the whole server: starting it again would
    fail again. Its reason reaches the supervisor through a pipe and is printed
    once, whichever worker failed first.

SIGNALS
    The three signals are blocked around each fork: the child sets its own
    dispositions (TERM and INT: end; HUP: remember for later) before any can reach
    it, and the supervisor knows the child's pid before it forwards anything. A HUP
    that arrives while a worker starts is acted on once its server is up. A worker
    asks the kernel for SIGTERM when the supervisor dies (PR_SET_PDEATHSIG, Linux),
    so a killed supervisor does not leave workers serving with nobody to restart
    them.

SECURITY
    Workers are forked before any thread or event loop exists in the supervisor,
    so no lock is inherited in a held state.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

import structlog

from postgate.server.listen import BoundListener, close_all

log = structlog.get_logger("postgate.server")

STARTUP_FAILED = 3
_RESTARTS_PER_MINUTE = 5
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerRole:
    index: int
    count: int
    bound: Sequence[BoundListener]  # this worker's own sockets
    wake_reader: int | None  # the primary: read end of the wake-up pipe
    wake_writer: int | None  # the others: write end
    failure_writer: int | None = None  # where startup_failed() writes its reason
    # A SIGHUP received before the server could act on it (set by the interim handler).
    pending_reload: list[bool] = field(default_factory=list)

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

    def startup_failed(self, reason: str) -> None:
        """Hand the supervisor the one line that says why this worker cannot start."""
        if self.failure_writer is None:
            return
        # One short write: atomic on a pipe, so lines of two workers never mix.
        line = " ".join(reason.split())[:1000].encode("utf-8", "replace") + b"\n"
        with contextlib.suppress(OSError):
            os.write(self.failure_writer, line)

    def take_pending_reload(self) -> bool:
        pending = bool(self.pending_reload)
        self.pending_reload.clear()
        return pending


def drain(fd: int) -> None:
    """Read every pending wake-up byte (the primary, from its event loop)."""
    with contextlib.suppress(BlockingIOError, OSError):
        while os.read(fd, 4096):
            pass


def supervise(
    bound: Sequence[Sequence[BoundListener]],
    run_worker: Callable[[WorkerRole], int],
    *,
    reload: Callable[[], None] | None = None,
) -> int:
    """Fork ``len(bound)`` workers and watch them until they are told to stop."""
    count = len(bound)
    supervisor = os.getpid()
    wake_reader, wake_writer = os.pipe()
    failure_reader, failure_writer = os.pipe()
    for descriptor in (wake_reader, wake_writer, failure_reader):
        os.set_blocking(descriptor, False)
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
            failure_writer,
        )
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:  # the worker
                _run_child(role, supervisor, bound, run_worker)
            children[pid] = index
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        log.info("worker started", worker=index, pid=pid)

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        elif reload is not None and not stopping:
            reload()
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for signum in _SIGNALS:
        signal.signal(signum, forward)
    for index in range(count):
        spawn(index)
    restarts: dict[int, deque[float]] = {index: deque() for index in range(count)}
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
            if not failed:
                reason = _first_line(failure_reader) or f"worker {index} could not start"
                print(f"postgate: cannot start: {reason}", file=sys.stderr, flush=True)
            log.error("worker could not start; stopping", worker=index)
            failed = True
            forward(signal.SIGTERM, None)
            continue
        now = time.monotonic()
        recent = restarts[index]
        while recent and now - recent[0] > 60:
            recent.popleft()
        if len(recent) >= _RESTARTS_PER_MINUTE:
            log.error("worker keeps dying; stopping", worker=index, exit_code=code)
            failed = True
            forward(signal.SIGTERM, None)
            continue
        recent.append(now)
        log.error("worker died; starting it again", worker=index, exit_code=code)
        spawn(index)
    return 1 if failed else 0


def _run_child(
    role: WorkerRole,
    supervisor: int,
    bound: Sequence[Sequence[BoundListener]],
    run_worker: Callable[[WorkerRole], int],
) -> None:
    """The worker's side of the fork; never returns."""
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, lambda signum, frame: role.pending_reload.append(True))
        _die_with(supervisor)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        _close_others(bound, role.index)
        structlog.contextvars.bind_contextvars(worker=role.index)
        code = run_worker(role)
    except BaseException:
        log.exception("worker crashed", worker=role.index)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _die_with(supervisor: int) -> None:
    """SIGTERM this process when the supervisor exits (Linux; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != supervisor:  # it died before the request was in place
        os._exit(0)


def _first_line(descriptor: int) -> str:
    with contextlib.suppress(BlockingIOError, OSError):
        return os.read(descriptor, 4096).decode("utf-8", "replace").partition("\n")[0].strip()
    return ""


def _close_others(bound: Sequence[Sequence[BoundListener]], keep: int) -> None:
    close_all([listeners for index, listeners in enumerate(bound) if index != keep])
