"""server.listen — bind the listening sockets, before anything is served.

SYNOPSIS
    bound = bind_all(config.listeners, copies=1)     # [[BoundListener, ...]] per worker
    raises ListenError                               # one line: which listener, why

DESCRIPTION
    Every listener is bound before the first connection is accepted, so a port in use
    or a missing privilege stops the start with a clear reason instead of half a
    server. With ``copies`` > 1 (``[server] workers``) each listener is bound once per
    worker with SO_REUSEPORT: the kernel then spreads new connections over the
    workers' sockets, instead of waking every worker for each one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from postgate.config import ListenerConfig

# Connections the kernel queues per socket before we accept them (capped by
# net.core.somaxconn). asyncio's create_server listens again with its own default of
# 100 unless told: app.py passes this too.
BACKLOG = 512


class ListenError(Exception):
    """A listener cannot be bound; the message is the line to show the operator."""


@dataclass(frozen=True)
class BoundListener:
    config: ListenerConfig
    sockets: tuple[socket.socket, ...]


def bind(listener: ListenerConfig, *, reuse_port: bool = False) -> BoundListener:
    family = socket.AF_INET6 if ":" in listener.address else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:  # out of descriptors, no IPv6 in this kernel...
        raise ListenError(
            f"listener {listener.name}: cannot create a socket for {listener.address}: "
            f"{(exc.strerror or str(exc)).lower()}"
        ) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and listener.address == "::":
            # Also accept IPv4 on "::", as most admins expect from a wildcard.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((listener.address, listener.port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
        if listener.port == 0:
            listener = dataclasses.replace(listener, port=sock.getsockname()[1])
    except OSError as exc:
        sock.close()
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        hint = ""
        if exc.errno == errno.EACCES and listener.port < 1024:
            hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        raise ListenError(
            f"listener {listener.name}: cannot listen on {listener.address}:{listener.port}: "
            f"{why.lower()}{hint}"
        ) from None
    return BoundListener(listener, (sock,))


def bind_all(listeners: Sequence[ListenerConfig], *, copies: int = 1) -> list[list[BoundListener]]:
    """Each listener ``copies`` times (SO_REUSEPORT when more than one); all or nothing."""
    done: list[list[BoundListener]] = []
    try:
        for _ in range(copies):
            done.append([])
            for index, listener in enumerate(listeners):
                if len(done) > 1:
                    # Port 0 lets the kernel choose: every copy shares the first one's port.
                    listener = done[0][index].config
                done[-1].append(bind(listener, reuse_port=copies > 1))
    except ListenError:
        close_all(done)
        raise
    return done


def close_all(bound: Sequence[Sequence[BoundListener]]) -> None:
    for listeners in bound:
        for item in listeners:
            for sock in item.sockets:
                sock.close()
