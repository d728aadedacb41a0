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
    certificate, an unreadable file) before the server ever served stops it: the
    reason reaches the supervisor through a pipe and is printed once, whichever
    worker failed first. Once the server has served, such a worker is tried again
    after 1, 2, 4... seconds (at most 60; Postfix's master throttles a failing
    service the same way) with the configuration that last started (workers report
    through the same pipe when they serve), while the others serve: a reload the
    workers refused, or a file missing for a moment, must not take the whole server
    down. The server is announced (``on_ready``: the "listening" line, sd_notify)
    once, when every worker first serves.

SIGNALS
    The supervisor keeps TERM, INT, HUP and CHLD blocked and takes them one at a
    time with sigtimedwait(), so reloading and logging never run inside a signal
    handler (where a lock already held by the interrupted code would hang it for
    good). A child inherits the mask and sets its own dispositions (TERM and INT:
    end; HUP: remember for later) before it unblocks them. A HUP that arrives while a
    worker starts is acted on once its server is up. A worker
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
from typing import TypeVar

import structlog

from postgate.server.listen import BoundListener, close_all

log = structlog.get_logger("postgate.server")

STARTUP_FAILED = 3
_RESTARTS_PER_MINUTE = 5
# A worker that served and then cannot start is tried again after 1, 2, 4... s, at most 60.
_RETRY_FIRST = 1.0
_RETRY_MAX = 60.0
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_WAITED = (*_SIGNALS, signal.SIGCHLD)
C = TypeVar("C")
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerRole:
    index: int
    count: int
    bound: Sequence[BoundListener]  # this worker's own sockets
    wake_reader: int | None  # the primary: read end of the wake-up pipe
    wake_writer: int | None  # the others: write end
    status_writer: int | None = None  # where ready() and startup_failed() report
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

    def ready(self) -> None:
        """Tell the supervisor this worker serves: its configuration is known good."""
        self._report(f"ready {self.index}")

    def startup_failed(self, reason: str) -> None:
        """Hand the supervisor the one line that says why this worker cannot start."""
        self._report(f"failed {self.index} " + " ".join(reason.split())[:1000])

    def _report(self, line: str) -> None:
        if self.status_writer is None:
            return
        # One short write: atomic on a pipe, so lines of two workers never mix.
        with contextlib.suppress(OSError):
            os.write(self.status_writer, line.encode("utf-8", "replace") + b"\n")

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
    config: C,
    run_worker: Callable[[WorkerRole, C], int],
    *,
    reload: Callable[[C], C | None] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Fork ``len(bound)`` workers and watch them until they are told to stop.

    ``reload(running)`` (on SIGHUP) returns the configuration for workers started from
    then on, or None to keep the running one. ``on_ready`` is called once, when every
    worker has reported that it serves. Signals are taken synchronously (sigtimedwait),
    never in a handler: reloading and logging may take locks a handler could find
    held. They stay blocked when this returns, so one more TERM or HUP during the
    last moments of a stop cannot change how the process ends.
    """
    count = len(bound)
    supervisor = os.getpid()
    wake_reader, wake_writer = os.pipe()
    status_reader, status_writer = os.pipe()
    for descriptor in (wake_reader, wake_writer, status_reader):
        os.set_blocking(descriptor, False)
    signal.pthread_sigmask(signal.SIG_BLOCK, _WAITED)
    for signum in _WAITED:
        signal.signal(signum, signal.SIG_DFL)  # blocked: they wait for sigtimedwait
    children: dict[int, tuple[int, C]] = {}  # pid -> (worker index, its configuration)
    current = config  # what a worker started now runs
    good = config  # what a worker last started with successfully
    ready: set[int] = set()  # workers that reported serving, this generation or before
    announced = False
    reasons: dict[int, str] = {}  # worker index -> why its start failed
    pending: dict[int, tuple[float, C]] = {}  # worker index -> (restart time, config)
    retries: dict[int, int] = {index: 0 for index in range(count)}
    crashes: dict[int, deque[float]] = {index: deque() for index in range(count)}
    stopping = False
    failed = False

    def spawn(index: int, with_config: C) -> None:
        role = WorkerRole(
            index,
            count,
            bound[index],
            wake_reader if index == 0 else None,
            wake_writer if index != 0 else None,
            status_writer,
        )
        unused = [wake_writer if index == 0 else wake_reader, status_reader]
        pid = os.fork()
        if pid == 0:  # the worker
            _run_child(role, supervisor, bound, unused, lambda r: run_worker(r, with_config))
        children[pid] = (index, with_config)
        log.info("worker started", worker=index, pid=pid)

    def read_status() -> None:
        nonlocal good, announced
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(status_reader, 65536):
                for line in chunk.decode("utf-8", "replace").splitlines():
                    kind, _, rest = line.partition(" ")
                    index_text, _, reason = rest.partition(" ")
                    if not index_text.isdigit():
                        continue
                    index = int(index_text)
                    if kind == "failed":
                        reasons[index] = reason
                    elif kind == "ready":
                        ready.add(index)
                        retries[index] = 0
                        good = next((c for i, c in children.values() if i == index), good)
        if not announced and len(ready) == count and not stopping:
            announced = True
            if on_ready is not None:
                on_ready()

    def stop_all() -> None:
        nonlocal stopping
        stopping = True
        pending.clear()
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def give_up(message: str) -> None:
        nonlocal failed
        failed = True
        print(f"postgate: stopping: {message}", file=sys.stderr, flush=True)
        stop_all()

    def exited(index: int, started_with: C, code: int) -> None:
        nonlocal failed, current
        if stopping:
            return
        if code == STARTUP_FAILED and not ready:
            # The server never came up: starting again would fail again.
            if not failed:
                reason = reasons.get(index) or f"worker {index} could not start"
                print(f"postgate: cannot start: {reason}", file=sys.stderr, flush=True)
            log.error("worker could not start; stopping", worker=index)
            failed = True
            stop_all()
            return
        now = time.monotonic()
        if code == STARTUP_FAILED:
            # It served before and cannot start now: a certificate renewed without an
            # atomic rename, a half-edited alias file, or a reloaded configuration the
            # running workers refused. The others keep serving; this one is tried again
            # with the configuration that last started, waiting longer each time (as
            # Postfix's master throttles a failing service) rather than giving up.
            if started_with is not good and current is started_with:
                log.error("reloaded configuration does not start; back to the last good one")
                current = good
            delay = min(_RETRY_FIRST * 2 ** retries[index], _RETRY_MAX)
            retries[index] += 1
            log.error(
                "worker could not start; trying again",
                worker=index,
                reason=reasons.pop(index, ""),
                retry_in=delay,
            )
            pending[index] = (now + delay, good)
            return
        recent = crashes[index]
        while recent and now - recent[0] > 60:
            recent.popleft()
        if len(recent) >= _RESTARTS_PER_MINUTE:
            log.error("worker keeps dying; stopping", worker=index, exit_code=code)
            give_up(f"worker {index} died {len(recent) + 1} times within a minute")
            return
        recent.append(now)
        log.error("worker died; starting it again", worker=index, exit_code=code)
        spawn(index, current)

    for index in range(count):
        spawn(index, current)
    while children or pending:
        timeout = 0.05 if not announced else 3600.0
        if pending:
            timeout = max(
                0.0, min(min(due for due, _ in pending.values()) - time.monotonic(), timeout)
            )
        info = signal.sigtimedwait(_WAITED, timeout)
        read_status()
        if info is None:
            now = time.monotonic()
            for index, (due, with_config) in list(pending.items()):
                if due <= now and not stopping:
                    del pending[index]
                    spawn(index, with_config)
            continue
        if info.si_signo == signal.SIGCHLD:
            while children:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    children.clear()
                    break
                if pid == 0:
                    break
                if pid in children:
                    index, started_with = children.pop(pid)
                    read_status()
                    exited(index, started_with, os.waitstatus_to_exitcode(status))
        elif info.si_signo == signal.SIGHUP:
            if reload is not None and not stopping:
                current = reload(current) or current
            for pid in list(children):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)
        else:  # SIGTERM, SIGINT
            stop_all()
    return 1 if failed else 0


def _run_child(
    role: WorkerRole,
    supervisor: int,
    bound: Sequence[Sequence[BoundListener]],
    unused: Sequence[int],
    run_worker: Callable[[WorkerRole], int],
) -> None:
    """The worker's side of the fork; never returns."""
    code = 1
    try:
        for descriptor in unused:  # the pipe ends this worker has no use for
            os.close(descriptor)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, lambda signum, frame: role.pending_reload.append(True))
        _die_with(supervisor)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _WAITED)
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


def _close_others(bound: Sequence[Sequence[BoundListener]], keep: int) -> None:
    close_all([listeners for index, listeners in enumerate(bound) if index != keep])
