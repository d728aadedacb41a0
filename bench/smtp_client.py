"""bench.smtp_client — a small asyncio SMTP client for the scenarios smtp-source cannot do.

SYNOPSIS
    conn = await SmtpConnection.open("127.0.0.1", port, timeout=30)
    await conn.greeting()                      # 220 banner
    await conn.ehlo("client.bench-sender.test")
    await conn.starttls(insecure_tls_context())
    await conn.auth_plain("bob@example.test", "secret")
    await conn.send_message(sender, [recipient], body_bytes)  # MAIL, RCPT, DATA, 250
    await conn.quit()

DESCRIPTION
    Lock-step SMTP (no PIPELINING), like smtp-source: each command waits for its
    reply, so a transaction is MAIL, RCPT, DATA, the body and the final dot, each a
    round trip. Any reply other than the expected class raises SmtpReplyError with
    the reply, which the scenario records as that run's error.

    ``make_body`` builds the same shape of message smtp-source sends (From, To,
    Date, Message-Id, then lines of X up to the requested payload length), already
    CRLF-terminated and ending with the dot line.

    TLS is not verified: the bench only talks to its own servers on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import ssl
import uuid

LINE_LENGTH = 78


class SmtpReplyError(Exception):
    """The server answered something other than what the step expects."""


def insecure_tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def make_body(sender: str, recipient: str, payload_length: int) -> bytes:
    """Headers plus ``payload_length`` bytes of payload, CRLF lines, ending "\\r\\n.\\r\\n"."""
    headers = [
        f"From: <{sender}>",
        f"To: <{recipient}>",
        f"Date: {email.utils.formatdate(localtime=False)}",
        f"Message-Id: <{uuid.uuid4().hex}@client.bench-sender.test>",
        "Subject: postgate bench",
        "",
    ]
    lines = []
    remaining = payload_length
    while remaining > 0:
        take = min(LINE_LENGTH, remaining)
        lines.append("X" * take)
        remaining -= take + 2
    return ("\r\n".join(headers + lines) + "\r\n.\r\n").encode("ascii")


class SmtpConnection:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout

    @classmethod
    async def open(cls, host: str, port: int, *, timeout: float = 30.0) -> SmtpConnection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=1 << 20), timeout
        )
        return cls(reader, writer, timeout)

    async def read_reply(self) -> tuple[int, list[str]]:
        lines: list[str] = []
        for _ in range(100):  # a reply of more lines than this is not one we sent for
            raw = await asyncio.wait_for(self.reader.readline(), self.timeout)
            if not raw:
                raise SmtpReplyError("connection closed by the server")
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                try:
                    return int(text[:3]), lines
                except ValueError:
                    raise SmtpReplyError(f"not an SMTP reply: {text!r}") from None
        raise SmtpReplyError("reply of more than 100 lines")

    async def expect(self, wanted: int, what: str) -> list[str]:
        code, lines = await self.read_reply()
        if code // 100 != wanted // 100:
            raise SmtpReplyError(f"{what}: {' | '.join(lines)}")
        return lines

    async def command(self, line: str, wanted: int) -> list[str]:
        self.writer.write(line.encode("utf-8") + b"\r\n")
        return await self.expect(wanted, line.split(" ", 1)[0])

    async def greeting(self) -> list[str]:
        return await self.expect(220, "banner")

    async def ehlo(self, name: str) -> list[str]:
        return await self.command(f"EHLO {name}", 250)

    async def starttls(self, context: ssl.SSLContext) -> None:
        await self.command("STARTTLS", 220)
        await asyncio.wait_for(
            self.writer.start_tls(context, server_hostname="localhost"), self.timeout
        )

    def tls_version(self) -> str | None:
        ssl_object = self.writer.get_extra_info("ssl_object")
        return ssl_object.version() if isinstance(ssl_object, ssl.SSLObject) else None

    async def auth_plain(self, username: str, password: str) -> None:
        token = base64.b64encode(f"\0{username}\0{password}".encode()).decode("ascii")
        await self.command(f"AUTH PLAIN {token}", 235)

    async def send_message(self, sender: str, recipients: list[str], body: bytes) -> None:
        await self.command(f"MAIL FROM:<{sender}>", 250)
        for recipient in recipients:
            await self.command(f"RCPT TO:<{recipient}>", 250)
        await self.command("DATA", 354)
        self.writer.write(body)
        await self.expect(250, "end of data")

    async def quit(self) -> None:
        with contextlib.suppress(Exception):
            await self.command("QUIT", 221)
        await self.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 5.0)

    def abort(self) -> None:
        """Drop the connection at once (used for thousands of idle ones)."""
        transport = self.writer.transport
        transport.abort()
