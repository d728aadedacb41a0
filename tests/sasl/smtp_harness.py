"""AuthExchange wired to the sans-I/O SMTP machine, the way server/session.py will be.

``AuthHarness.feed(bytes) -> bytes`` runs the pure ServerConnection and answers AUTH
through an AuthExchange; everything else gets a plain 250/354/221. ``serve_harness``
puts it behind a real loopback socket so real clients (aiosmtplib) can talk to it.
The ``_on_auth``/``_on_auth_line`` pair is the reference for the lead's session code.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from postgate.auth_exchange import AuthExchange, Failed, Outcome, SendChallenge, Succeeded
from postgate.smtp import (
    NEED_DATA,
    AuthLine,
    AuthRequested,
    CommandRejected,
    ConnectionClosed,
    ConnectionMustClose,
    DataRequested,
    Event,
    Hello,
    MessageReceived,
    Quit,
    Reply,
    ServerConnection,
    SmtpLimits,
    build_ehlo_reply,
)

ExchangeFactory = Callable[[str], AuthExchange]


class AuthHarness:
    def __init__(
        self,
        make_exchange: ExchangeFactory,
        mechanisms: tuple[str, ...],
        *,
        require_tls_for_auth: bool = False,
    ) -> None:
        self.conn = ServerConnection(
            SmtpLimits(), require_tls_for_auth=require_tls_for_auth, require_auth_for_mail=False
        )
        self._make_exchange = make_exchange
        self._mechanisms = mechanisms
        self._exchange: AuthExchange | None = None
        self.outcomes: list[Succeeded | Failed] = []
        self.closed = False

    async def feed(self, data: bytes) -> bytes:
        self.conn.receive_data(data)
        # Bounded by the input: each event consumes bytes, and after QUIT or a close the
        # machine only repeats ConnectionClosed, which ends the loop.
        while not self.closed:
            event = self.conn.next_event()
            if event is NEED_DATA:
                break
            assert isinstance(event, Event)
            await self._answer(event)
        return self.conn.take_output()

    async def _answer(self, event: Event) -> None:
        match event:
            case Hello(extended=True):
                self.conn.respond(
                    build_ehlo_reply(
                        "mx.example.test",
                        "hello",
                        max_size=1_000_000,
                        starttls=False,
                        auth_mechanisms=self._mechanisms,
                    )
                )
            case AuthRequested():
                await self._on_auth(event)
            case AuthLine():
                await self._on_auth_line(event)
            case DataRequested():
                self.conn.respond(Reply(354, "", "go ahead"))
            case Quit():
                self.conn.respond(Reply(221, "2.0.0", "Bye"))
                self.closed = True
            case CommandRejected():
                pass  # the machine answered already
            case ConnectionClosed() | ConnectionMustClose():
                self.closed = True
            case MessageReceived():
                self.conn.respond(Reply(250, "2.0.0", "Ok: queued as TEST"))
            case _:
                self.conn.respond(Reply(250, "2.0.0", "Ok"))

    async def _on_auth(self, event: AuthRequested) -> None:
        self._exchange = self._make_exchange(event.mechanism)
        self._reply(await self._exchange.start(event.initial_response))

    async def _on_auth_line(self, event: AuthLine) -> None:
        assert self._exchange is not None
        self._reply(await self._exchange.respond(event.text))

    def _reply(self, outcome: Outcome) -> None:
        if isinstance(outcome, SendChallenge):
            self.conn.respond(Reply(334, "", base64.b64encode(outcome.data).decode("ascii")))
            return
        self._exchange = None
        self.outcomes.append(outcome)
        if isinstance(outcome, Succeeded):
            self.conn.authenticated(outcome.user)
            self.conn.respond(Reply(235, "2.7.0", "Authentication successful"))
        else:
            self.conn.respond(Reply(outcome.code, outcome.enhanced, outcome.text))


@asynccontextmanager
async def serve_harness(
    make_harness: Callable[[], AuthHarness],
) -> AsyncIterator[tuple[int, list[AuthHarness]]]:
    """A loopback SMTP server, one harness per connection; yields (port, harnesses)."""
    harnesses: list[AuthHarness] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        harness = make_harness()
        harnesses.append(harness)
        try:
            writer.write(b"220 mx.example.test ESMTP test\r\n")
            while not harness.closed:
                data = await reader.read(65536)
                writer.write(await harness.feed(data))
                await writer.drain()
                if not data:
                    break
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], harnesses
    finally:
        server.close()
        await server.wait_closed()
