"""server.session — one SMTP connection: socket ⇄ smtp state machine ⇄ policy ⇄ queue.

SYNOPSIS
    protocol = SmtpSessionProtocol(services, listener)    # an asyncio.Protocol

DESCRIPTION
    The glue and nothing else: bytes from the socket go into ``smtp.ServerConnection``;
    each event it yields is answered here, after asking routing/policy/the user store,
    and the replies go back out in one write per pipelined group (RFC 2920). The
    protocol rules themselves (sequencing, framing, limits) live in ``smtp/``.

    Every rejection is logged with its reason, every accepted message with its queue
    id. The reply 250 to the end of the message is sent only after the store said the
    message is committed and synced (invariant 1).

SECURITY
    STARTTLS (RFC 3207 4.2): everything the client pipelined after the STARTTLS line is
    discarded, and the session starts over after the handshake. Implicit TLS (RFC 8314)
    handshakes before the banner. The banner carries no version.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, cast

import structlog

from postgate.accept.pipeline import Arrival
from postgate.auth_exchange import AuthExchange, SendChallenge, Succeeded
from postgate.config import ListenerConfig, ListenerRole
from postgate.policy.sender import sender_rejected_verdict
from postgate.policy.verdict import Action, Verdict
from postgate.queue.model import Envelope, EnvelopeRecipient
from postgate.queue.store import QueueError
from postgate.routing import RecipientCheck, RoutingError
from postgate.server.services import Services
from postgate.smtp import NEED_DATA, ServerConnection, SmtpLimits
from postgate.smtp import events as ev
from postgate.smtp.replies import Reply, build_ehlo_reply
from postgate.smtp.state import SmtpState

log = structlog.get_logger("postgate.smtpd")

# Unprocessed input beyond this stops reading from the socket until we catch up, so a
# client that pipelines faster than we answer cannot grow our memory without bound.
_MAX_UNPROCESSED = 1 << 20


@dataclass
class _Transaction:
    """What the current mail transaction collected (RFC 5321 3.3)."""

    mail: ev.MailFrom | None = None
    recipients: list[tuple[ev.RcptTo, tuple[str, ...]]] = field(default_factory=list)


class SmtpSessionProtocol(asyncio.Protocol):
    def __init__(self, services: Services, listener: ListenerConfig) -> None:
        self.services = services
        self.listener = listener
        self.config = services.config  # fixed for the life of the session (invariant 7)
        self.transport: asyncio.Transport | None = None
        self.peer_address = ""
        self.peer_port = 0
        self.helo = ""
        self.extended = False
        self.tls_version: str | None = None
        self.tls_cipher: str | None = None
        self.user: str | None = None
        self.txn = _Transaction()
        # Waiting for input: one future per wait, woken by data_received, and one
        # long-lived timer per session that enforces the idle timeout (see _idle_check).
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._paused = False
        self._unprocessed = 0
        self._task: asyncio.Task[None] | None = None
        limits = self.config.limits
        self.conn = ServerConnection(
            SmtpLimits(
                max_message_size=limits.max_message_size,
                max_recipients=limits.max_recipients,
                max_bad_commands=limits.max_bad_commands,
            ),
            require_tls_for_auth=True,
            require_auth_for_mail=listener.role is not ListenerRole.MX,
            # RFC 8314 3: on the implicit-TLS port the session is encrypted from the start.
            tls_active=listener.role is ListenerRole.SUBMISSIONS,
        )

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer_address, self.peer_port = str(peer[0]), int(peer[1])
        self._task = asyncio.get_running_loop().create_task(self._run())
        self.services.track(self._task)

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self._unprocessed += len(data)
        if self._unprocessed > _MAX_UNPROCESSED and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self.conn.receive_data(b"")
        self._wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the session ------------------------------------------------------------------

    def _log(self, event: str, **fields: Any) -> None:
        log.info(event, listener=self.listener.name, client=self.peer_address, **fields)

    async def _run(self) -> None:
        refusal = self.services.connection_opened(self.peer_address)
        try:
            if refusal is not None:
                self._send_now(Reply(421, "4.7.0", refusal))
                self._log("rejected", stage="connect", reply="421 4.7.0", reason=refusal)
                return
            self._note_tls(self.transport)
            self._send_now(Reply(220, "", f"{self.config.hostname} ESMTP ready"))
            self._log("connect", tls=self.tls_version)
            await self._serve_commands()
        except Exception:
            log.exception("session crashed", listener=self.listener.name, client=self.peer_address)
            with contextlib.suppress(Exception):
                self._send_now(Reply(421, "4.3.0", "Local error, closing connection"))
        finally:
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            if refusal is None:
                self.services.connection_closed(self.peer_address)
            if self.transport is not None and not self.transport.is_closing():
                self.transport.close()

    def _send_now(self, reply: Reply) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply.to_bytes())

    def _flush(self) -> None:
        out = self.conn.take_output()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    async def _wait_for_input(self) -> bool:
        """Wait for more bytes; False on timeout or a closed connection."""
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        self._unprocessed = 0
        timeout = (
            self.config.limits.data_timeout
            if self.conn.state in (SmtpState.DATA, SmtpState.BDAT)
            else self.config.limits.command_timeout
        )
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + timeout
        # Not a timer per wait (a busy session waits four times per message): the one
        # timer is moved only when this deadline comes before it; when it fires early
        # (the session was busy since), _idle_check sets it again for the deadline.
        timer = self._idle_timer
        if timer is None or timer.when() > self._deadline:
            if timer is not None:
                timer.cancel()
            self._idle_timer = loop.call_at(self._deadline, self._idle_check)
        waiter = self._waiter = loop.create_future()
        try:
            await waiter
        except TimeoutError:
            self._send_now(Reply(421, "4.4.2", f"{self.config.hostname} Timeout, closing"))
            self._log("disconnect", reason="idle timeout", timeout=timeout)
            return False
        finally:
            self._waiter = None
        return not self._closed

    def _idle_check(self) -> None:
        self._idle_timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # busy, not waiting: the next wait sets the timer again
        loop = waiter.get_loop()
        if loop.time() >= self._deadline:
            waiter.set_exception(TimeoutError())
        else:
            self._idle_timer = loop.call_at(self._deadline, self._idle_check)

    async def _serve_commands(self) -> None:
        while not self._closed:
            event = self.conn.next_event()
            if event is NEED_DATA:
                self._flush()
                if self.conn.state is SmtpState.CLOSED or not await self._wait_for_input():
                    return
                continue
            keep_going = await self._answer(event)
            if not keep_going:
                self._flush()
                return

    async def _answer(self, event: object) -> bool:
        """Answer one event. False ends the session."""
        match event:
            case ev.Hello():
                self._on_hello(event)
            case ev.MailFrom():
                self._on_mail(event)
            case ev.RcptTo():
                self._on_rcpt(event)
            case ev.DataRequested():
                self.conn.respond(Reply(354, "", "End data with <CR><LF>.<CR><LF>"))
            case ev.MessageReceived():
                await self._on_message(event)
            case ev.StartTlsRequested():
                return await self._on_starttls()
            case ev.AuthRequested():
                await self._on_auth(event)
            case ev.Reset():
                self.txn = _Transaction()
                self.conn.respond(Reply(250, "2.0.0", "Ok"))
            case ev.Noop():
                self.conn.respond(Reply(250, "2.0.0", "Ok"))
            case ev.Verify():
                # RFC 5321 3.5.3: 252 neither confirms nor denies; address harvesting gets nothing.
                self.conn.respond(Reply(252, "2.5.0", "Cannot VRFY user, but will accept message"))
            case ev.HelpRequested():
                self.conn.respond(Reply(214, "2.0.0", "See RFC 5321"))
            case ev.Quit():
                self.conn.respond(Reply(221, "2.0.0", "Bye"))
                self._log("disconnect", reason="quit")
                return False
            case ev.CommandRejected():
                self._log(
                    "rejected",
                    stage=event.command or "command",
                    reply=f"{event.reply.code} {event.reply.enhanced}".strip(),
                    reason=event.reason,
                )
            case ev.ConnectionClosed():
                return False
            case ev.ConnectionMustClose():
                self._log(
                    "disconnect",
                    reply=f"{event.reply.code} {event.reply.enhanced}".strip(),
                    reason=event.reason,
                )
                return False
            case _:
                raise AssertionError(f"unexpected SMTP event {event!r}")
        return True

    # -- stages -----------------------------------------------------------------------

    def _on_hello(self, event: ev.Hello) -> None:
        self.helo = event.hostname
        self.extended = event.extended
        self.txn = _Transaction()  # RFC 5321 4.1.4: HELO/EHLO resets the transaction
        greeting = f"Hello {event.hostname} [{self.peer_address}]"
        if not event.extended:
            self.conn.respond(Reply(250, "", greeting))
            return
        tls_active = self.conn.tls_active
        self.conn.respond(
            build_ehlo_reply(
                self.config.hostname,
                greeting,
                max_size=self.config.limits.max_message_size,
                starttls=not tls_active and self.services.tls is not None,
                # RFC 4954 4 / RFC 8314: no AUTH over plaintext, on any listener.
                auth_mechanisms=self.config.auth.mechanisms if tls_active and not self.user else (),
            )
        )

    def _on_mail(self, event: ev.MailFrom) -> None:
        policy = self.services.sender_policy
        if (
            self.user is not None
            and policy is not None
            and not policy.envelope_sender_allowed(self.user, event.address)
        ):
            self.txn = _Transaction()
            self._reply_verdict(
                sender_rejected_verdict(self.user),
                stage="mail",
                sender=event.address,
                user=self.user,
            )
            return
        self.txn = _Transaction(mail=event)
        self.conn.respond(Reply(250, "2.1.0", "Ok"))

    def _reply_verdict(self, verdict: Verdict, *, stage: str, **fields: Any) -> None:
        """One reply and one log line for a refusing verdict (invariant 5)."""
        self.conn.respond(Reply(verdict.code, verdict.enhanced, verdict.text))
        self._log(
            "rejected",
            stage=stage,
            reply=f"{verdict.code} {verdict.enhanced}",
            reason=verdict.reason or verdict.text,
            **fields,
        )

    def _relay_allowed(self) -> bool:
        return self.user is not None or self._trusted_network()

    def _trusted_network(self) -> bool:
        try:
            ip = ipaddress.ip_address(self.peer_address)
        except ValueError:
            return False
        return any(ip in network for network in self.config.routing.trusted_networks)

    def _on_rcpt(self, event: ev.RcptTo) -> None:
        router = self.services.router
        check = router.check_recipient(event.address, relay_allowed=self._relay_allowed())
        if check is RecipientCheck.ACCEPT:
            try:
                targets = router.expand(event.address)
            except RoutingError as exc:
                # An alias table too deep or too wide is the operator's problem to fix;
                # the sender should try again later rather than get a bounce.
                self._reject_rcpt(
                    event,
                    Reply(451, "4.3.0", "Temporary lookup failure"),
                    f"alias expansion: {exc}",
                )
                return
            self.txn.recipients.append((event, targets))
            self.conn.respond(Reply(250, "2.1.5", "Ok"))
            return
        if check is RecipientCheck.UNKNOWN_USER:
            reply = Reply(
                550,
                "5.1.1",
                f"<{event.address}>: Recipient address rejected: "
                "User unknown in local recipient table",
            )
            reason = "unknown local recipient"
        elif check is RecipientCheck.RELAY_DENIED:
            # 554 as Postfix's relay_domains_reject_code default; the enhanced code
            # 5.7.1 (RFC 3463: delivery not authorized) is what clients key on.
            reply = Reply(554, "5.7.1", f"<{event.address}>: Relay access denied")
            reason = "relay denied: client neither authenticated nor in trusted_networks"
        else:
            reply = Reply(check.code, check.enhanced, f"<{event.address}>: {check.reason}")
            reason = check.reason
        self._reject_rcpt(event, reply, reason)

    def _reject_rcpt(self, event: ev.RcptTo, reply: Reply, reason: str) -> None:
        self.conn.respond(reply)
        self._log(
            "rejected",
            stage="rcpt",
            recipient=event.address,
            sender=self.txn.mail.address if self.txn.mail else None,
            reply=f"{reply.code} {reply.enhanced}",
            reason=reason,
        )

    def _envelope(self, now: float) -> Envelope:
        assert self.txn.mail is not None
        mail = self.txn.mail
        seen: set[str] = set()
        recipients: list[EnvelopeRecipient] = []
        for rcpt, targets in self.txn.recipients:
            for target in targets:
                key = target.lower()
                if key in seen:
                    continue  # one copy per final address, as Postfix's cleanup does
                seen.add(key)
                recipients.append(EnvelopeRecipient(target, rcpt.address, rcpt.notify, rcpt.orcpt))
        return Envelope(
            sender=mail.address,
            recipients=tuple(recipients),
            ret=mail.ret,
            envid=mail.envid,
            smtputf8=mail.smtputf8,
            body_type=mail.body,
            client_address=self.peer_address,
            client_helo=self.helo,
            authenticated_user=self.user,
            received_at=now,
        )

    async def _on_message(self, event: ev.MessageReceived) -> None:
        now = time.time()
        envelope = self._envelope(now)
        queue_id = self.services.queue_ids.new()
        trusted = self.user is None and self._trusted_network()
        arrival = Arrival(
            envelope=envelope,
            queue_id=queue_id,
            now=now,
            helo=self.helo,
            extended=self.extended,
            tls_active=self.conn.tls_active,
            tls_version=self.tls_version,
            tls_cipher=self.tls_cipher,
            user=self.user,
            trusted=trusted,
            inbound=self.listener.role is ListenerRole.MX and self.user is None and not trusted,
            single_recipient=(
                envelope.recipients[0].original if len(self.txn.recipients) == 1 else None
            ),
        )
        self.txn = _Transaction()
        prepared = await self.services.accept.prepare(event.message, arrival)
        if prepared.refusal is not None or prepared.message is None:
            verdict = prepared.refusal or Verdict.tempfail(451, "4.3.0", "Try again later")
            self._reply_verdict(verdict, stage="data", sender=envelope.sender, user=self.user)
            return
        message = prepared.message
        try:
            await self.services.store.enqueue(
                envelope, message, queue_id=queue_id, hold=self.config.queue.hold_incoming
            )
        except QueueError as exc:
            self._reply_verdict(
                Verdict.tempfail(
                    451, "4.3.0", "Temporary queue failure, try again later", f"queue: {exc}"
                ),
                stage="data",
                sender=envelope.sender,
            )
            return
        self.conn.respond(Reply(250, "2.0.0", f"Ok: queued as {queue_id}"))
        if not self.config.queue.hold_incoming:
            self.services.message_queued()  # held mail is not due: no need to look
        self._log(
            "accepted",
            queue_id=queue_id,
            sender=envelope.sender,
            recipients=[r.address for r in envelope.recipients],
            size=len(message),
            user=self.user,
            tls=self.tls_version,
            bdat=event.via_bdat,
            dkim_signed=prepared.signed_by,
            auth=prepared.auth_results,
            quarantine=prepared.quarantined or None,
        )

    async def _handshake(self) -> bool:
        """TLS handshake on the current transport; False if it failed (logged)."""
        assert self.services.tls is not None and self.transport is not None
        loop = asyncio.get_running_loop()
        try:
            new_transport = await loop.start_tls(
                self.transport,
                self,
                self.services.tls.current(),
                server_side=True,
                ssl_handshake_timeout=30.0,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            self._log("tls failed", reason=f"{type(exc).__name__}: {exc}")
            return False
        if new_transport is None or new_transport.is_closing():
            return False
        self.transport = new_transport
        self._note_tls(new_transport)
        return self.tls_version is not None

    def _note_tls(self, transport: asyncio.BaseTransport | None) -> None:
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is not None:
            self.tls_version = ssl_object.version()
            cipher = ssl_object.cipher()
            self.tls_cipher = cipher[0] if cipher else None

    async def _on_starttls(self) -> bool:
        if self.services.tls is None:
            self.conn.respond(Reply(454, "4.7.0", "TLS not available"))
            return True
        self.conn.respond(Reply(220, "2.0.0", "Ready to start TLS"))
        self._flush()
        if not await self._handshake():
            return False
        # RFC 3207 4.2: forget everything known from before the handshake, including
        # any plaintext the client pipelined after STARTTLS.
        self.conn.tls_started()
        self.helo = ""
        self.extended = False
        self.txn = _Transaction()
        self._log("starttls", tls=self.tls_version, cipher=self.tls_cipher)
        return True

    async def _on_auth(self, event: ev.AuthRequested) -> None:
        mechanism = event.mechanism.upper()
        lockout = self.services.lockout
        if lockout is not None:
            # A banned client is refused before it can even send a guess.
            verdict = await lockout.check(self.peer_address, None)
            if verdict.action is not Action.CONTINUE:
                self._reply_verdict(verdict, stage="auth", mechanism=mechanism)
                return
        exchange = AuthExchange(
            mechanism,
            users=self.services.users,
            tokens=self.services.tokens,
            hostname=self.config.hostname,
            allow_impersonation=self.config.auth.allow_impersonation,
            enabled=self.config.auth.mechanisms,
        )
        counted = False

        async def count_failure() -> None:
            # Once per exchange, as soon as the guess is known to be wrong: a client that
            # disconnects or cancels after a SCRAM invalid-proof must not escape it.
            nonlocal counted
            if counted or lockout is None:
                return
            counted = True
            penalty = await lockout.failed(self.peer_address, exchange.attempted_user or "")
            if penalty.delay > 0:
                await asyncio.sleep(penalty.delay)  # holds back only this session

        outcome = await exchange.start(event.initial_response)
        while isinstance(outcome, SendChallenge):
            if exchange.credentials_rejected:
                await count_failure()
            self.conn.respond(Reply(334, "", base64.b64encode(outcome.data).decode("ascii")))
            line = await self._next_auth_line()
            if line is None:
                if exchange.credentials_rejected:
                    self._log(
                        "rejected",
                        stage="auth",
                        reply="-",
                        mechanism=mechanism,
                        user=exchange.attempted_user,
                        reason="client left after its credentials were refused",
                    )
                return
            outcome = await exchange.respond(line)
        if isinstance(outcome, Succeeded):
            await self._auth_succeeded(outcome, mechanism)
            return
        if exchange.credentials_rejected:
            await count_failure()
        self.conn.respond(Reply(outcome.code, outcome.enhanced, outcome.text))
        self._log(
            "rejected",
            stage="auth",
            reply=f"{outcome.code} {outcome.enhanced}",
            reason=outcome.reason,
            user=outcome.user,
            mechanism=mechanism,
        )

    async def _auth_succeeded(self, outcome: Succeeded, mechanism: str) -> None:
        lockout = self.services.lockout
        if lockout is not None:
            # During a ban even the right password is refused (the ban would be
            # pointless if guessing right lifted it).
            verdict = await lockout.check(self.peer_address, outcome.authcid or outcome.user)
            if verdict.action is not Action.CONTINUE:
                self._reply_verdict(verdict, stage="auth", user=outcome.user, mechanism=mechanism)
                return
            await lockout.succeeded(self.peer_address, outcome.authcid or outcome.user)
        self.user = outcome.user
        self.conn.authenticated(outcome.user)
        self.conn.respond(Reply(235, "2.7.0", "Authentication successful"))
        self._log("authenticated", user=self.user, mechanism=mechanism, note=outcome.reason or None)

    async def _next_auth_line(self) -> str | None:
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                self._flush()
                if self.conn.state is SmtpState.CLOSED or not await self._wait_for_input():
                    return None
                continue
            if isinstance(event, ev.AuthLine):
                return event.text
            if isinstance(event, ev.ConnectionClosed | ev.ConnectionMustClose):
                return None
            # The machine rejected the line itself (too long, NUL...): it answered already.
            if isinstance(event, ev.CommandRejected):
                self._log(
                    "rejected", stage="auth", reply=f"{event.reply.code}", reason=event.reason
                )
                return None
            raise AssertionError(f"unexpected event during AUTH: {event!r}")
