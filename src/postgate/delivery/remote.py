"""delivery.remote — deliver to the world over SMTP.

SYNOPSIS
    transport = RemoteSmtpTransport(resolver, local_hostname="mx.ours.test")
    results = await transport.deliver(message, leased_recipients)   # one per recipient
    await transport.close()

DESCRIPTION
    The Transport for remote domains. For each destination (the recipient domain, or
    the relay host when one is configured) it asks ``mx_resolver`` for the hosts to
    try, then walks them in order, each address of each host in turn (RFC 5321 5.1):
    a refused connection, a timeout, a greeting other than 220 (4xx or 5xx, RFC 5321
    3.1 lets the client try the next MX) or a session that breaks before the final
    reply moves on to the next address. The first session that completes a
    transaction decides every recipient: 2xx DELIVERED, 4xx DEFERRED, 5xx BOUNCED,
    each with the reply, enhanced code, host, address and TLS version. When no
    address could take the message the recipients are DEFERRED with the last error
    (BOUNCED only if every host refused permanently).

    TLS (RFC 3207): opportunistic by default (STARTTLS when offered, certificate not
    checked: encryption against passive listeners, no authentication, as RFC 7435
    describes). A handshake failure then falls back to plain text on a new
    connection to the same address. ``TlsMode.VERIFY`` for a destination requires
    STARTTLS and a certificate valid for the MX host name; otherwise the
    recipients are DEFERRED (4.7.10 not offered, 4.7.5 verification failed).

    Relay host: with ``relay_host`` no MX lookup is made; every destination goes to
    that one host and port, with AUTH after STARTTLS when credentials are given.
    Credentials are never sent without TLS (4.7.10), and a failed AUTH defers: it is
    our configuration, not the recipient's fault.

    Connections are pooled per destination. A semaphore caps concurrent sessions
    per destination (``max_connections_per_destination``); a session that ends
    usable is parked, and the next message to the same destination sends RSET on
    it (which doubles as a liveness check) instead of connecting again. Parked
    sessions are closed with QUIT after ``idle_seconds``.

    One structured log line per recipient per attempt: queue_id, recipient, mx,
    address, tls, status, reply, delay (seconds since the message was received).

CONFIGURATION
    port (25)                            remote SMTP port (tests point it at a peer).
    max_connections_per_destination (4)  concurrent sessions per destination.
    idle_seconds (5)                     how long a parked session may wait.
    connect_timeout (30)                 TCP connect + greeting.
    command_timeout (300)                each reply (RFC 5321 4.5.3.2 suggests 5 min).

SEE ALSO
    delivery.smtp_client, delivery.mx, delivery.base, RFC 5321 5.1, RFC 3207, RFC 7435
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ssl
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from postgate.delivery.mx import MxError, MxHost, resolve_mx
from postgate.delivery.smtp_client import SmtpClient, SmtpClientError, SmtpReply, xtext
from postgate.dns.resolver import Resolver
from postgate.queue.model import AttemptResult, LeasedRecipient, RecipientStatus

log = structlog.get_logger("postgate.delivery.remote")


class TlsMode(enum.StrEnum):
    NONE = "none"  # never STARTTLS
    MAY = "may"  # opportunistic, unauthenticated (RFC 7435)
    VERIFY = "verify"  # STARTTLS required, certificate must match the MX name


@dataclass(frozen=True)
class TlsPolicy:
    """``default`` applies unless ``per_destination`` names the domain (lower case)."""

    default: TlsMode = TlsMode.MAY
    per_destination: Mapping[str, TlsMode] = field(default_factory=dict)
    verify_context: ssl.SSLContext | None = None  # None: the system trust store

    def mode_for(self, destination: str) -> TlsMode:
        return self.per_destination.get(destination.lower(), self.default)


@dataclass(frozen=True)
class RelayHost:
    """A smarthost: ``RelayHost.parse("[smtp.example.net]:587", username=..., ...)``."""

    host: str
    port: int = 25
    username: str | None = None
    password: str | None = None
    auth_mechanism: str = "PLAIN"

    @classmethod
    def parse(cls, spec: str, **credentials: str) -> RelayHost:
        host, _, port = (
            spec.rpartition(":") if spec.rfind(":") > spec.rfind("]") else (spec, "", "")
        )
        return cls(host=host.strip("[]"), port=int(port) if port else 25, **credentials)

    @property
    def destination(self) -> str:
        return f"[{self.host}]:{self.port}"


class MxResolver(Protocol):
    async def __call__(
        self,
        resolver: Resolver,
        domain: str,
        *,
        local_names: Collection[str],
        local_addresses: Collection[str] = (),
    ) -> list[MxHost]: ...


@dataclass
class _Parked:
    client: SmtpClient
    host: MxHost
    timer: asyncio.TimerHandle | None = None


@dataclass
class _Pool:
    """Per-destination concurrency cap and parked (idle, reusable) sessions."""

    slots: asyncio.Semaphore
    parked: list[_Parked] = field(default_factory=list)


@dataclass
class _Failure:
    text: str
    enhanced: str
    temporary: bool
    host: str = ""
    address: str = ""


class RemoteSmtpTransport:
    name = "smtp"

    def __init__(
        self,
        resolver: Resolver,
        *,
        local_hostname: str,
        mx_resolver: MxResolver = resolve_mx,
        local_addresses: Collection[str] = (),
        port: int = 25,
        tls_policy: TlsPolicy | None = None,
        relay_host: RelayHost | None = None,
        max_connections_per_destination: int = 4,
        idle_seconds: float = 5.0,
        connect_timeout: float = 30.0,
        command_timeout: float = 300.0,
    ) -> None:
        self._resolver = resolver
        self._local_hostname = local_hostname
        self._mx_resolver = mx_resolver
        self._local_addresses = tuple(local_addresses)
        self._port = port
        self._tls = tls_policy or TlsPolicy()
        self._relay = relay_host
        self._max_connections = max_connections_per_destination
        self._idle_seconds = idle_seconds
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._pools: dict[str, _Pool] = {}
        self._closing: set[asyncio.Task[None]] = set()
        # Opportunistic TLS authenticates nobody (RFC 7435 3), so nothing is verified.
        self._unverified = ssl.create_default_context()
        self._unverified.check_hostname = False
        self._unverified.verify_mode = ssl.CERT_NONE
        self._verified = self._tls.verify_context or ssl.create_default_context()

    async def deliver(
        self, message: bytes, recipients: Sequence[LeasedRecipient]
    ) -> list[AttemptResult]:
        results: dict[int, AttemptResult] = {}
        by_domain: dict[str, list[int]] = {}
        for index, recipient in enumerate(recipients):
            domain = recipient.address.rpartition("@")[2].lower()
            by_domain.setdefault(domain, []).append(index)
        for domain, indexes in by_domain.items():
            group = [recipients[i] for i in indexes]
            outcomes = await self._deliver_domain(domain, message, group)
            results.update(zip(indexes, outcomes, strict=True))
        return [results[i] for i in range(len(recipients))]

    async def close(self) -> None:
        """QUIT every parked session."""
        for pool in self._pools.values():
            while pool.parked:
                parked = pool.parked.pop()
                if parked.timer is not None:
                    parked.timer.cancel()
                await parked.client.quit()
        for task in list(self._closing):
            with contextlib.suppress(Exception):
                await task

    # -- one destination ----------------------------------------------------------------

    async def _deliver_domain(
        self, domain: str, message: bytes, recipients: list[LeasedRecipient]
    ) -> list[AttemptResult]:
        started = time.monotonic()
        destination = self._relay.destination if self._relay else domain
        try:
            hosts = await self._hosts(domain)
        except MxError as exc:
            failure = _Failure(exc.text, exc.enhanced, exc.temporary)
            return self._failed(recipients, failure, started)
        pool = self._pools.setdefault(destination, _Pool(asyncio.Semaphore(self._max_connections)))
        async with pool.slots:
            return await self._attempt(domain, pool, hosts, message, recipients, started)

    async def _hosts(self, domain: str) -> list[MxHost]:
        if self._relay is not None:
            return [MxHost(self._relay.host, 0, (self._relay.host,), implicit=True)]
        return await self._mx_resolver(
            self._resolver,
            domain,
            local_names={self._local_hostname},
            local_addresses=self._local_addresses,
        )

    async def _attempt(
        self,
        domain: str,
        pool: _Pool,
        hosts: list[MxHost],
        message: bytes,
        recipients: list[LeasedRecipient],
        started: float,
    ) -> list[AttemptResult]:
        failures: list[_Failure] = []
        parked = await self._take_parked(pool)
        if parked is not None:
            client, host = parked
            try:
                results = await self._transact(client, host, message, recipients, started)
            except SmtpClientError as exc:
                failures.append(_failure(exc, host.name, client.peer_address))
                client.close()
            else:
                self._park(pool, client, host)
                return results
        for host in hosts:
            for address in host.addresses:
                try:
                    client = await self._open(domain, host, address)
                except _SessionRefused as refused:
                    failures.append(refused.failure)
                    continue
                try:
                    results = await self._transact(client, host, message, recipients, started)
                except SmtpClientError as exc:
                    # The session broke before the final reply: nothing was accepted.
                    failures.append(_failure(exc, host.name, address))
                    client.close()
                    continue
                self._park(pool, client, host)
                return results
        if not failures:
            failures.append(_Failure("no address to connect to", "4.4.4", True))
        last = failures[-1]
        permanent = all(not failure.temporary for failure in failures)
        summary = _Failure(last.text, last.enhanced, not permanent, last.host, last.address)
        return self._failed(recipients, summary, started)

    async def _take_parked(self, pool: _Pool) -> tuple[SmtpClient, MxHost] | None:
        """A parked session ready for a transaction, or None.

        A session whose last transaction ended (the reply to the data) is reused as
        it is: the next MAIL needs no RSET (RFC 5321 4.1.1.4), and a peer that closed
        it meanwhile was noticed (EOF makes it unusable) or makes the transaction
        fail before anything is accepted, which _attempt answers with a new
        connection. Sparing RSET spares a round trip per message on a busy route.
        A session left inside a transaction gets RSET and must answer 250.
        """
        while pool.parked:
            parked = pool.parked.pop()
            if parked.timer is not None:
                parked.timer.cancel()
            try:
                if parked.client.is_usable and not parked.client.in_transaction:
                    return parked.client, parked.host
                if parked.client.is_usable and (await parked.client.rset()).code == 250:
                    return parked.client, parked.host
            except SmtpClientError:
                pass
            parked.client.close()
        return None

    async def _open(self, domain: str, host: MxHost, address: str) -> SmtpClient:
        """Connect, greet, STARTTLS per policy, AUTH for a relay; _SessionRefused if not."""
        mode = self._tls.mode_for(self._relay.destination if self._relay else domain)
        port = self._relay.port if self._relay else self._port
        client = await self._connect(host, address, port)
        try:
            return await self._prepare(client, mode, host, address, port)
        except BaseException:
            client.close()  # refused, or cancelled: never leave a socket behind
            raise

    async def _prepare(
        self, client: SmtpClient, mode: TlsMode, host: MxHost, address: str, port: int
    ) -> SmtpClient:
        if mode is not TlsMode.NONE and "STARTTLS" in client.extensions:
            context = self._verified if mode is TlsMode.VERIFY else self._unverified
            try:
                await client.starttls(context, host.name)
            except SmtpClientError as exc:
                client.close()
                if mode is TlsMode.VERIFY:
                    raise _SessionRefused(
                        _Failure(
                            f"TLS with {host.name} failed: {exc}", "4.7.5", True, host.name, address
                        )
                    ) from exc
                # RFC 7435 4: opportunistic TLS falls back to clear text, not to nothing.
                client = await self._connect(host, address, port)
        elif mode is TlsMode.VERIFY:
            await client.quit()
            raise _SessionRefused(
                _Failure(
                    f"TLS is required but {host.name} does not offer STARTTLS",
                    "4.7.10",
                    True,
                    host.name,
                    address,
                )
            )
        if self._relay is not None and self._relay.username is not None:
            if not client.tls_version:
                # RFC 4954 4 / RFC 8314: credentials never travel in clear text.
                await client.quit()
                raise _SessionRefused(
                    _Failure(
                        f"will not AUTH at {host.name} without TLS",
                        "4.7.10",
                        True,
                        host.name,
                        address,
                    )
                )
            try:
                await client.auth(
                    self._relay.auth_mechanism, self._relay.username, self._relay.password or ""
                )
            except SmtpClientError as exc:
                await client.quit()
                enhanced = exc.reply.enhanced if exc.reply and exc.reply.enhanced else "4.7.0"
                raise _SessionRefused(
                    _Failure(
                        f"AUTH at {host.name} failed: {exc}",
                        "4" + enhanced[1:],
                        True,
                        host.name,
                        address,
                    )
                ) from exc
        return client

    async def _connect(self, host: MxHost, address: str, port: int) -> SmtpClient:
        try:
            client = await SmtpClient.connect(
                address,
                port,
                local_hostname=self._local_hostname,
                timeout=self._connect_timeout,
            )
        except SmtpClientError as exc:
            raise _SessionRefused(_failure(exc, host.name, address)) from exc
        # The greeting may take connect_timeout; every later reply gets command_timeout.
        client.set_timeout(self._command_timeout)
        return client

    async def _transact(
        self,
        client: SmtpClient,
        host: MxHost,
        message: bytes,
        recipients: list[LeasedRecipient],
        started: float,
    ) -> list[AttemptResult]:
        envelope = recipients[0].envelope
        dsn = "DSN" in client.extensions
        try:
            result = await client.send_transaction(
                envelope.sender,
                [(r.address, _rcpt_params(r) if dsn else "") for r in recipients],
                message,
                body_type=envelope.body_type,
                smtputf8=envelope.smtputf8,
                dsn_ret=envelope.ret,
                envid=envelope.envid,
            )
        except BaseException:
            client.close()  # broken or cancelled mid-transaction: not reusable
            raise
        if result.unannounced_8bit:
            log.warning(
                "8-bit message sent to a server without 8BITMIME",
                queue_id=recipients[0].queue_id,
                mx=host.name,
            )
        results = []
        for recipient, reply in zip(recipients, result.recipient_outcomes(), strict=True):
            attempt = AttemptResult(
                status=_status(reply),
                reply=str(reply),
                enhanced_status=reply.enhanced or f"{reply.code // 100}.0.0",
                remote_host=host.name,
                remote_address=client.peer_address,
                tls_version=client.tls_version,
                relayed=True,
                dsn_passed_on=dsn,
            )
            self._log(recipient, attempt, started)
            results.append(attempt)
        return results

    def _park(self, pool: _Pool, client: SmtpClient, host: MxHost) -> None:
        if not client.is_usable:
            client.close()
            return
        parked = _Parked(client, host)
        parked.timer = asyncio.get_running_loop().call_later(
            self._idle_seconds, self._expire, pool, parked
        )
        pool.parked.append(parked)

    def _expire(self, pool: _Pool, parked: _Parked) -> None:
        if parked in pool.parked:
            pool.parked.remove(parked)
            task = asyncio.get_running_loop().create_task(parked.client.quit())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _failed(
        self, recipients: Sequence[LeasedRecipient], failure: _Failure, started: float
    ) -> list[AttemptResult]:
        status = RecipientStatus.DEFERRED if failure.temporary else RecipientStatus.BOUNCED
        enhanced = ("4" if failure.temporary else "5") + failure.enhanced[1:]
        results = []
        for recipient in recipients:
            attempt = AttemptResult(
                status=status,
                reply=failure.text,
                enhanced_status=enhanced,
                remote_host=failure.host,
                remote_address=failure.address,
            )
            self._log(recipient, attempt, started)
            results.append(attempt)
        return results

    @staticmethod
    def _log(recipient: LeasedRecipient, attempt: AttemptResult, started: float) -> None:
        received_at = recipient.envelope.received_at
        # Debug: the scheduler's "delivery" line already says all of this but the
        # timing, once per recipient, as Postfix's status= line does.
        log.debug(
            "delivery attempt",
            queue_id=recipient.queue_id,
            recipient=recipient.address,
            mx=attempt.remote_host,
            address=attempt.remote_address,
            tls=attempt.tls_version or "none",
            status=attempt.status.value,
            reply=attempt.reply,
            delay=round(time.time() - received_at, 3) if received_at else None,
            attempt_seconds=round(time.monotonic() - started, 3),
        )


class _SessionRefused(Exception):
    """This address cannot take the message; try the next one."""

    def __init__(self, failure: _Failure) -> None:
        super().__init__(failure.text)
        self.failure = failure


def _failure(exc: SmtpClientError, host: str, address: str) -> _Failure:
    reply: SmtpReply | None = exc.reply
    if reply is not None:
        enhanced = reply.enhanced or f"{reply.code // 100}.0.0"
        return _Failure(
            f"host {host}[{address}] said: {reply}", enhanced, exc.temporary, host, address
        )
    return _Failure(f"host {host}[{address}]: {exc}", "4.4.1", True, host, address)


def _status(reply: SmtpReply) -> RecipientStatus:
    if reply.is_positive:
        return RecipientStatus.DELIVERED
    if reply.is_permanent:
        return RecipientStatus.BOUNCED
    return RecipientStatus.DEFERRED


def _rcpt_params(recipient: LeasedRecipient) -> str:
    """RFC 3461 4.1/4.2: NOTIFY and ORCPT, passed on when the next hop speaks DSN."""
    params = []
    if recipient.notify:
        order = ("NEVER", "SUCCESS", "FAILURE", "DELAY")
        params.append("NOTIFY=" + ",".join(n for n in order if n in recipient.notify))
    if recipient.orcpt is not None:
        addr_type, address = recipient.orcpt
        params.append(f"ORCPT={addr_type};{xtext(address)}")
    return " ".join(params)
