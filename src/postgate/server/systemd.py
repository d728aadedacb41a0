"""server.systemd — tell systemd the server is ready (sd_notify, without libsystemd).

SYNOPSIS
    notify("READY=1", main_pid=supervisor_pid)     # no-op unless NOTIFY_SOCKET is set

DESCRIPTION
    With ``Type=notify`` (deploy/postgate.service) systemd counts the service as
    started only once this arrives, after every listener is bound and served: a
    `systemctl reload` (SIGHUP) sent "right after start" then waits for a server that
    can act on it, instead of finding one still importing. The protocol is one
    datagram of KEY=VALUE lines to the AF_UNIX socket named in $NOTIFY_SOCKET (a
    leading "@" means the abstract namespace); see sd_notify(3). With several workers
    the primary sends it, naming the supervisor as MAINPID (NotifyAccess=all).
"""

from __future__ import annotations

import os
import socket


def notify(state: str, *, main_pid: int | None = None) -> bool:
    """Send ``state`` (e.g. "READY=1"); False when there is no systemd to tell."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    message = state if main_pid is None else f"{state}\nMAINPID={main_pid}"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError:
        return False
    return True
