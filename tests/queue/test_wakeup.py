"""The queue's wake-up FIFO: the CLI pokes, a running server wakes."""

from __future__ import annotations

import os
import select
import stat
from pathlib import Path

import pytest

from postgate.queue.wakeup import WakeupFifo, poke, wakeup_path


def readable(fifo: WakeupFifo) -> bool:
    return bool(select.select([fifo.fileno()], [], [], 0)[0])


def test_the_fifo_sits_beside_the_queue_file() -> None:
    assert wakeup_path(Path("/var/lib/postgate/queue.db")) == Path(
        "/var/lib/postgate/queue.db.wake"
    )


def test_no_server_means_no_poke(tmp_path: Path) -> None:
    assert poke(tmp_path / "queue.db.wake") is False  # nothing there
    os.mkfifo(tmp_path / "queue.db.wake", 0o600)
    assert poke(tmp_path / "queue.db.wake") is False  # a FIFO nobody reads


def test_a_poke_wakes_the_reader_once_drained(tmp_path: Path) -> None:
    path = tmp_path / "queue.db.wake"
    fifo = WakeupFifo.open(path)
    try:
        assert stat.S_ISFIFO(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert not readable(fifo)
        assert poke(path) is True
        assert readable(fifo)
        fifo.drain()
        assert not readable(fifo)
    finally:
        fifo.close()
    assert poke(path) is False  # the server is gone


def test_a_full_fifo_never_blocks_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "queue.db.wake"
    fifo = WakeupFifo.open(path)
    try:
        # More pokes than a pipe holds (64 KiB on Linux); none may block or fail.
        assert all(poke(path) for _ in range(70_000))
        fifo.drain()
        assert not readable(fifo)
    finally:
        fifo.close()


def test_reopening_after_a_restart_reuses_the_fifo(tmp_path: Path) -> None:
    path = tmp_path / "queue.db.wake"
    WakeupFifo.open(path).close()
    fifo = WakeupFifo.open(path)
    try:
        assert poke(path) and readable(fifo)
    finally:
        fifo.close()


def test_the_cli_writes_into_nothing_but_a_fifo(tmp_path: Path) -> None:
    path = tmp_path / "queue.db.wake"
    path.write_bytes(b"ABCDEFGH")
    assert poke(path) is False
    assert path.read_bytes() == b"ABCDEFGH"
    target = tmp_path / "users.db"
    target.write_bytes(b"SQLite format 3")
    path.unlink()
    path.symlink_to(target)
    assert poke(path) is False
    assert target.read_bytes() == b"SQLite format 3"


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_the_server_replaces_what_is_not_a_fifo(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "queue.db.wake"
    target = tmp_path / "precious"
    target.write_bytes(b"keep me")
    if kind == "file":
        path.write_bytes(b"junk")
    else:
        path.symlink_to(target)
    fifo = WakeupFifo.open(path)
    try:
        assert stat.S_ISFIFO(path.lstat().st_mode)
        assert poke(path) and readable(fifo)
    finally:
        fifo.close()
    assert target.read_bytes() == b"keep me"
