"""server.instance — one running server per queue.

SYNOPSIS
    lock = claim_queue(config.queue.path)     # before binding; raises InstanceError
    ...                                       # held until the process (and its workers) end

DESCRIPTION
    A second `postgate serve` on the same queue would be wrong in every way: it
    takes back the running server's delivery leases at start (they carry the same
    node name), so both deliver the same mail; and with ``workers`` > 1 it would even
    share the running server's ports, since SO_REUSEPORT lets a second process bind
    them. So the server holds an exclusive flock on ``<queue.path>.pid`` (which says
    its pid, for the operator) for as long as it runs. Forked workers inherit the
    descriptor: the lock stays taken while any of them lives. The kernel drops it
    when the last one exits, however it ends, so a stale file never blocks a start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path


class InstanceError(Exception):
    """Another server holds the queue; the message is the line to show."""


def lock_path(queue_path: Path) -> Path:
    return queue_path.with_name(queue_path.name + ".pid")


def claim_queue(queue_path: Path) -> int:
    """Take the queue for this process: the lock's descriptor (keep it open). Creates
    the queue's directory first (0700, as the queue's own open would): a first start
    must be locked like any other."""
    path = lock_path(queue_path)
    try:
        queue_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(
            path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644
        )
    except OSError as exc:
        raise InstanceError(f"cannot open {path}: {(exc.strerror or str(exc)).lower()}") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise InstanceError(f"{path} is not a regular file: remove it")
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = ""
        with contextlib.suppress(OSError, ValueError):
            holder = f" (pid {int(os.pread(descriptor, 32, 0).split()[0])})"
        os.close(descriptor)
        raise InstanceError(
            f"another postgate{holder} is serving the queue {queue_path} "
            f"(it holds {path}); stop it first"
        ) from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    return descriptor
