"""bench.peers.sink — Postfix's smtp-sink: the fast discarding destination of scenario 4.

SYNOPSIS
    with SmtpSink() as sink:
        sink.port                 # deliver to [127.0.0.1]:sink.port

DESCRIPTION
    ``smtp-sink -u nobody -m 256 127.0.0.1:PORT 1024`` accepts every message and throws
    it away, announcing PIPELINING and the other ESMTP extensions, so the measured
    rate is the sending MTA's (queue scan, connection reuse, pipelining, status
    bookkeeping) and not the receiver's. It runs as nobody (it refuses to keep root)
    and serves up to 256 connections at once, more than either sender opens.
"""

from __future__ import annotations

import socket
import subprocess
import time
from types import TracebackType

from bench.peers.process import stop_process
from tests.server_process import free_port

SMTP_SINK = "/usr/sbin/smtp-sink"
MAX_CONNECTIONS = 256


class SmtpSink:
    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [
            SMTP_SINK,
            "-u",
            "nobody",
            "-m",
            str(MAX_CONNECTIONS),
            f"127.0.0.1:{self.port}",
            "1024",
        ]

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10.0
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("smtp-sink did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process, 10)

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
