"""250 means durable: a process killed right after enqueue returned loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from postgate.queue.sqlite import SqliteStore

CHILD = r"""
import asyncio, sys
from pathlib import Path
from postgate.queue.model import Envelope, EnvelopeRecipient
from postgate.queue.sqlite import SqliteStore

async def main() -> None:
    store = await SqliteStore.open(Path(sys.argv[1]))
    envelope = Envelope(sender="a@example.org",
                        recipients=(EnvelopeRecipient("b@example.com", "b@example.com"),))
    queue_id = await store.enqueue(envelope, b"Subject: crash\r\n\r\nbody\r\n")
    print(queue_id, flush=True)
    await asyncio.Event().wait()  # until SIGKILL: no close(), no checkpoint

asyncio.run(main())
"""


async def test_message_survives_sigkill_right_after_enqueue(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, env=env
    )
    try:
        assert child.stdout is not None
        queue_id = child.stdout.readline().decode().strip()  # bounded by pytest-timeout
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    assert len(queue_id) == 16
    # The commit lives in the WAL, not yet checkpointed into the main file.
    assert (tmp_path / "queue.db-wal").stat().st_size > 0

    store = await SqliteStore.open(path)
    try:
        message = await store.get_message(queue_id)
        assert message is not None
        assert [r.address for r in message.recipients] == ["b@example.com"]
        assert await store.load_message(queue_id) == b"Subject: crash\r\n\r\nbody\r\n"
    finally:
        await store.close()
