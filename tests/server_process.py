"""A real postgate server process on loopback ports, for end-to-end tests.

The server is started the way an operator starts it (`postgate --config F serve`) in a
child process, with its log in a file the test can read. Ports are free ephemeral
ports picked just before the start.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from postgate.accounts import UserStore
from postgate.server.tls import generate_self_signed

DOMAIN = "example.test"
HOSTNAME = "mx.example.test"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], object], timeout: float = 15.0, what: str = "condition"
) -> object:
    """Poll ``condition`` until it returns something truthy; bounded in time."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            # A port in the ephemeral range that nothing listens on can still "accept":
            # when the kernel picks that very port as the source, the SYN meets itself
            # (TCP simultaneous open) and the socket is connected to itself.
            return connection.getsockname() != connection.getpeername()
    except OSError:
        return False


@dataclass
class ServerProcess:
    root: Path
    ports: dict[str, int] = field(default_factory=dict)
    extra_config: str = ""
    server_extra: str = ""
    routing_extra: str = ""
    queue_extra: str = ""
    # Tests never ask the machine's resolver (it is not on loopback): DNS goes to a
    # dead loopback port unless a test brings its own NSD, and the inbound
    # SPF/DKIM/DMARC checks (which need DNS) are off unless a test turns them on.
    delivery_extra: str = 'dns_servers = ["127.0.0.1:9"]'
    mailauth_extra: str = "enabled = false"
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.root / "postgate.toml"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgate.log"

    @property
    def stderr_path(self) -> Path:
        return self.root / "stderr.txt"

    @property
    def maildir_root(self) -> Path:
        return self.data_dir / "mail"

    @property
    def cert_file(self) -> Path:
        return self.root / "tls" / "fullchain.pem"

    @property
    def key_file(self) -> Path:
        return self.root / "tls" / "privkey.pem"

    def maildir(self, address: str) -> Path:
        local, _, domain = address.partition("@")
        return self.maildir_root / domain / local

    def write_config(self) -> None:
        if not self.ports:
            self.ports = {"mx": free_port(), "submission": free_port(), "submissions": free_port()}
        if not self.cert_file.exists():
            generate_self_signed(self.cert_file, self.key_file, HOSTNAME)
        self.config_path.write_text(
            f"""
[server]
hostname = "{HOSTNAME}"
data_dir = "data"
{self.server_extra}

[[listener]]
name = "mx"
role = "mx"
address = "127.0.0.1"
port = {self.ports["mx"]}

[[listener]]
name = "submission"
role = "submission"
address = "127.0.0.1"
port = {self.ports["submission"]}

[[listener]]
name = "submissions"
role = "submissions"
address = "127.0.0.1"
port = {self.ports["submissions"]}

[tls]
cert_file = "tls/fullchain.pem"
key_file = "tls/privkey.pem"

[routing]
local_domains = ["{DOMAIN}"]
{self.routing_extra}

[queue]
{self.queue_extra}

[delivery]
{self.delivery_extra}

[mailauth]
{self.mailauth_extra}

[log]
format = "json"
level = "debug"
file = "postgate.log"
{self.extra_config}
""",
            encoding="utf-8",
        )

    def add_user(self, address: str, password: str) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        users = UserStore.open(self.data_dir / "users.db")
        try:
            users.add(address, password)
        finally:
            users.close()

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "postgate.cli.main", "--config", str(self.config_path), *args]

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            self.write_config()
        with open(self.stderr_path, "ab") as stderr:
            self.process = subprocess.Popen(
                self.command("serve"), stdout=subprocess.DEVNULL, stderr=stderr, cwd=self.root
            )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"postgate exited with {self.process.returncode}: "
                    f"{self.stderr_path.read_text(errors='replace')}"
                )
            return all(port_accepts(port) for port in self.ports.values())

        wait_for(ready, 20.0, "postgate to listen")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def log_records(self) -> list[dict[str, object]]:
        if not self.log_path.exists():
            return []
        records = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def wait_for_log(self, timeout: float = 15.0, **match: object) -> dict[str, object]:
        def find() -> dict[str, object] | None:
            for record in self.log_records():
                if all(record.get(key) == value for key, value in match.items()):
                    return record
            return None

        found = wait_for(find, timeout, f"log record {match}")
        assert isinstance(found, dict)
        return found

    def delivered_files(self, address: str) -> list[Path]:
        new = self.maildir(address) / "new"
        return sorted(new.iterdir()) if new.is_dir() else []

    def wait_for_delivery(self, address: str, count: int = 1, timeout: float = 20.0) -> list[Path]:
        wait_for(
            lambda: len(self.delivered_files(address)) >= count,
            timeout,
            f"{count} message(s) in the Maildir of {address}",
        )
        return self.delivered_files(address)

    def status_rows(self, queue_id: str) -> list[sqlite3.Row]:
        db = sqlite3.connect(f"file:{self.data_dir / 'queue.db'}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        try:
            return list(
                db.execute("SELECT * FROM status_log WHERE queue_id = ? ORDER BY id", (queue_id,))
            )
        finally:
            db.close()


def running_server(root: Path, **options: str) -> Iterator[ServerProcess]:
    server = ServerProcess(root, **options)  # type: ignore[arg-type]
    server.write_config()
    try:
        yield server
    finally:
        server.stop()
