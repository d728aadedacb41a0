"""delivery.smtp_client — one outbound SMTP connection, spoken explicitly.

SYNOPSIS
    client = await SmtpClient.connect(host, port, local_hostname="mx.ours.test", timeout=60)
    if "STARTTLS" in client.extensions:
        await client.starttls(context, server_hostname="mx.example.org")
    result = await client.send_transaction(sender, [(rcpt, "NOTIFY=FAILURE")], message)
    for reply in result.recipient_outcomes(): ...
    await client.rset(); ...; await client.quit()

DESCRIPTION
    The client side of RFC 5321 over an asyncio Protocol of its own (not streams: the
    STARTTLS switch must see, and refuse, any byte the server sent after its 220, RFC
    3207 6 / CVE-2011-0411 in reverse). No routing and no retries: one connection,
    typed replies, and an SmtpClientError for every way a command can fail.

    Transactions use PIPELINING (RFC 2920) when offered: MAIL, every RCPT and DATA go
    out in one write, the replies are read in order. BDAT (RFC 3030) is used when
    CHUNKING is offered and the message is BINARYMIME or at least
    ``chunking_threshold`` bytes; otherwise DATA. The message is sent with CRLF line
    ends only (bare LF and bare CR become CRLF, so nothing we send can be read as a
    different end of data by a lenient receiver: "SMTP smuggling") and, for DATA,
    dot-stuffed (RFC 5321 4.5.2). Both are a few bytes.replace passes, done in C.

    Parameters sent on MAIL FROM: SIZE (RFC 1870) when offered, and a message over
    the announced limit fails with 552 5.3.4 before it is sent; BODY=8BITMIME or
    BINARYMIME; SMTPUTF8 (RFC 6531) when the envelope or the headers need it;
    RET and ENVID (RFC 3461) when DSN is offered. RCPT parameters come from the
    caller, who sees ``extensions`` first.

    SMTPUTF8 needed but not offered: 553 5.6.7 before anything is sent (RFC 6531 3.4:
    no downgrade exists, refuse rather than corrupt). 8-bit body but no 8BITMIME:
    sent as it is, and ``TransactionResult.unannounced_8bit`` says so for the log.
    RFC 6152 3 says a client MUST NOT, and offers conversion to 7 bit or a bounce;
    conversion breaks DKIM signatures and a bounce loses mail that every current
    server accepts, so we do what Postfix does with non-MIME 8-bit mail. BINARYMIME
    without BINARYMIME+CHUNKING cannot be sent at all: 554 5.6.3.

DIAGNOSTICS
    SmtpClientError(reply, temporary): a negative reply to a command that ends the
    connection's usefulness (greeting, STARTTLS, AUTH), a malformed reply, a
    timeout, or a lost connection (reply None, temporary True). Per-recipient and
    final replies of a transaction are returned, not raised.

SEE ALSO
    delivery.remote, RFC 5321, RFC 2920, RFC 3030, RFC 3207, RFC 4954, RFC 6531
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from postgate.delivery.smtp_wire import (
    SmtpClientError,
    SmtpReply,
    SmtpWire,
    dot_stuff,
    prepare_for_bdat,
    xtext,
)
from postgate.queue.model import BodyType, DsnRet

__all__ = ["SmtpClient", "SmtpClientError", "SmtpReply", "TransactionResult", "xtext"]

BDAT_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class TransactionResult:
    """What one transaction got. ``final_reply`` is None when nothing was accepted."""

    mail_reply: SmtpReply
    recipient_replies: tuple[SmtpReply, ...]
    final_reply: SmtpReply | None
    used_bdat: bool = False
    pipelined: bool = False
    unannounced_8bit: bool = False  # 8-bit body sent to a peer without 8BITMIME

    @classmethod
    def refused(cls, reply: SmtpReply, recipient_count: int) -> TransactionResult:
        """A transaction refused by us before sending (SIZE, SMTPUTF8, BINARYMIME)."""
        return cls(mail_reply=reply, recipient_replies=(reply,) * recipient_count, final_reply=None)

    def recipient_outcomes(self) -> list[SmtpReply]:
        """The reply that decides each recipient's fate, in the order given.

        MAIL refused: the MAIL reply for all. RCPT refused: that reply. Otherwise the
        reply to the end of data (one for all recipients: this is SMTP, not LMTP).
        """
        if not self.mail_reply.is_positive or self.final_reply is None:
            if not self.mail_reply.is_positive:
                return [self.mail_reply] * len(self.recipient_replies)
            return list(self.recipient_replies)
        return [
            reply if not reply.is_positive else self.final_reply for reply in self.recipient_replies
        ]


def needs_smtputf8(
    sender: str, recipients: Sequence[str], normalized: bytes, requested: bool
) -> bool:
    """RFC 6531 3.4: a non-ASCII address always needs SMTPUTF8; a requested SMTPUTF8
    with ASCII addresses is needed only when the header section is not ASCII."""
    if not (sender.isascii() and all(address.isascii() for address in recipients)):
        return True
    if not requested:
        return False
    end = normalized.find(b"\r\n\r\n")
    header = normalized if end < 0 else normalized[:end]
    return not header.isascii()


class SmtpClient:
    """One connection to one SMTP server. Create with ``await SmtpClient.connect(...)``."""

    def __init__(self, wire: SmtpWire, *, local_hostname: str, chunking_threshold: int) -> None:
        self._wire = wire
        self.local_hostname = local_hostname
        self.chunking_threshold = chunking_threshold
        self.greeting = SmtpReply(0, ("",))
        self.extensions: Mapping[str, str] = {}
        self.esmtp = False
        # A MAIL was accepted and the transaction has not ended: the next one needs RSET
        # first (RFC 5321 4.1.1.5); after a final reply to the data it does not (4.1.1.4).
        self._transaction_open = False

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        local_hostname: str,
        timeout: float,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        server_hostname: str | None = None,
        chunking_threshold: int = 64 * 1024,
        trace: Callable[[str, str], None] | None = None,
    ) -> SmtpClient:
        """Connect, read the greeting, EHLO (HELO if EHLO gets a 5xx).

        A greeting other than 220 raises SmtpClientError (temporary for 4xx and for
        anything malformed) after a polite QUIT; RFC 5321 3.1 and 5.1 leave the
        choice of the next host to the caller.
        """
        if implicit_tls and tls_context is None:
            raise ValueError("implicit_tls needs a tls_context")
        wire = await SmtpWire.open(
            host,
            port,
            timeout=timeout,
            tls_context=tls_context if implicit_tls else None,
            server_hostname=server_hostname or (host if implicit_tls else None),
        )
        client = cls(wire, local_hostname=local_hostname, chunking_threshold=chunking_threshold)
        wire.trace = trace
        try:
            client.greeting = await wire.read_reply()
            if client.greeting.code != 220:
                await client.quit()
                raise SmtpClientError(
                    f"greeting refused: {client.greeting}",
                    reply=client.greeting,
                    temporary=client.greeting.code // 100 != 5,
                )
            await client.ehlo()
        except BaseException:
            wire.close()
            raise
        return client

    # -- state --------------------------------------------------------------------------

    @property
    def is_usable(self) -> bool:
        """True while the connection can carry another transaction."""
        return self._wire.is_usable

    @property
    def in_transaction(self) -> bool:
        """True when a MAIL was accepted and its transaction not ended (RSET first)."""
        return self._transaction_open

    @property
    def tls_version(self) -> str:
        """ "TLSv1.3" and the like once TLS is on, else ""."""
        return self._wire.tls_version

    @property
    def peer_address(self) -> str:
        return self._wire.peer_address

    def set_trace(self, trace: Callable[[str, str], None] | None) -> None:
        """Report every line sent ("->") and received ("<-"), e.g. to print a dialogue."""
        self._wire.trace = trace

    def set_timeout(self, seconds: float) -> None:
        """The limit for each later reply (RFC 5321 4.5.3.2 suggests minutes)."""
        self._wire.timeout = seconds

    # -- commands -----------------------------------------------------------------------

    async def command(self, line: str) -> SmtpReply:
        """Send one command line and read its reply (no interpretation)."""
        self._wire.write(line.encode("utf-8") + b"\r\n")
        return await self._wire.read_reply()

    async def ehlo(self) -> SmtpReply:
        """EHLO, falling back to HELO on 5xx (RFC 5321 3.2); sets ``extensions``."""
        reply = await self.command(f"EHLO {self.local_hostname}")
        if reply.code == 250:
            self.esmtp = True
            self.extensions = _parse_extensions(reply.lines[1:])
            return reply
        if reply.code // 100 == 5:
            reply = await self.command(f"HELO {self.local_hostname}")
            if reply.code == 250:
                self.esmtp = False
                self.extensions = {}
                return reply
        raise SmtpClientError(
            f"EHLO/HELO refused: {reply}", reply=reply, temporary=reply.code // 100 != 5
        )

    async def starttls(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        """STARTTLS, handshake, EHLO again (RFC 3207 4.2: forget what was said before).

        ``server_hostname`` is sent as SNI and, when ``context`` verifies, checked
        against the certificate. A failed handshake raises SmtpClientError (temporary)
        and leaves the connection unusable.
        """
        if "STARTTLS" not in self.extensions:
            raise SmtpClientError("STARTTLS not offered", reply=None, temporary=True)
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            raise SmtpClientError(
                f"STARTTLS refused: {reply}", reply=reply, temporary=reply.code // 100 != 5
            )
        await self._wire.start_tls(context, server_hostname)
        self.extensions = {}
        await self.ehlo()

    async def auth(self, mechanism: str, username: str, password: str) -> SmtpReply:
        """AUTH PLAIN or LOGIN (RFC 4954, RFC 4616). Raises unless the reply is 235."""
        mechanism = mechanism.upper()
        offered = self.extensions.get("AUTH", "").upper().split()
        if mechanism not in offered:
            raise SmtpClientError(
                f"AUTH {mechanism} not offered (offered: {' '.join(offered) or 'none'})",
                reply=None,
                temporary=False,
            )
        if mechanism == "PLAIN":
            token = _b64(b"\0" + username.encode() + b"\0" + password.encode())
            reply = await self.command(f"AUTH PLAIN {token}")
        elif mechanism == "LOGIN":
            reply = await self.command("AUTH LOGIN")
            for secret in (username, password):
                if reply.code != 334:
                    break
                reply = await self.command(_b64(secret.encode()))
        else:
            raise ValueError(f"unsupported AUTH mechanism {mechanism}")
        if reply.code != 235:
            raise SmtpClientError(
                f"AUTH {mechanism} failed: {reply}",
                reply=reply,
                temporary=reply.code // 100 != 5,
            )
        return reply

    async def rset(self) -> SmtpReply:
        reply = await self.command("RSET")
        if reply.code != 250:
            self._wire.mark_unusable()
        else:
            self._transaction_open = False
        return reply

    async def quit(self) -> None:
        """QUIT and close; never raises (the server may already be gone)."""
        try:
            if self._wire.is_usable:
                await asyncio.wait_for(self.command("QUIT"), timeout=5)
        except (SmtpClientError, TimeoutError, OSError):
            pass
        finally:
            self._wire.close()

    def close(self) -> None:
        """Drop the connection without QUIT."""
        self._wire.close()

    # -- the transaction ------------------------------------------------------------------

    async def send_transaction(
        self,
        sender: str,
        recipients: Sequence[tuple[str, str]],
        message: bytes,
        *,
        body_type: BodyType | None = None,
        smtputf8: bool = False,
        dsn_ret: DsnRet | None = None,
        envid: str | None = None,
    ) -> TransactionResult:
        """One mail transaction: MAIL, RCPT per ``(address, rcpt-params)``, DATA/BDAT.

        Returns the reply to MAIL, one reply per recipient (same order) and the final
        reply (None when no recipient was accepted). Refusals decided here (SIZE,
        SMTPUTF8, BINARYMIME) are returned as a synthetic MAIL reply with code 5xx,
        without sending anything. A lost connection or timeout raises.
        """
        if not recipients:
            raise ValueError("a transaction needs at least one recipient")
        binary = body_type is BodyType.BINARY_MIME
        eight_bit = binary or body_type is BodyType.EIGHT_BIT_MIME or not message.isascii()
        use_bdat = "CHUNKING" in self.extensions and (
            binary or len(message) >= self.chunking_threshold
        )
        # RFC 1870 3: SIZE counts the CRLF-normalised octets, not the stuffed dots.
        normalized = prepare_for_bdat(message, binary=binary)
        wire_message = normalized if use_bdat else dot_stuff(normalized)

        refusal = self._refusal(sender, recipients, normalized, binary, smtputf8)
        if refusal is not None:
            return TransactionResult.refused(refusal, len(recipients))

        params = self._mail_params(len(normalized), eight_bit, binary, sender, recipients)
        params += self._dsn_params(dsn_ret, envid)
        mail_line = f"MAIL FROM:<{sender}>{params}"
        rcpt_lines = [
            f"RCPT TO:<{address}>{' ' + extra if extra else ''}" for address, extra in recipients
        ]
        pipelined = "PIPELINING" in self.extensions
        self._transaction_open = True  # until a reply below says it ended
        if pipelined:
            # RFC 2920 3.1: MAIL, RCPT and DATA may share one write; the replies come in
            # order. DATA is last in the group; BDAT waits for the RCPT replies so no
            # message byte is sent when every recipient was refused.
            group = [mail_line, *rcpt_lines] + ([] if use_bdat else ["DATA"])
            self._wire.write(b"".join(line.encode("utf-8") + b"\r\n" for line in group))
            mail_reply = await self._wire.read_reply()
            rcpt_replies = [await self._wire.read_reply() for _ in rcpt_lines]
            data_go = None if use_bdat else await self._wire.read_reply()
        else:
            mail_reply = await self.command(mail_line)
            rcpt_replies = []
            if mail_reply.code == 250:
                rcpt_replies = [await self.command(line) for line in rcpt_lines]
            data_go = None

        if mail_reply.code == 421:
            # RFC 5321 3.8: the server is closing the channel; whatever else it said is
            # moot. Raised, so that a reused session is replaced by a new one.
            self._wire.mark_unusable()
            raise SmtpClientError(
                f"closing at MAIL: {mail_reply}", reply=mail_reply, temporary=True
            )
        accepted = mail_reply.code == 250 and any(r.code // 100 == 2 for r in rcpt_replies)
        if mail_reply.code != 250:
            self._transaction_open = False  # none was started
        if not accepted:
            if data_go is not None and data_go.code == 354:
                # RFC 2920 3.1: DATA was accepted though nothing else was; end it with
                # an empty message so the server's transaction is closed cleanly.
                self._wire.write(b".\r\n")
                await self._wire.read_reply()
                self._transaction_open = False
            return TransactionResult(
                mail_reply=mail_reply,
                recipient_replies=tuple(rcpt_replies) or (mail_reply,) * len(recipients),
                final_reply=None,
                used_bdat=use_bdat,
                pipelined=pipelined,
            )

        if use_bdat:
            final = await self._send_bdat(wire_message, pipelined)
            # RFC 3030 2: after a refused chunk the server wants RSET; after LAST, not.
            self._transaction_open = final.code // 100 != 2
        else:
            if data_go is None:
                data_go = await self.command("DATA")
            if data_go.code != 354:
                final = data_go
            else:
                self._wire.write(wire_message)
                await self._wire.drain()
                final = await self._wire.read_reply()
                # RFC 5321 4.1.1.4: the reply to the end of data, 2xx or not, ends it.
                self._transaction_open = False
        return TransactionResult(
            mail_reply=mail_reply,
            recipient_replies=tuple(rcpt_replies),
            final_reply=final,
            used_bdat=use_bdat,
            pipelined=pipelined,
            unannounced_8bit=eight_bit and not binary and "8BITMIME" not in self.extensions,
        )

    def _refusal(
        self,
        sender: str,
        recipients: Sequence[tuple[str, str]],
        normalized: bytes,
        binary: bool,
        smtputf8: bool,
    ) -> SmtpReply | None:
        limit = _size_limit(self.extensions)
        if limit and len(normalized) > limit:
            return SmtpReply(
                552, (f"5.3.4 message size {len(normalized)} exceeds the peer's limit {limit}",)
            )
        if (
            needs_smtputf8(sender, [a for a, _ in recipients], normalized, smtputf8)
            and "SMTPUTF8" not in self.extensions
        ):
            return SmtpReply(553, ("5.6.7 the peer does not support SMTPUTF8 (RFC 6531)",))
        if binary and not {"BINARYMIME", "CHUNKING"} <= self.extensions.keys():
            return SmtpReply(554, ("5.6.3 the peer does not support BINARYMIME (RFC 3030)",))
        return None

    def _mail_params(
        self,
        size: int,
        eight_bit: bool,
        binary: bool,
        sender: str,
        recipients: Sequence[tuple[str, str]],
    ) -> str:
        params = ""
        if "SIZE" in self.extensions:
            params += f" SIZE={size}"
        if binary:
            params += " BODY=BINARYMIME"
        elif eight_bit and "8BITMIME" in self.extensions:
            params += " BODY=8BITMIME"
        if "SMTPUTF8" in self.extensions and not (
            sender.isascii() and all(address.isascii() for address, _ in recipients)
        ):
            params += " SMTPUTF8"
        return params

    def _dsn_params(self, dsn_ret: DsnRet | None, envid: str | None) -> str:
        if "DSN" not in self.extensions:
            return ""
        params = f" RET={dsn_ret.value}" if dsn_ret is not None else ""
        return params + (f" ENVID={xtext(envid)}" if envid else "")

    async def _send_bdat(self, payload: bytes, pipelined: bool) -> SmtpReply:
        # RFC 3030 2: BDAT <size> [LAST], then exactly <size> octets; no dot-stuffing.
        # With PIPELINING every chunk goes out at once and the replies are read after.
        view = memoryview(payload)
        chunks = [view[i : i + BDAT_CHUNK] for i in range(0, len(payload), BDAT_CHUNK)] or [
            view[0:0]
        ]
        replies: list[SmtpReply] = []
        for index, chunk in enumerate(chunks):
            last = " LAST" if index == len(chunks) - 1 else ""
            self._wire.write(f"BDAT {len(chunk)}{last}\r\n".encode() + chunk)
            if not pipelined:
                await self._wire.drain()
                reply = await self._wire.read_reply()
                if reply.code != 250:
                    return reply
        if pipelined:
            await self._wire.drain()
            replies = [await self._wire.read_reply() for _ in chunks]
            for reply in replies:
                if reply.code != 250:
                    return reply
            return replies[-1]
        return reply


def _parse_extensions(lines: Sequence[str]) -> dict[str, str]:
    extensions: dict[str, str] = {}
    for line in lines:
        keyword, _, params = line.strip().partition(" ")
        if keyword:
            extensions[keyword.upper()] = params.strip()
    return extensions


def _size_limit(extensions: Mapping[str, str]) -> int:
    value = extensions.get("SIZE", "")
    return int(value) if value.isdigit() else 0


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
