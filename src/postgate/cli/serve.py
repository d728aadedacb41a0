"""cli.serve — `postgate init` (a working starter setup) and `postgate serve`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import structlog

from postgate.accounts import AccountError, UserStore, generate_password
from postgate.cli.common import CliError, load
from postgate.config import Config, ConfigError, default_config_text, parse_config
from postgate.logs import configure_logging
from postgate.server.app import RESTART_ONLY, StartupError, run_server
from postgate.server.instance import InstanceError, claim_queue
from postgate.server.listen import ListenError, bind_all
from postgate.server.systemd import notify
from postgate.server.tls import generate_self_signed
from postgate.server.workers import STARTUP_FAILED, WorkerRole, supervise

log = structlog.get_logger("postgate.server")

# What a reload does not change in a running server: a worker started after a reload
# keeps the running values too, or one worker would queue into one file while another
# delivers from a different one.
KEPT_AT_RELOAD = (*RESTART_ONLY, "workers")


def register(commands: Any) -> None:
    init = commands.add_parser(
        "init",
        help="write a starter configuration, a self-signed certificate and a first user",
        description="Create DIR/postgate.toml, DIR/tls/{fullchain,privkey}.pem and a first "
        "user with a random password (shown once). Nothing is overwritten.",
        epilog="example: postgate init --dir ./var --domain example.com --ports 2525,2587,2465",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("--dir", type=Path, default=Path("var"), help="where to put everything")
    init.add_argument("--hostname", default=None, help="server name (default: this host's FQDN)")
    init.add_argument("--domain", default="localhost", help="first local mail domain")
    init.add_argument("--user", default="admin", help="local part of the first user")
    init.add_argument("--ports", default="2525,2587,2465", help="MX,submission,submissions ports")
    init.set_defaults(handler=run_init)

    serve = commands.add_parser(
        "serve",
        help="run the mail server",
        description="Run the listeners and the delivery scheduler until SIGTERM/SIGINT.",
        epilog="example: postgate serve --config /etc/postgate/postgate.toml",
    )
    serve.set_defaults(handler=run_serve)


def _parse_ports(text: str) -> tuple[int, int, int]:
    try:
        ports = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise CliError(
            f"--ports: expected three numbers like 2525,2587,2465, got {text!r}"
        ) from None
    if len(ports) != 3 or not all(0 < port < 65536 for port in ports):
        raise CliError(f"--ports: expected three ports 1-65535, got {text!r}")
    return ports[0], ports[1], ports[2]


def run_init(args: argparse.Namespace) -> int:
    directory: Path = args.dir.resolve()
    config_path: Path = args.config if args.config_given else directory / "postgate.toml"
    if config_path.exists():
        raise CliError(f"{config_path} exists already; remove it or choose another --dir")
    hostname = args.hostname or socket.getfqdn()
    if "." not in hostname:
        # A bare container or host name is not a usable mail server name; "localhost"
        # is, for a first local try. Production sets --hostname mail.example.com.
        hostname = "localhost"
    ports = _parse_ports(args.ports)
    tls_dir = directory / "tls"
    cert_file, key_file = tls_dir / "fullchain.pem", tls_dir / "privkey.pem"
    address = f"{args.user}@{args.domain}"
    try:
        text = default_config_text(
            hostname=hostname,
            data_dir=directory / "data",
            local_domains=[args.domain],
            ports=ports,
            cert_file=cert_file,
            key_file=key_file,
        )
        # RFC 5321 4.5.1: postmaster must reach a person; the first user is that person
        # until the operator says otherwise (else its mail would bounce, to anyone).
        text = text.replace("# postmaster = (not set)", f'postmaster = "{address}"', 1)
        config = parse_config(text, source=str(config_path), base_dir=directory)
    except ConfigError as exc:
        raise CliError(f"cannot build a configuration from these options: {exc}") from None
    directory.mkdir(parents=True, exist_ok=True)
    if not cert_file.exists():
        generate_self_signed(cert_file, key_file, hostname)
    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    config_path.write_text(text, encoding="utf-8")
    password = generate_password()
    users = UserStore.open(config.auth.user_db)
    try:
        users.add(address, password)
    except AccountError as exc:
        raise CliError(str(exc)) from None
    finally:
        users.close()
    mx, submission, submissions = ports
    print(
        f"""postgate is set up in {directory}
  configuration  {config_path}
  certificate    {cert_file} (self-signed; replace with Let's Encrypt files in production)
  first user     {address}
  password       {password}   (shown once; to change it:
                 {_program()} --config {config_path} user passwd {address})

Run the server: {_program()} --config {config_path} serve
Send a message: swaks --server 127.0.0.1:{submission} --tls --auth-user {address} \\
                  --auth-password '{password}' --from {address} --to {address}
It lands in     {config.delivery.maildir_root}/{args.domain}/{args.user}/new/
Ports: {mx} (MX, STARTTLS), {submission} (submission: STARTTLS + AUTH), \
{submissions} (implicit TLS + AUTH)"""
    )
    return 0


def _program() -> str:
    """How the operator called us, for copy-paste lines (``.venv/bin/postgate``)."""
    called = sys.argv[0] if sys.argv else ""
    return called if called.endswith("postgate") else "postgate"


def _use_uvloop() -> None:
    """uvloop when it is installed (the `fast` extra), unless POSTGATE_EVENT_LOOP=asyncio
    asks for the standard loop (to rule uvloop out when chasing a problem)."""
    if os.environ.get("POSTGATE_EVENT_LOOP", "").strip().lower() == "asyncio":
        return
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_serve(args: argparse.Namespace) -> int:
    # Until the server installs its own (after start-up), a reload request has nothing
    # to reload: the configuration is being read right now. Without this, SIGHUP's
    # default action would end the process (`systemctl reload` just after `start`).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    config = load(args)
    configure_logging(config.log.level, config.log.format, config.log.file)

    supervisor = os.getpid()

    def ready(addresses: list[tuple[str, str, int]]) -> None:
        listing = ", ".join(f"{name} {address}:{port}" for name, address, port in addresses)
        print(f"postgate: listening: {listing}", file=sys.stderr, flush=True)
        notify("READY=1", main_pid=supervisor)

    _use_uvloop()
    # The SQLite writer thread gives the GIL back around each statement and then waits
    # for the event loop to release it: up to the switch interval (5 ms by default)
    # when the loop is busy. A shorter interval cuts that wait from every batch that
    # sessions are waiting on; 1 ms measured best (bench/, scenario 2).
    sys.setswitchinterval(0.001)
    try:
        claim_queue(config.queue.path)  # held (and inherited by workers) until exit
    except InstanceError as exc:
        raise CliError(f"cannot start: {exc}", exit_code=1) from None
    if config.workers == 1:
        try:
            asyncio.run(run_server(config, on_ready=ready))
        except StartupError as exc:
            raise CliError(f"cannot start: {exc}", exit_code=1) from None
        return 0
    try:
        bound = bind_all(config.listeners, copies=config.workers)
    except ListenError as exc:
        raise CliError(f"cannot start: {exc}", exit_code=1) from None

    def run_worker(role: WorkerRole, worker_config: Config) -> int:
        def on_ready(addresses: list[tuple[str, str, int]]) -> None:
            role.ready()  # the supervisor announces the server once all workers serve

        try:
            asyncio.run(run_server(worker_config, on_ready=on_ready, worker=role))
        except StartupError as exc:
            role.startup_failed(str(exc))  # the supervisor says it, once
            return STARTUP_FAILED
        return 0

    def reload(running: Config) -> Config | None:
        # The workers re-read the file themselves; this keeps a restarted one in step
        # with them, sections that need a restart included (they keep running's).
        try:
            fresh = load(args)
        except (CliError, ConfigError) as exc:
            log.error("reload failed, keeping the running configuration", reason=str(exc))
            return None
        return dataclasses.replace(fresh, **{key: getattr(running, key) for key in KEPT_AT_RELOAD})

    def all_ready() -> None:
        ready([(item.config.name, item.config.address, item.config.port) for item in bound[0]])

    return supervise(bound, config, run_worker, reload=reload, on_ready=all_ready)
