"""bench.peers.process — what every peer process shares: how it is stopped."""

from __future__ import annotations

import signal
import subprocess


def stop_process(process: subprocess.Popen[bytes] | None, grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; nothing if it is gone already."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
