"""logs — one structured line per event, JSON by default.

DESCRIPTION
    structlog renders every log call as one line: JSON (for log shippers) or
    key=value text (for people). Every rejection and every accepted message carries
    the client address, the reply and the reason; delivery attempts carry the queue
    id, recipient, remote host and reply.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TextIO

import structlog


def configure_logging(level: str = "info", fmt: str = "json", file: Path | None = None) -> None:
    stream: TextIO
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        # Logs name senders, recipients and client addresses: owner and group only.
        descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        stream = os.fdopen(descriptor, "a", buffering=1, encoding="utf-8")
    else:
        stream = sys.stderr
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            # Carries `worker` (server.workers) into every line a worker process logs.
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # One write() per line, its newline included (PrintLogger writes the two
        # apart): the workers of a multi-process server share stderr, and two
        # workers' lines must not splice into one.
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
