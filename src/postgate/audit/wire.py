"""audit.wire — one raw SMTP conversation that writes down everything said.

SYNOPSIS
    with Conversation.open(target) as talk:      # connects, reads the banner
        talk.ehlo()                              # Reply; talk.extensions
        talk.starttls()                          # True when the handshake completed
        reply = talk.command("MAIL FROM:<>")
        talk.send_raw(b"STARTTLS\\r\\nNOOP\\r\\n")   # exact bytes, one write
        talk.evidence                            # ["S: 220 ...", "C: EHLO ...", ...]

DESCRIPTION
    The audit client is not the delivery client: it must send what a well-behaved
    client never would (pipelined bytes after STARTTLS, bare LF in DATA, malformed
    addresses) and keep a transcript of it as evidence. So it is a blocking socket
    with a small reply reader of its own: an audit runs one probe at a time from the
    CLI, and blocking reads with a timeout make every wait bounded by construction.

    Certificates are not verified (an audit must also reach servers with self-signed
    certificates); the TLS checks report what was negotiated.

DIAGNOSTICS
    ProbeError for a timeout, a lost connection or a malformed reply; the evidence
    up to that point stays in ``evidence`` and the error text is appended to it.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
from dataclasses import dataclass
from types import TracebackType

from postgate.audit.model import AuditTarget, TlsMode

# RFC 5321 4.5.3.1.5: a reply line is at most 512 octets; allow generous slack but bound
# what a hostile server can make us buffer.
_MAX_REPLY_BYTES = 64 * 1024
_MAX_REPLY_LINES = 200
_REPLY_LINE = re.compile(r"^(\d{3})(?:([ -])(.*))?$")
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


class ProbeError(Exception):
    """A probe could not complete (timeout, connection lost, garbage reply)."""


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 enhanced status code of the first line, if any."""
        found = _ENHANCED.match(self.lines[0]) if self.lines else None
        return found.group(0) if found else None

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    def wire_lines(self) -> list[str]:
        last = len(self.lines) - 1
        return [
            f"{self.code}{' ' if i == last else '-'}{line}" for i, line in enumerate(self.lines)
        ]

    def brief(self) -> str:
        return f"{self.code} {self.lines[0]}" if self.lines else str(self.code)


def visible(data: bytes) -> str:
    """Raw bytes as one evidence line, with CR and LF shown (they are the point)."""
    shown = data.decode("latin-1").replace("\\", "\\\\")
    return shown.replace("\r", "\\r").replace("\n", "\\n")


def permissive_tls_context() -> ssl.SSLContext:
    """A client context that talks to anything modern: no certificate verification."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Conversation:
    """One connection. Use ``Conversation.open(target)``; closes on ``with`` exit."""

    def __init__(self, sock: socket.socket, target: AuditTarget) -> None:
        self.sock: socket.socket = sock
        self.target = target
        self.evidence: list[str] = []
        self.banner = Reply(0, ())
        self.extensions: dict[str, str] = {}
        self.tls_version: str | None = None
        self.tls_cipher: str | None = None
        self.last_ehlo = Reply(0, ())
        self._buffer = b""

    @classmethod
    def open(cls, target: AuditTarget, *, read_banner: bool = True) -> Conversation:
        try:
            sock = socket.create_connection((target.host, target.port), timeout=target.timeout)
        except OSError as exc:
            raise ProbeError(f"cannot connect to {target.address}: {exc}") from exc
        talk = cls(sock, target)
        try:
            if target.tls_mode is TlsMode.IMPLICIT:
                talk._wrap()
            if read_banner:
                talk.banner = talk.read_reply()
        except BaseException:
            talk.close()
            raise
        return talk

    def __enter__(self) -> Conversation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    # -- sending -----------------------------------------------------------------------

    def send_raw(self, data: bytes, *, shown: str | None = None) -> None:
        self.evidence.append(f"C: {shown if shown is not None else visible(data)}")
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise self._failed(f"send failed: {exc}") from exc

    def command(self, line: str, *, shown: str | None = None) -> Reply:
        self.send_raw(line.encode("utf-8") + b"\r\n", shown=shown if shown is not None else line)
        return self.read_reply()

    # -- receiving ---------------------------------------------------------------------

    def read_reply(self, timeout: float | None = None) -> Reply:
        """One complete (possibly multi-line) reply; ProbeError on timeout or EOF.
        The evidence gets it as one line, continuation lines joined with " | "."""
        lines: list[str] = []
        shown: list[str] = []
        code = 0
        try:
            while len(lines) < _MAX_REPLY_LINES:
                raw = self._read_line(timeout)
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                shown.append(text)
                found = _REPLY_LINE.match(text)
                if found is None or (code and int(found.group(1)) != code):
                    raise ProbeError(f"malformed reply line {text!r}")
                code = int(found.group(1))
                lines.append(found.group(3) or "")
                if found.group(2) != "-":
                    self.evidence.append("S: " + " | ".join(shown))
                    return Reply(code, tuple(lines))
            raise ProbeError("reply longer than the audit accepts")
        except ProbeError as exc:
            if shown:
                self.evidence.append("S: " + " | ".join(shown))
            raise self._failed(str(exc)) from None

    def replies_until_closed(self, stop_code: int = 221) -> list[Reply]:
        """Every reply up to and including ``stop_code`` (or EOF). Bounded: each read
        has the target timeout and the count is capped."""
        replies: list[Reply] = []
        for _ in range(_MAX_REPLY_LINES):
            try:
                reply = self.read_reply()
            except ProbeError:
                break
            replies.append(reply)
            if reply.code == stop_code:
                break
        return replies

    def pending_bytes(self) -> bytes:
        """What the server sent beyond the last complete reply (kept for evidence)."""
        return self._buffer

    def _read_line(self, timeout: float | None) -> bytes:
        self.sock.settimeout(timeout if timeout is not None else self.target.timeout)
        while b"\n" not in self._buffer:
            if len(self._buffer) > _MAX_REPLY_BYTES:
                raise ProbeError("reply line too long")
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError as exc:
                raise ProbeError("no reply (timed out)") from exc
            except OSError as exc:
                raise ProbeError(f"connection lost: {exc}") from exc
            if not chunk:
                raise ProbeError("connection closed by the server")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def _failed(self, message: str) -> ProbeError:
        self.evidence.append(f"-- {message}")
        return ProbeError(message)

    # -- SMTP steps --------------------------------------------------------------------

    def ehlo(self, name: str | None = None) -> Reply:
        reply = self.command(f"EHLO {name or self.target.helo_name}")
        self.extensions = {}
        if reply.code == 250:
            for line in reply.lines[1:]:
                keyword, _, params = line.partition(" ")
                self.extensions[keyword.upper()] = params
        self.last_ehlo = reply
        return reply

    def starttls(self, *, ehlo_again: bool = True) -> bool:
        """STARTTLS and the handshake (RFC 3207); False when the server refused it."""
        reply = self.command("STARTTLS")
        if reply.code != 220:
            return False
        self.starttls_handshake()
        if ehlo_again:
            self.ehlo()
        return True

    def starttls_handshake(self) -> None:
        """The handshake after a 220 to STARTTLS (read by the caller); RFC 3207 4.2:
        everything known from before is forgotten."""
        self._wrap()
        self.extensions = {}

    def secure(self) -> Reply:
        """EHLO, plus STARTTLS and a second EHLO when the target's mode asks for it."""
        reply = self.ehlo()
        if self.target.tls_mode is TlsMode.STARTTLS and reply.code == 250:
            if "STARTTLS" not in self.extensions:
                raise self._failed("STARTTLS not offered")
            if not self.starttls():
                raise self._failed("STARTTLS refused")
        return self.last_ehlo

    def _wrap(self) -> None:
        if self._buffer:
            # RFC 3207 5: nothing may come between the 220 and the handshake.
            self.evidence.append(f"-- server sent before the handshake: {visible(self._buffer)}")
            self._buffer = b""
        context = permissive_tls_context()
        try:
            tls = context.wrap_socket(self.sock, server_hostname=sni_name(self.target.host))
        except (ssl.SSLError, OSError) as exc:
            raise self._failed(f"TLS handshake failed: {exc}") from exc
        self.sock = tls
        self.tls_version = tls.version()
        cipher = tls.cipher()
        self.tls_cipher = cipher[0] if cipher else None
        self.evidence.append(f"-- TLS established: {self.tls_version} {self.tls_cipher}")


def sni_name(host: str) -> str | None:
    """RFC 6066 3: SNI carries host names only, never address literals."""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return host
    return None
