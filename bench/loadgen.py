"""bench.loadgen — Postfix's smtp-source as the load generator for both servers.

SYNOPSIS
    seconds = smtp_source(port, sessions=10, messages=2000, size=2048, reuse=True)

DESCRIPTION
    Runs ``smtp-source -s SESSIONS -m MESSAGES -l SIZE [-d] -M HELO -f SENDER -t RCPT
    127.0.0.1:PORT`` and returns its wall time. smtp-source is C, greets with HELO
    and does not pipeline; each of its sessions sends one command at a time, so the
    client costs the same against either server. ``-d`` (reuse) keeps each session's
    connection for the next message; without it every message is a new connection
    (connect, banner, HELO, MAIL, RCPT, DATA, QUIT).

    smtp-source stops at the first reply that is not the expected one and exits
    non-zero; that, or running past ``timeout``, raises LoadError with its output, and
    the run is recorded as an error, not a number.
"""

from __future__ import annotations

import subprocess
import time

from bench.peers.names import HELO_NAME, RECIPIENT, SENDER

SMTP_SOURCE = "/usr/sbin/smtp-source"


class LoadError(Exception):
    """smtp-source failed or timed out."""


def smtp_source_argv(
    port: int,
    *,
    sessions: int,
    messages: int,
    size: int,
    reuse: bool = True,
    recipient: str = RECIPIENT,
) -> list[str]:
    argv = [SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(size)]
    if reuse:
        argv.append("-d")
    argv += ["-M", HELO_NAME, "-f", SENDER, "-t", recipient, f"127.0.0.1:{port}"]
    return argv


def smtp_source(
    port: int,
    *,
    sessions: int,
    messages: int,
    size: int,
    reuse: bool = True,
    recipient: str = RECIPIENT,
    timeout: float = 300.0,
) -> float:
    """Send ``messages`` messages over ``sessions`` parallel sessions; wall seconds."""
    argv = smtp_source_argv(
        port, sessions=sessions, messages=messages, size=size, reuse=reuse, recipient=recipient
    )
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LoadError(f"smtp-source did not finish within {timeout:.0f} s") from None
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        output = (done.stderr + done.stdout).strip()[-600:]
        raise LoadError(f"smtp-source exited {done.returncode}: {output}")
    return elapsed
