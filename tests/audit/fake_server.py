"""A small, deliberately flawed SMTP server on loopback, so every FAIL path of the
audit can be shown against a real socket (our server and a sane Postfix have none of
these flaws). Each flaw is a switch in ``Flaws``; by default the server is harmless."""

from __future__ import annotations

import base64
import contextlib
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import trustme


@dataclass(frozen=True)
class Flaws:
    banner: str = "220 fake.test ESMTP"
    auth_in_clear: bool = False  # advertise and check AUTH before STARTTLS
    inject: bool = False  # keep bytes pipelined after STARTTLS (CVE-2011-0411)
    routes_percent: bool = False  # unknown local names refused, but u%x@local relayed
    lockout_after: int | None = None  # failed logins before every AUTH is refused


USER, PASSWORD = "audit@local.test", "right-password"


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, flaws: Flaws, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.flaws = flaws
        self.context = context
        self.failures = 0
        self.lock = threading.Lock()


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def setup(self) -> None:
        self.sock: socket.socket = self.request
        self.sock.settimeout(5)
        self.buffer = b""
        self.tls = False

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def line(self) -> bytes | None:
        while b"\r\n" not in self.buffer:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return None
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def handle(self) -> None:
        flaws = self.server.flaws
        self.send(flaws.banner)
        for _ in range(1000):
            raw = self.line()
            if raw is None:
                return
            text = raw.decode("latin-1")
            verb, _, argument = text.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                offers = ["250-fake.test"]
                if not self.tls:
                    offers.append("250-STARTTLS")
                if self.tls or flaws.auth_in_clear:
                    offers.append("250-AUTH PLAIN")
                offers.append("250 PIPELINING")
                for offer in offers:
                    self.send(offer)
            elif verb == "STARTTLS":
                self.send("220 go ahead")
                kept = self.buffer if flaws.inject else b""
                self.sock = self.server.context.wrap_socket(self.sock, server_side=True)
                self.buffer, self.tls = kept, True
            elif verb == "AUTH":
                self.auth(argument)
            elif verb == "RCPT":
                self.send(self.rcpt(argument.partition(":")[2].strip()))
            elif verb == "DATA":
                self.send("354 go")
                while (raw := self.line()) not in (b".", None):
                    pass
                self.send("250 2.0.0 queued")
            elif verb == "QUIT":
                self.send("221 bye")
                return
            elif verb in ("HELO", "MAIL", "RSET", "NOOP"):
                self.send("250 2.0.0 ok")
            else:
                self.send("502 5.5.1 not here")

    def auth(self, argument: str) -> None:
        if not (self.tls or self.server.flaws.auth_in_clear):
            self.send("538 5.7.11 encryption required")
            return
        limit = self.server.flaws.lockout_after
        with self.server.lock:
            if limit is not None and self.server.failures > limit:
                self.send("454 4.7.0 locked")
                return
            _, user, password = base64.b64decode(argument.split()[1]).decode().split("\0")
            if (user, password) == (USER, PASSWORD):
                self.send("235 2.7.0 ok")
                return
            self.server.failures += 1
        self.send("535 5.7.8 bad credentials")

    def rcpt(self, address: str) -> str:
        local, _, domain = address.strip("<>").rpartition("@")
        if domain.lower() != "local.test":
            return "554 5.7.1 Relay access denied"
        if self.server.flaws.routes_percent and "%" in local:
            return "250 2.1.5 ok"
        if local.lower() == "postmaster":
            return "250 2.1.5 ok"
        return "550 5.1.1 user unknown"


@contextlib.contextmanager
def fake_smtp(flaws: Flaws) -> Iterator[int]:
    """Run the fake server; yields its port."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("fake.test").configure_cert(context)
    server = _Server(flaws, context)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
