"""server.app — start everything, serve until told to stop, stop cleanly.

SYNOPSIS
    await run_server(config)          # returns after SIGTERM/SIGINT and a clean stop
    raises StartupError               # one line naming the key or file at fault

DESCRIPTION
    Opens the queue and the user store, loads the alias table and the TLS files,
    binds every listener before accepting anything (so a port in use stops the start
    with a clear reason instead of half a server), starts the delivery scheduler,
    then serves. Stopping closes the listeners, gives running sessions a grace period,
    stops the scheduler (its leases expire if anything was cut short) and closes the
    store. Nothing acknowledged is ever lost: it was committed before its 250.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from postgate.accounts import UserStore
from postgate.config import Config, ConfigError, ListenerConfig, ListenerRole, load_config
from postgate.delivery.base import Route
from postgate.delivery.bounces import Notifier
from postgate.dns.resolver import Resolver
from postgate.queue.scheduler import Scheduler
from postgate.queue.sqlite import SqliteStore
from postgate.routing import AliasTable, Router, RoutingError, load_alias_file
from postgate.server.routes import RemoteTransports, RouteConfigError, build_route_function
from postgate.server.services import Services
from postgate.server.session import SmtpSessionProtocol
from postgate.server.tls import TlsContextHolder, TlsError, switching_context

log = structlog.get_logger("postgate.server")

_SHUTDOWN_GRACE = 10.0


class StartupError(Exception):
    """The server cannot start; the message is the one line to show the operator."""


@dataclass(frozen=True)
class BoundListener:
    config: ListenerConfig
    sockets: tuple[socket.socket, ...]


def _bind(listener: ListenerConfig) -> BoundListener:
    family = socket.AF_INET6 if ":" in listener.address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and listener.address == "::":
            # Also accept IPv4 on "::", as most admins expect from a wildcard.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((listener.address, listener.port))
        sock.listen(512)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        hint = ""
        if exc.errno == errno.EACCES and listener.port < 1024:
            hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        raise StartupError(
            f"listener {listener.name}: cannot listen on {listener.address}:{listener.port}: "
            f"{why.lower()}{hint}"
        ) from None
    return BoundListener(listener, (sock,))


def _load_aliases(config: Config) -> AliasTable:
    if config.routing.alias_file is None:
        return AliasTable(entries={})
    try:
        return load_alias_file(config.routing.alias_file)
    except RoutingError as exc:
        raise StartupError(f"routing.alias_file: {exc}") from None
    except OSError as exc:
        raise StartupError(
            f"routing.alias_file: {config.routing.alias_file}: {exc.strerror or exc}"
        ) from None


def _needs_tls(config: Config) -> bool:
    return any(item.role is not ListenerRole.MX for item in config.listeners)


def _load_tls(config: Config) -> TlsContextHolder | None:
    if config.tls is None:
        if _needs_tls(config):
            raise StartupError("tls: submission listeners need [tls] cert_file and key_file")
        return None
    try:
        return TlsContextHolder(
            config.tls.cert_file, config.tls.key_file, config.tls.min_version, config.tls.sni
        )
    except TlsError as exc:
        raise StartupError(str(exc)) from None


def _open_users(config: Config) -> UserStore:
    try:
        config.auth.user_db.parent.mkdir(parents=True, exist_ok=True)
        return UserStore.open(config.auth.user_db)
    except Exception as exc:
        raise StartupError(f"auth.user_db: {config.auth.user_db}: {exc}") from None


async def _open_store(config: Config) -> SqliteStore:
    try:
        config.queue.path.parent.mkdir(parents=True, exist_ok=True)
        return await SqliteStore.open(config.queue.path)
    except Exception as exc:
        raise StartupError(f"queue.path: {config.queue.path}: {exc}") from None


async def run_server(
    config: Config,
    *,
    on_ready: Callable[[list[tuple[str, str, int]]], None] | None = None,
    stop_event: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop_event``); raise StartupError on bad start."""
    tls = _load_tls(config)
    aliases = _load_aliases(config)
    bound: list[BoundListener] = []
    try:
        for listener in config.listeners:
            bound.append(_bind(listener))
    except StartupError:
        for item in bound:
            for sock in item.sockets:
                sock.close()
        raise
    users = _open_users(config)
    store = await _open_store(config)
    resolver = Resolver(config.delivery.dns_servers)
    try:
        remote = RemoteTransports.build(config, resolver)
    except RouteConfigError as exc:
        raise StartupError(str(exc)) from None
    loop = asyncio.get_running_loop()
    scheduler_holder: list[Scheduler] = []
    services = _build_services(
        config,
        store,
        users,
        tls,
        aliases,
        remote,
        on_message_queued=lambda: scheduler_holder[0].wake() if scheduler_holder else None,
        previous=None,
    )
    # Sessions and the scheduler read the *current* services when they start work;
    # SIGHUP swaps in a new one (invariant 7: a session keeps the config it began with).
    current = [services]
    # One owner name per node: a restarted node takes back at once the leases its
    # killed predecessor held, instead of waiting for them to expire (invariant 2
    # still holds: that process is gone). Other nodes' leases are left to expire.
    owner = config.hostname
    reclaimed = await store.release_leases(owner)
    if reclaimed:
        log.info("reclaimed leases of a previous run", recipients=reclaimed)
    notifier = Notifier(
        store,
        reporting_mta=config.hostname,
        postmaster=config.routing.postmaster or f"postmaster@{config.routing.local_domains[0]}",
        on_enqueued=lambda: scheduler_holder[0].wake() if scheduler_holder else None,
        max_lifetime=config.queue.max_lifetime,
    )
    scheduler = Scheduler(
        store,
        lambda address, sender: _route(current[0], address, sender),
        retry_schedule=config.queue.retry_schedule,
        max_lifetime=config.queue.max_lifetime,
        lease_seconds=config.queue.lease_seconds,
        concurrency=config.queue.delivery_concurrency,
        owner=owner,
        delay_warning_after=config.queue.delay_warning_after,
        on_outcome=lambda leased, result: notifier.wake(),
    )
    scheduler_holder.append(scheduler)
    servers: list[asyncio.base_events.Server] = []
    stop = stop_event or asyncio.Event()
    for item in bound:
        implicit_tls = item.config.role is ListenerRole.SUBMISSIONS
        for sock in item.sockets:
            server = await loop.create_server(
                lambda listener=item.config: SmtpSessionProtocol(current[0], listener),
                sock=sock,
                # RFC 8314: the handshake comes first; connection_made runs after it.
                ssl=_implicit_tls_context(current) if implicit_tls else None,
                ssl_handshake_timeout=30.0 if implicit_tls else None,
            )
            servers.append(server)
    scheduler_task = loop.create_task(scheduler.run())
    notifier_task = loop.create_task(notifier.run())

    def reload() -> None:
        try:
            current[0] = _reload(current[0], store, users, remote)
        except (StartupError, ConfigError) as exc:
            log.error("reload failed, keeping the running configuration", reason=str(exc))

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, reload)
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    addresses = [(item.config.name, item.config.address, item.config.port) for item in bound]
    for name, address, port in addresses:
        log.info("listening", listener=name, address=address, port=port)
    if on_ready is not None:
        on_ready(addresses)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        for server in servers:
            server.close()
        sessions = list(current[0].sessions)
        if sessions:
            await asyncio.wait(sessions, timeout=_SHUTDOWN_GRACE)
            for task in sessions:
                task.cancel()
        await scheduler.stop()
        await notifier.stop()
        for task in (scheduler_task, notifier_task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await remote.close()
        await store.close()
        users.close()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
        log.info("stopped")


def _route(services: Services, address: str, sender: str = "") -> Route:
    assert services.route is not None  # _build_services always sets it
    return services.route(address, sender)


def _implicit_tls_context(current: list[Services]) -> ssl.SSLContext:
    def context_for(server_name: str | None) -> ssl.SSLContext:
        tls = current[0].tls
        assert tls is not None  # _load_tls refuses a submissions listener without [tls]
        return tls.context_for(server_name)

    return switching_context(context_for)


def _build_services(
    config: Config,
    store: SqliteStore,
    users: UserStore,
    tls: TlsContextHolder | None,
    aliases: AliasTable,
    remote: RemoteTransports,
    *,
    on_message_queued: Callable[[], None],
    previous: Services | None,
) -> Services:
    try:
        router = Router(
            local_domains=config.routing.local_domains,
            aliases=aliases,
            catch_all=config.routing.catch_all,
            postmaster=config.routing.postmaster,
            mailbox_exists=users.exists,
        )
    except RoutingError as exc:
        raise StartupError(f"routing: {exc}") from None
    services = Services(
        config=config,
        store=store,
        router=router,
        users=users,
        tls=tls,
        on_message_queued=on_message_queued,
        route=build_route_function(config, router, users, remote),
    )
    if previous is not None:
        services.queue_ids = previous.queue_ids
        services.connections = previous.connections
    return services


def _reload(
    running: Services, store: SqliteStore, users: UserStore, remote: RemoteTransports
) -> Services:
    """SIGHUP: re-read the config file, alias table and certificates."""
    source = running.config.source
    if source is None:
        raise StartupError("the running configuration did not come from a file")
    config = load_config(source)
    if config.listeners != running.config.listeners:
        log.warning("listener changes take effect only after a restart")
    if config.queue != running.config.queue:
        log.warning("queue settings take effect only after a restart")
    if config.delivery != running.config.delivery:
        log.warning("delivery settings other than maildir_root take effect after a restart")
    services = _build_services(
        config,
        store,
        users,
        _load_tls(config),
        _load_aliases(config),
        remote,
        on_message_queued=running.on_message_queued,
        previous=running,
    )
    log.info("reloaded", config=str(source))
    return services
