"""server.services — the collaborators a session needs, built once per server start.

DESCRIPTION
    Passed to every session instead of module-level globals, so that tests can build
    a server from real parts on loopback. Also keeps the connection counts that the
    per-client and global connection limits are checked against.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from postgate.accept.pipeline import AcceptPipeline
from postgate.accounts import UserStore
from postgate.config import Config
from postgate.delivery.base import Route
from postgate.dkim.keys import KeyStore
from postgate.dkim.signer import DkimSigner
from postgate.dns.resolver import Resolver
from postgate.mailauth.inbound import InboundOptions
from postgate.policy.lockout import Lockout
from postgate.policy.sender import SenderPolicy
from postgate.queue.ids import QueueIdGenerator
from postgate.queue.store import Store
from postgate.routing import Router
from postgate.sasl.tokens import TokenValidator
from postgate.server.tls import TlsContextHolder


@dataclass
class ConnectionCounter:
    """Open connections, in total and per client address; outlives config reloads."""

    per_client: Counter[str] = field(default_factory=Counter)
    total: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


@dataclass
class Services:
    config: Config
    store: Store
    router: Router
    users: UserStore
    tls: TlsContextHolder | None
    on_message_queued: Callable[[], None] = lambda: None
    queue_ids: QueueIdGenerator = field(default_factory=QueueIdGenerator)
    connections: ConnectionCounter = field(default_factory=ConnectionCounter)
    route: Callable[[str, str], Route] | None = None
    lockout: Lockout | None = None
    sender_policy: SenderPolicy | None = None
    tokens: TokenValidator | None = None
    resolver: Resolver | None = None
    inbound: InboundOptions | None = None  # None: no inbound SPF/DKIM/DMARC/ARC checks
    signer: DkimSigner | None = None  # None: no DKIM signing
    dkim_keys: KeyStore | None = None
    accept: AcceptPipeline = field(init=False)

    def __post_init__(self) -> None:
        self.accept = AcceptPipeline(
            hostname=self.config.hostname,
            router=self.router,
            sender_policy=self.sender_policy,
            inbound=self.inbound,
            resolver=self.resolver,
            signer=self.signer,
            keys=self.dkim_keys,
            arc_seal_forwarded=self.config.mailauth.arc_seal,
            max_header_size=self.config.limits.max_header_size,
        )

    def message_queued(self) -> None:
        self.on_message_queued()

    def connection_opened(self, client: str) -> str | None:
        """Count a new connection; return a reason to refuse it, or None."""
        limits = self.config.limits
        counts = self.connections
        if counts.total >= limits.max_connections:
            return "Too many connections, try again later"
        if counts.per_client[client] >= limits.max_connections_per_client:
            return "Too many connections from your address, try again later"
        counts.total += 1
        counts.per_client[client] += 1
        return None

    def connection_closed(self, client: str) -> None:
        counts = self.connections
        counts.total -= 1
        counts.per_client[client] -= 1
        if counts.per_client[client] <= 0:
            del counts.per_client[client]

    def track(self, task: asyncio.Task[None]) -> None:
        self.connections.tasks.add(task)
        task.add_done_callback(self.connections.tasks.discard)

    @property
    def sessions(self) -> set[asyncio.Task[None]]:
        return self.connections.tasks
