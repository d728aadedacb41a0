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
import gc
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from postgate.accounts import UserStore
from postgate.config import Config, ConfigError, ListenerRole, load_config
from postgate.counters import Counters, CountersError, open_counters
from postgate.delivery.base import Route
from postgate.delivery.bounces import Notifier
from postgate.dkim.keys import Algorithm, KeyStore
from postgate.dkim.manager import KeyManager, run_rotation
from postgate.dkim.rotation import RotationPolicy
from postgate.dkim.signer import DkimSigner
from postgate.dns.resolver import Resolver
from postgate.mailauth.inbound import Enforcement, InboundOptions
from postgate.policy.lockout import Lockout, LockoutSettings
from postgate.policy.sender import SenderPolicy, SenderRules
from postgate.queue.scheduler import Scheduler
from postgate.queue.sqlite import SqliteStore
from postgate.queue.wakeup import WakeupFifo, wakeup_path
from postgate.routing import AliasTable, Router, RoutingError, load_alias_file
from postgate.sasl.jwks import JwksError, load_jwks
from postgate.sasl.tokens import TokenConfigError, TokenValidator
from postgate.server.listen import BACKLOG, ListenError, bind_all
from postgate.server.routes import RemoteTransports, RouteConfigError, build_route_function
from postgate.server.services import Services
from postgate.server.session import SmtpSessionProtocol
from postgate.server.tls import TlsContextHolder, TlsError, switching_context
from postgate.server.workers import WorkerRole, drain

log = structlog.get_logger("postgate.server")

_SHUTDOWN_GRACE = 10.0


# Sections a reload (SIGHUP) leaves as they are: they take effect at the next start.
RESTART_ONLY = ("listeners", "queue", "delivery", "dkim")


class StartupError(Exception):
    """The server cannot start; the message is the one line to show the operator."""


def _open_wakeup(config: Config) -> WakeupFifo | None:
    path = wakeup_path(config.queue.path)
    try:
        return WakeupFifo.open(path)
    except OSError as exc:
        # Delivery still works; released mail just waits for the next queue scan.
        log.warning("no queue wake-up FIFO", path=str(path), reason=exc.strerror or str(exc))
        return None


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
        config.auth.user_db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return UserStore.open(
            config.auth.user_db,
            scram_iterations=config.auth.scram_iterations,
            credential_cache_ttl=config.auth.credential_cache_ttl,
        )
    except Exception as exc:
        raise StartupError(f"auth.user_db: {config.auth.user_db}: {exc}") from None


async def _open_store(config: Config) -> SqliteStore:
    try:
        config.queue.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return await SqliteStore.open(config.queue.path)
    except Exception as exc:
        raise StartupError(f"queue.path: {config.queue.path}: {exc}") from None


@dataclass
class _Shared:
    """What is built once per process and outlives config reloads: the stores with
    their connections and pools, and the DKIM keys."""

    store: SqliteStore
    users: UserStore
    resolver: Resolver
    remote: RemoteTransports
    counters: Counters
    keys: KeyStore
    signer: DkimSigner


async def _open_counters(config: Config) -> Counters:
    try:
        config.auth.lockout_db.parent.mkdir(parents=True, exist_ok=True)
        return await open_counters(config.auth.lockout_db)
    except (CountersError, OSError) as exc:
        raise StartupError(f"auth.lockout_db: {exc}") from None


async def _load_tokens(config: Config) -> TokenValidator | None:
    auth = config.auth
    if auth.oauth_jwks is None or auth.oauth_audience is None:
        return None
    try:
        keys = await load_jwks(auth.oauth_jwks)
        return TokenValidator(
            keys,
            audience=auth.oauth_audience,
            issuer=auth.oauth_issuer,
            user_claim=auth.oauth_user_claim,
            scope=auth.oauth_scope,
        )
    except (JwksError, TokenConfigError) as exc:
        raise StartupError(f"auth.oauth_jwks: {exc}") from None


def _dkim_keys(config: Config) -> KeyStore:
    assert config.dkim is not None  # the parser always fills it
    return KeyStore(config.dkim.key_dir)


def _key_manager(config: Config, keys: KeyStore) -> KeyManager:
    assert config.dkim is not None
    policy = RotationPolicy(
        overlap=config.dkim.overlap,
        rotation_interval=config.dkim.rotation_interval,
        algorithms=tuple(Algorithm(name.lower()) for name in config.dkim.algorithms),
    )
    return KeyManager(keys, policy=policy)


async def run_server(
    config: Config,
    *,
    on_ready: Callable[[list[tuple[str, str, int]]], None] | None = None,
    stop_event: asyncio.Event | None = None,
    worker: WorkerRole | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop_event``); raise StartupError on bad start.

    ``worker`` is set in a process of a multi-worker server (server.workers): the
    sockets are bound already, and only the primary delivers."""
    tls = _load_tls(config)
    aliases = _load_aliases(config)
    if worker is not None:
        bound = list(worker.bound)
    else:
        try:
            bound = bind_all(config.listeners)[0]
        except ListenError as exc:
            raise StartupError(str(exc)) from None
    primary = worker is None or worker.primary
    tokens = await _load_tokens(config)
    users = _open_users(config)
    store = await _open_store(config)
    resolver = Resolver(config.delivery.dns_servers)
    try:
        remote = RemoteTransports.build(config, resolver)
    except RouteConfigError as exc:
        raise StartupError(str(exc)) from None
    keys = _dkim_keys(config)
    shared = _Shared(
        store=store,
        users=users,
        resolver=resolver,
        remote=remote,
        counters=await _open_counters(config),
        keys=keys,
        signer=DkimSigner(keys),
    )
    loop = asyncio.get_running_loop()
    scheduler_holder: list[Scheduler] = []
    services = _build_services(
        config,
        shared,
        tls,
        aliases,
        tokens,
        # The primary wakes its own scheduler; another worker pokes the primary.
        on_message_queued=(
            worker.poke
            if worker is not None and not primary
            else lambda: scheduler_holder[0].wake() if scheduler_holder else None
        ),
        previous=None,
    )
    # Sessions and the scheduler read the *current* services when they start work;
    # SIGHUP swaps in a new one (invariant 7: a session keeps the config it began with).
    current = [services]
    # One owner name per node: a restarted node takes back at once the leases its
    # killed predecessor held, instead of waiting for them to expire (invariant 2
    # still holds: that process is gone). Other nodes' leases are left to expire.
    owner = config.hostname
    if primary:
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
        # Mail can become due without a word to us (another node of a shared queue,
        # a poke that found the FIFO full or missing): look at the queue this often.
        idle_poll=5.0,
    )
    scheduler_holder.append(scheduler)
    wakeup = _open_wakeup(config) if primary else None
    if wakeup is not None:

        def poked() -> None:
            assert wakeup is not None
            wakeup.drain()
            log.debug("queue poked")  # `postgate queue flush|release`
            scheduler.wake()

        loop.add_reader(wakeup.fileno(), poked)
    if primary and worker is not None and worker.wake_reader is not None:
        wake_fd = worker.wake_reader

        def woken() -> None:
            drain(wake_fd)  # another worker queued mail
            scheduler.wake()

        loop.add_reader(wake_fd, woken)
    servers: list[asyncio.base_events.Server] = []
    stop = stop_event or asyncio.Event()
    for item in bound:
        implicit_tls = item.config.role is ListenerRole.SUBMISSIONS
        for sock in item.sockets:
            server = await loop.create_server(
                lambda listener=item.config: SmtpSessionProtocol(current[0], listener),
                sock=sock,
                backlog=BACKLOG,
                # RFC 8314: the handshake comes first; connection_made runs after it.
                ssl=_implicit_tls_context(current) if implicit_tls else None,
                ssl_handshake_timeout=30.0 if implicit_tls else None,
            )
            servers.append(server)
    rotation_stop = asyncio.Event()
    assert config.dkim is not None
    background = (
        [
            loop.create_task(scheduler.run()),
            loop.create_task(notifier.run()),
            loop.create_task(
                run_rotation(
                    _key_manager(config, keys),
                    resolver,
                    interval=config.dkim.check_interval,
                    stop=rotation_stop,
                )
            ),
        ]
        if primary
        else []
    )

    async def reload() -> None:
        try:
            current[0] = await _reload(current[0], shared)
        except (StartupError, ConfigError) as exc:
            log.error("reload failed, keeping the running configuration", reason=str(exc))

    reloads: set[asyncio.Task[None]] = set()

    def start_reload() -> None:
        task = loop.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, start_reload)
    if worker is not None and worker.take_pending_reload():
        start_reload()  # a SIGHUP came while this worker was starting
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    addresses = [(item.config.name, item.config.address, item.config.port) for item in bound]
    event_loop = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
    for name, address, port in addresses:
        log.info("listening", listener=name, address=address, port=port, event_loop=event_loop)
    # Everything built so far (modules, config, caches' scaffolding) lives as long as
    # the server: out of the collector's sight, a full collection no longer walks it
    # and pauses every session for milliseconds in the middle of its transaction.
    gc.collect()
    gc.freeze()
    if on_ready is not None:
        on_ready(addresses)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        if primary and worker is not None and worker.wake_reader is not None:
            loop.remove_reader(worker.wake_reader)
        if wakeup is not None:
            loop.remove_reader(wakeup.fileno())
            wakeup.close()
        for server in servers:
            server.close()
        sessions = list(current[0].sessions)
        if sessions:
            await asyncio.wait(sessions, timeout=_SHUTDOWN_GRACE)
            for task in sessions:
                task.cancel()
        if primary:
            await scheduler.stop()
            await notifier.stop()
        rotation_stop.set()
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await remote.close()
        await shared.counters.close()
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


def _inbound_options(config: Config) -> InboundOptions | None:
    checks = config.mailauth
    if not checks.enabled:
        return None
    return InboundOptions(
        authserv_id=checks.authserv_id or config.hostname,
        spf_enabled=checks.spf,
        dkim_enabled=checks.dkim,
        dmarc_enabled=checks.dmarc,
        arc_enabled=checks.arc,
        dmarc_enforcement=Enforcement(checks.dmarc_enforcement),
        tempfail_on_dns_error=checks.tempfail_on_dns_error,
        spf_reject_fail=checks.spf_reject_fail,
        lookup_timeout=checks.lookup_timeout,
    )


def _build_services(
    config: Config,
    shared: _Shared,
    tls: TlsContextHolder | None,
    aliases: AliasTable,
    tokens: TokenValidator | None,
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
            mailbox_exists=shared.users.exists,
        )
    except RoutingError as exc:
        raise StartupError(f"routing: {exc}") from None
    auth = config.auth
    services = Services(
        config=config,
        store=shared.store,
        router=router,
        users=shared.users,
        tls=tls,
        on_message_queued=on_message_queued,
        route=build_route_function(config, router, shared.users, shared.remote),
        lockout=Lockout(
            shared.counters,
            LockoutSettings(
                max_failures=auth.lockout_max_failures,
                window=auth.lockout_window,
                ban_time=auth.lockout_ban_time,
                penalty_delay=auth.lockout_penalty_delay,
            ),
        ),
        sender_policy=SenderPolicy(SenderRules(auth.sender_owners), router),
        tokens=tokens,
        resolver=shared.resolver,
        inbound=_inbound_options(config),
        signer=shared.signer if config.dkim is not None and config.dkim.sign else None,
        dkim_keys=shared.keys,
    )
    if previous is not None:
        services.queue_ids = previous.queue_ids
        services.connections = previous.connections
    return services


async def _reload(running: Services, shared: _Shared) -> Services:
    """SIGHUP: re-read the config file, alias table, certificates and token keys."""
    source = running.config.source
    if source is None:
        raise StartupError("the running configuration did not come from a file")
    config = load_config(source)
    for section in RESTART_ONLY:
        if getattr(config, section) != getattr(running.config, section):
            log.warning("changes take effect only after a restart", section=section)
    services = _build_services(
        config,
        shared,
        _load_tls(config),
        _load_aliases(config),
        await _load_tokens(config),
        on_message_queued=running.on_message_queued,
        previous=running,
    )
    log.info("reloaded", config=str(source))
    return services
