"""queue.wakeup — tell a running server that mail became due, from another process.

SYNOPSIS
    fifo = WakeupFifo.open(wakeup_path(config.queue.path))   # the server
    loop.add_reader(fifo.fileno(), on_wake)                  # on_wake calls fifo.drain()
    poke(wakeup_path(config.queue.path))                     # `postgate queue release`

DESCRIPTION
    ``postgate queue flush`` and ``release`` change the queue file from a separate
    process. Without a word to the server, the mail waits for the scheduler's next
    look at the queue (seconds); an operator who releases mail expects it to go now,
    as ``postqueue -f`` does for Postfix by writing to qmgr's FIFO. This is the same:
    a FIFO next to the queue file (``<queue.path>.wake``, mode 0600) that the server
    reads and the CLI writes one byte into.

    A poke is a hint, never a requirement: no server running, a full FIFO (a wake-up
    is already pending) or a FIFO we may not open all leave the mail to the next
    regular look. The server holds a write end of its own FIFO too, so reading never
    sees end-of-file when a CLI closes its end.

SECURITY
    The CLI often runs as root, the data directory belongs to the server's user. So
    the CLI writes only into a FIFO: it opens the path without following a symlink
    and checks what it opened before writing, and anything else there is left alone.
    The server replaces anything but a FIFO at its path (a file, a symlink: never
    what a symlink points to) with a new FIFO.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path


def wakeup_path(queue_path: Path) -> Path:
    return queue_path.with_name(queue_path.name + ".wake")


class WakeupFifo:
    """The server's end: readable when someone has poked."""

    def __init__(self, reader: int, keepalive: int) -> None:
        self._reader = reader
        self._keepalive = keepalive

    @classmethod
    def open(cls, path: Path) -> WakeupFifo:
        """Create the FIFO if needed and open it; raises OSError (the caller goes on
        without). Whatever else is at ``path`` is replaced (see SECURITY)."""
        try:
            os.mkfifo(path, 0o600)
        except FileExistsError:
            if not stat.S_ISFIFO(os.lstat(path).st_mode):
                os.unlink(path)  # a symlink itself, never its target
                os.mkfifo(path, 0o600)
        flags = os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW
        reader = os.open(path, os.O_RDONLY | flags)
        try:
            if not stat.S_ISFIFO(os.fstat(reader).st_mode):
                raise OSError(errno.EEXIST, "replaced while opening; not a FIFO", str(path))
            keepalive = os.open(path, os.O_WRONLY | flags)
        except OSError:
            os.close(reader)
            raise
        return cls(reader, keepalive)

    def fileno(self) -> int:
        return self._reader

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._reader, 4096):
                pass

    def close(self) -> None:
        os.close(self._reader)
        os.close(self._keepalive)


def poke(path: Path) -> bool:
    """Wake the server reading ``path``; False when none is listening (never raises)."""
    try:
        # O_NONBLOCK: fails with ENXIO at once when no process has the FIFO open for
        # reading, instead of waiting for a server to start. O_NOFOLLOW: never a
        # symlink's target (SECURITY).
        descriptor = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        if not stat.S_ISFIFO(os.fstat(descriptor).st_mode):
            return False  # a plain file where the FIFO should be: not ours to write
        os.write(descriptor, b"!")
    except BlockingIOError:
        pass  # full: the server has wake-ups it has not read yet
    except OSError:
        return False
    finally:
        os.close(descriptor)
    return True
