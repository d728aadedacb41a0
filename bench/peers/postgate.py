"""bench.peers.postgate — a private postgate server process, configured by the bench.

SYNOPSIS
    settings = PostgateSettings(dns_server=nsd.nameserver)
    server = PostgateServer(workdir / "postgate", settings)
    server.setup()                  # certificate, config, the user bob@example.test
    server.start()                  # `python -m postgate.cli.main --config F serve`
    server.queued_messages()        # SELECT count(*) FROM messages
    server.stop(); server.wipe_queue()
    server.reconfigure(dataclasses.replace(settings, hold_incoming=False, relay_host=...))
    server.cli("queue", "release", "--all")

DESCRIPTION
    ``postgate_config_text`` is the one place that turns the bench's options into a
    postgate configuration file; a new server option the bench should pass through
    (e.g. ``[server] workers`` once postgate has it) goes into PostgateSettings and
    that function, nowhere else.

    Every safety stays on: 250 only after the queue's fsync (postgate's default),
    inbound SPF/DKIM/DMARC/ARC checks on the mx listener against the bench's NSD,
    TLS and AUTH required on submission, argon2id password hashes. What the bench
    changes from the defaults, and why:

      [queue] hold_incoming   accepted mail is queued on hold, like Postfix's HOLD,
                              so both sides do receive + durable queue and nothing else
      [limits] max_connections, max_connections_per_client
                              raised: every bench client comes from 127.0.0.1, and
                              scenario 5 holds 10,000 connections on purpose
      [log] level info, json, to a file in the run directory (one line per
                              transaction, as Postfix writes one per message)

    The server is started the way an operator starts it, as a child process whose
    stderr goes to a file; start() returns once every listener accepts.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.peers.names import LOCAL_DOMAIN, PASSWORD, RECIPIENT, SERVER_HOSTNAME
from bench.peers.process import stop_process
from postgate.server.tls import generate_self_signed
from tests.server_process import free_port

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class PostgateSettings:
    """The bench's knobs for one postgate configuration."""

    dns_server: str = "127.0.0.1:9"
    mailauth: bool = True
    hold_incoming: bool = True
    trusted_networks: tuple[str, ...] = ()
    relay_host: str | None = None
    delivery_concurrency: int = 20
    max_connections_per_destination: int = 10
    max_connections: int = 20_000
    max_connections_per_client: int = 20_000
    log_level: str = "info"
    # None: postgate's default. "0" turns its cache of verified passwords off.
    credential_cache_ttl: str | None = None
    # `[server] workers = N` (several processes on SO_REUSEPORT); bench --workers N.
    workers: int | None = None
    extra: dict[str, str] = field(default_factory=dict)  # section -> raw TOML lines


def _toml_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{value}"' for value in values) + "]"


def postgate_config_text(settings: PostgateSettings, ports: dict[str, int]) -> str:
    """The whole postgate.toml for ``settings`` with listeners on ``ports``."""
    server_lines = [f'hostname = "{SERVER_HOSTNAME}"', 'data_dir = "data"']
    if settings.workers is not None:
        server_lines.append(f"workers = {settings.workers}")
    delivery_lines = [
        f'dns_servers = ["{settings.dns_server}"]',
        f"max_connections_per_destination = {settings.max_connections_per_destination}",
    ]
    if settings.relay_host is not None:
        delivery_lines.append(f'relay_host = "{settings.relay_host}"')
    sections: list[tuple[str, list[str]]] = [
        ("[server]", server_lines),
        *(
            (
                "[[listener]]",
                [f'name = "{role}"', f'role = "{role}"', 'address = "127.0.0.1"', f"port = {port}"],
            )
            for role, port in ports.items()
        ),
        ("[tls]", ['cert_file = "tls/fullchain.pem"', 'key_file = "tls/privkey.pem"']),
        (
            "[limits]",
            [
                f"max_connections = {settings.max_connections}",
                f"max_connections_per_client = {settings.max_connections_per_client}",
            ],
        ),
        (
            "[routing]",
            [
                f'local_domains = ["{LOCAL_DOMAIN}"]',
                f"trusted_networks = {_toml_list(settings.trusted_networks)}",
            ],
        ),
        (
            "[queue]",
            [
                f"hold_incoming = {'true' if settings.hold_incoming else 'false'}",
                f"delivery_concurrency = {settings.delivery_concurrency}",
            ],
        ),
        ("[delivery]", delivery_lines),
        ("[mailauth]", [f"enabled = {'true' if settings.mailauth else 'false'}"]),
        (
            "[auth]",
            []
            if settings.credential_cache_ttl is None
            else [f"credential_cache_ttl = {settings.credential_cache_ttl}"],
        ),
        ("[log]", [f'level = "{settings.log_level}"', 'format = "json"', 'file = "postgate.log"']),
    ]
    text = []
    for header, lines in sections:
        extra = settings.extra.get(header.strip("[]"), "")
        text.append("\n".join([header, *lines, *([extra] if extra else [])]))
    return "\n\n".join(text) + "\n"


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class PostgateServer:
    def __init__(self, root: Path, settings: PostgateSettings) -> None:
        self.root = root
        self.settings = settings
        self.ports = {"mx": free_port(), "submission": free_port()}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.root / "postgate.toml"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def queue_db(self) -> Path:
        return self.data_dir / "queue.db"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("postgate is not running")
        return self.process.pid

    def setup(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        generate_self_signed(
            self.root / "tls" / "fullchain.pem", self.root / "tls" / "privkey.pem", SERVER_HOSTNAME
        )
        self.write_config()
        self.cli("user", "add", RECIPIENT, "--password-stdin", stdin=PASSWORD + "\n")

    def write_config(self) -> None:
        self.config_path.write_text(postgate_config_text(self.settings, self.ports))

    def reconfigure(self, settings: PostgateSettings) -> None:
        self.settings = settings
        self.write_config()

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "postgate.cli.main", "--config", str(self.config_path), *args]

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 120.0) -> str:
        done = subprocess.run(
            self.command(*args),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"postgate {' '.join(args[:3])} exited {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[-500:]}"
            )
        return done.stdout

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("postgate already started")
        with open(self.root / "stderr.txt", "ab") as stderr:
            self.process = subprocess.Popen(
                self.command("serve"), stdout=subprocess.DEVNULL, stderr=stderr, cwd=self.root
            )
        deadline = time.monotonic() + START_TIMEOUT
        pending = set(self.ports.values())
        while pending:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                tail = (self.root / "stderr.txt").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"postgate exited with {code} at start: {tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"postgate did not listen within {START_TIMEOUT:.0f} s")
            pending = {port for port in pending if not _port_accepts(port)}
            if pending:
                time.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process, STOP_TIMEOUT)

    def wipe_queue(self) -> None:
        """Remove the queue database (server stopped): the next start begins empty."""
        if self.process is not None:
            raise RuntimeError("stop postgate before wiping its queue")
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.queue_db}{suffix}")

    def _query_int(self, sql: str) -> int:
        if not self.queue_db.exists():
            return 0
        db = sqlite3.connect(f"file:{self.queue_db}?mode=ro", uri=True, timeout=10.0)
        try:
            return int(db.execute(sql).fetchone()[0])
        finally:
            db.close()

    def queued_messages(self) -> int:
        return self._query_int("SELECT count(*) FROM messages")

    def unfinished_recipients(self) -> int:
        return self._query_int(
            "SELECT count(*) FROM recipients WHERE status NOT IN ('delivered','bounced','deleted')"
        )

    def status_counts(self) -> dict[str, int]:
        if not self.queue_db.exists():
            return {}
        db = sqlite3.connect(f"file:{self.queue_db}?mode=ro", uri=True, timeout=10.0)
        try:
            rows = db.execute("SELECT status, count(*) FROM status_log GROUP BY status").fetchall()
        finally:
            db.close()
        return {str(status): int(count) for status, count in rows}

    def delivery_times(self) -> tuple[float, float] | None:
        """(first, last) time a recipient was recorded delivered, from the status log."""
        if not self.queue_db.exists():
            return None
        db = sqlite3.connect(f"file:{self.queue_db}?mode=ro", uri=True, timeout=10.0)
        try:
            row = db.execute(
                "SELECT min(logged_at), max(logged_at) FROM status_log WHERE status = 'delivered'"
            ).fetchone()
        finally:
            db.close()
        if row is None or row[0] is None:
            return None
        return float(row[0]), float(row[1])

    def effective_setting(self, key: str) -> str:
        """A key's value in force, as `postgate config check` prints it ("key = value")."""
        for line in self.cli("config", "check").splitlines():
            name, _, value = line.partition("=")
            if name.strip() == key:
                return value.strip()
        return "(no such key in this postgate)"

    def password_hash(self) -> str:
        """The argon2id hash postgate stored for the bench user (Dovecot verifies the same)."""
        db = sqlite3.connect(f"file:{self.data_dir / 'users.db'}?mode=ro", uri=True)
        try:
            row = db.execute(
                "SELECT password_hash FROM accounts WHERE address = ?", (RECIPIENT,)
            ).fetchone()
        finally:
            db.close()
        if row is None:
            raise RuntimeError(f"{RECIPIENT} not in users.db")
        return str(row[0])

    def log_problems(self, limit: int = 5) -> list[str]:
        """The first few warning/error lines of the server log (why a run failed)."""
        log = self.root / "postgate.log"
        found: list[str] = []
        with contextlib.suppress(OSError), open(log, errors="replace") as lines:
            for line in lines:
                if '"level": "warning"' in line or '"level": "error"' in line:
                    found.append(line.strip()[:400])
                    if len(found) >= limit:
                        break
        return found
