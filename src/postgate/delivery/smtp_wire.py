"""delivery.smtp_wire — the bytes under the SMTP client: replies, framing, TLS switch.

SYNOPSIS
    wire = await SmtpWire.open(host, port, timeout=60, tls_context=None, server_hostname=None)
    wire.write(b"EHLO me\r\n"); reply = await wire.read_reply()
    await wire.start_tls(context, "mx.example.org")
    prepare_for_data(message) / prepare_for_bdat(message, binary=False) / xtext(value)

DESCRIPTION
    An asyncio Protocol with a buffer of its own, so the STARTTLS switch can refuse
    any byte the server sent after its 220 (RFC 3207 6: such bytes were sent in the
    clear and must not be read as if they came over TLS), and so every read is
    bounded: a reply line longer than MAX_REPLY_LINE or a reply of more than
    MAX_REPLY_LINES lines is a protocol error, not unbounded memory.

    Replies are parsed strictly (RFC 5321 4.2): three digits 2xx-5xx, then "-" on
    every line but the last, " " or nothing on the last, and the same code on every
    line. Anything else raises SmtpClientError and leaves the connection unusable,
    as does a 421 (the server is closing), a timeout or a lost connection.

    Message framing is plain bytes.replace work, done in C: all line ends to CRLF,
    dot-stuffing for DATA (RFC 5321 4.5.2), raw octets for BINARYMIME BDAT.

SEE ALSO
    delivery.smtp_client, RFC 5321 4.2 and 4.5.2, RFC 3207
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

MAX_REPLY_LINE = 4096  # RFC 5321 4.5.3.1.5 says 512; be lenient, but bounded
MAX_REPLY_LINES = 200


class SmtpClientError(Exception):
    """A command failed in a way that ends the attempt on this connection.

    ``reply`` is the server's reply, or None for timeouts, lost connections and
    malformed replies; ``temporary`` says whether another try (later, or on another
    host) may succeed.
    """

    def __init__(self, message: str, *, reply: SmtpReply | None, temporary: bool) -> None:
        super().__init__(message)
        self.reply = reply
        self.temporary = temporary


@dataclass(frozen=True, slots=True)
class SmtpReply:
    """One (possibly multi-line) reply: ``code`` and the text of each line."""

    code: int
    lines: tuple[str, ...]

    @property
    def enhanced(self) -> str:
        """The RFC 3463 code at the start of the first line ("5.1.1"), or ""."""
        first = self.lines[0] if self.lines else ""
        found = _ENHANCED.match(first)
        # RFC 3463 2: the class digit must agree with the reply code's first digit.
        if found is None or found.group(1)[0] != str(self.code)[0]:
            return ""
        return found.group(1)

    @property
    def text(self) -> str:
        """All lines joined by spaces, without the enhanced code of the first."""
        first = self.lines[0] if self.lines else ""
        if self.enhanced:
            first = first[len(self.enhanced) :].lstrip()
        return " ".join((first, *self.lines[1:])).strip()

    @property
    def is_positive(self) -> bool:
        """2xx: the command was accepted."""
        return 200 <= self.code < 300

    @property
    def is_temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return 500 <= self.code < 600

    def __str__(self) -> str:
        return f"{self.code} {' '.join(self.lines)}".strip()


_ENHANCED = re.compile(r"([245]\.\d{1,3}\.\d{1,3})(?:\s|$)")


def xtext(value: str) -> str:
    """RFC 3461 4: xtext-encode ENVID/ORCPT values ('+', '=' and non-printables as +HH)."""
    out = []
    for byte in value.encode("utf-8"):
        char = chr(byte)
        out.append(char if 33 <= byte <= 126 and char not in "+=" else f"+{byte:02X}")
    return "".join(out)


def normalize_line_ends(message: bytes) -> bytes:
    """Every line end becomes CRLF: bare LF and bare CR too (RFC 5321 2.3.8).

    Three C-speed passes. A bare CR is turned into a line end rather than kept, so a
    lenient receiver cannot read "<CR>.<CR><LF>" as the end of data (SMTP smuggling).
    """
    if b"\r" not in message:
        return message.replace(b"\n", b"\r\n")
    return message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def prepare_for_data(message: bytes) -> bytes:
    """CRLF-normalised, dot-stuffed (RFC 5321 4.5.2), ending with CRLF "." CRLF."""
    return dot_stuff(normalize_line_ends(message))


def dot_stuff(normalized: bytes) -> bytes:
    """Dot-stuff a CRLF-only message and append the end-of-data marker."""
    wire = normalized
    if wire and not wire.endswith(b"\r\n"):
        wire += b"\r\n"
    wire = wire.replace(b"\r\n.", b"\r\n..")
    if wire.startswith(b"."):
        wire = b"." + wire
    return wire + b".\r\n"


def prepare_for_bdat(message: bytes, *, binary: bool) -> bytes:
    """The exact octets for BDAT: CRLF-normalised unless BINARYMIME (RFC 3030 3)."""
    return message if binary else normalize_line_ends(message)


class _WireProtocol(asyncio.Protocol):
    """Buffers what the server sends and wakes the one reader waiting for it."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.lost_reason: BaseException | None = None
        self._reader: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake_reader()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake_reader()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.lost_reason = exc
        self._wake_reader()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    async def wait_for_data(self) -> None:
        self._reader = asyncio.get_running_loop().create_future()
        try:
            await self._reader
        finally:
            self._reader = None

    async def wait_writable(self) -> None:
        if self._writable is not None:
            await asyncio.shield(self._writable)

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)


class SmtpWire:
    """One TCP (or TLS) connection carrying SMTP lines; see the module docstring."""

    def __init__(self, protocol: _WireProtocol, *, timeout: float, peer_address: str) -> None:
        self._protocol = protocol
        self.timeout = timeout
        self._usable = True
        self.peer_address = peer_address
        # Called with ("->", line) for what we send and ("<-", line) for replies; used
        # by `postgate send` to print the dialogue. Message bodies are summarised.
        self.trace: Callable[[str, str], None] | None = None

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        timeout: float,
        tls_context: ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> SmtpWire:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    _WireProtocol,
                    host,
                    port,
                    ssl=tls_context,
                    server_hostname=server_hostname if tls_context is not None else None,
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            raise SmtpClientError(
                f"connect to {host}:{port} failed: {reason}", reply=None, temporary=True
            ) from exc
        peer = transport.get_extra_info("peername")
        return cls(protocol, timeout=timeout, peer_address=str(peer[0]) if peer else host)

    @property
    def is_usable(self) -> bool:
        return self._usable and not self._protocol.closed

    @property
    def tls_version(self) -> str:
        transport = self._protocol.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        version = ssl_object.version() if isinstance(ssl_object, ssl.SSLObject) else None
        return version or ""

    def mark_unusable(self) -> None:
        self._usable = False

    def close(self) -> None:
        self._usable = False
        if self._protocol.transport is not None:
            self._protocol.transport.abort()

    def write(self, data: bytes | memoryview) -> None:
        transport = self._protocol.transport
        if transport is None or self._protocol.closed or transport.is_closing():
            self._usable = False
            raise SmtpClientError("connection lost before write", reply=None, temporary=True)
        if self.trace is not None:
            _trace_sent(self.trace, bytes(data))
        transport.write(data)

    async def drain(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self._protocol.wait_writable()
        except TimeoutError as exc:
            self.close()
            raise SmtpClientError("timeout sending data", reply=None, temporary=True) from exc
        if self._protocol.closed:
            self._usable = False
            raise SmtpClientError("connection lost while sending", reply=None, temporary=True)

    async def read_reply(self) -> SmtpReply:
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self._read_reply()
        except TimeoutError as exc:
            self.close()
            raise SmtpClientError("timeout waiting for reply", reply=None, temporary=True) from exc
        except SmtpClientError:
            self.close()
            raise
        if reply.code == 421:
            # RFC 5321 3.8: 421 means the server is closing the channel.
            self._usable = False
        if self.trace is not None:
            for index, line in enumerate(reply.lines):
                separator = "-" if index < len(reply.lines) - 1 else " "
                self.trace("<-", f"{reply.code}{separator}{line}")
        return reply

    async def _read_reply(self) -> SmtpReply:
        code = 0
        lines: list[str] = []
        while len(lines) < MAX_REPLY_LINES:
            raw = await self._read_line()
            line = raw.decode("utf-8", errors="replace")
            if not _REPLY_LINE.fullmatch(line):
                raise _protocol_error(f"malformed reply line {line[:80]!r}")
            if code and int(line[:3]) != code:
                raise _protocol_error(f"reply code changed within a reply: {line[:80]!r}")
            code = int(line[:3])
            lines.append(line[4:])
            if line[3:4] != "-":
                return SmtpReply(code, tuple(lines))
        raise _protocol_error(f"reply longer than {MAX_REPLY_LINES} lines")

    async def _read_line(self) -> bytes:
        buffer = self._protocol.buffer
        scanned = 0
        while True:
            end = buffer.find(b"\n", scanned)
            if end >= 0:
                line = bytes(buffer[:end]).removesuffix(b"\r")
                del buffer[: end + 1]
                return line
            scanned = len(buffer)
            if scanned > MAX_REPLY_LINE:
                raise _protocol_error(f"reply line longer than {MAX_REPLY_LINE} bytes")
            if self._protocol.closed:
                self._usable = False
                reason = self._protocol.lost_reason
                raise SmtpClientError(
                    f"connection closed by peer{f': {reason}' if reason else ''}",
                    reply=None,
                    temporary=True,
                )
            await self._protocol.wait_for_data()

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        """Switch to TLS after the server's 220 to STARTTLS."""
        if self._protocol.buffer:
            # RFC 3207 6: bytes that arrived before the handshake were not protected.
            self.close()
            raise _protocol_error("server sent data after its STARTTLS reply")
        transport = self._protocol.transport
        if transport is None:
            raise SmtpClientError("connection lost before TLS", reply=None, temporary=True)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                new_transport = await loop.start_tls(
                    transport, self._protocol, context, server_hostname=server_hostname
                )
        except (OSError, TimeoutError, ssl.SSLError, ConnectionError) as exc:
            self.close()
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            raise SmtpClientError(
                f"TLS handshake failed: {reason}", reply=None, temporary=True
            ) from exc
        if new_transport is None:
            self.close()
            raise SmtpClientError("TLS handshake failed", reply=None, temporary=True)
        self._protocol.transport = new_transport


_REPLY_LINE = re.compile(r"[2-5][0-9]{2}(?:[ -].*)?", re.DOTALL)
_COMMAND_LINE = re.compile(rb"[A-Za-z]{4,8}(?: [^\r\n]*)?")


def _trace_sent(trace: Callable[[str, str], None], data: bytes) -> None:
    lines = data.split(b"\r\n")
    commands = data.endswith(b"\r\n") and all(_COMMAND_LINE.fullmatch(line) for line in lines[:-1])
    if not commands:
        trace("->", f"[{len(data)} octets: message data or AUTH response, not shown]")
        return
    for line in lines[:-1]:
        text = line.decode("utf-8", "replace")
        if text.upper().startswith("AUTH "):
            # Never print credentials, even base64-wrapped ones.
            text = " ".join(text.split(" ")[:2]) + (" ****" if text.count(" ") > 1 else "")
        trace("->", text)


def _protocol_error(text: str) -> SmtpClientError:
    return SmtpClientError(f"protocol error: {text}", reply=None, temporary=True)
