"""A small driver for the sans-I/O SMTP machine: feed bytes, answer like a server would."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from postgate.smtp import (
    NEED_DATA,
    AuthLine,
    AuthRequested,
    ConnectionClosed,
    ConnectionMustClose,
    DataRequested,
    Event,
    Hello,
    HelpRequested,
    MailFrom,
    MessageReceived,
    Noop,
    Quit,
    RcptTo,
    Reply,
    Reset,
    ServerConnection,
    SmtpLimits,
    StartTlsRequested,
    Verify,
    build_ehlo_reply,
)

EHLO_REPLY = build_ehlo_reply(
    "mx.example.test", "ESMTP postgate", max_size=1000, starttls=True, auth_mechanisms=["PLAIN"]
)
HELO_REPLY = Reply(250, "", "mx.example.test")

DEFAULT_ANSWERS: Mapping[type[Event], Reply] = {
    MailFrom: Reply(250, "2.1.0", "Ok"),
    RcptTo: Reply(250, "2.1.5", "Ok"),
    DataRequested: Reply(354, "", "End data with <CR><LF>.<CR><LF>"),
    MessageReceived: Reply(250, "2.0.0", "Ok: queued as Q1"),
    Reset: Reply(250, "2.0.0", "Ok"),
    Noop: Reply(250, "2.0.0", "Ok"),
    Quit: Reply(221, "2.0.0", "Bye"),
    Verify: Reply(252, "2.0.0", "Cannot VRFY user"),
    HelpRequested: Reply(214, "2.0.0", "See RFC 5321"),
    StartTlsRequested: Reply(220, "2.0.0", "Ready to start TLS"),
    AuthRequested: Reply(334, "", ""),
    AuthLine: Reply(235, "2.7.0", "Authentication successful"),
}

Answer = Reply | Callable[[Event], Reply]


class Driver:
    """Feeds a ServerConnection and answers every command event.

    ``answers`` overrides the default reply per event type (a Reply, or a function of
    the event). Every event seen is kept in ``events``; ``output()`` returns the bytes
    queued since the last call.
    """

    def __init__(
        self,
        limits: SmtpLimits | None = None,
        *,
        require_tls_for_auth: bool = False,
        require_auth_for_mail: bool = False,
        tls_active: bool = False,
        answers: Mapping[type[Event], Answer] | None = None,
    ) -> None:
        self.conn = ServerConnection(
            limits or SmtpLimits(),
            require_tls_for_auth=require_tls_for_auth,
            require_auth_for_mail=require_auth_for_mail,
            tls_active=tls_active,
        )
        self.answers: dict[type[Event], Answer] = dict(DEFAULT_ANSWERS)
        self.answers.update(answers or {})
        self.events: list[Event] = []

    def answer_for(self, event: Event) -> Reply:
        if isinstance(event, Hello):
            return EHLO_REPLY if event.extended else HELO_REPLY
        answer = self.answers[type(event)]
        return answer if isinstance(answer, Reply) else answer(event)

    def pump(self) -> list[Event]:
        """Read events until NEED_DATA or the end of the session, answering each."""
        new: list[Event] = []
        for _ in range(100_000):  # bound: no test produces this many events
            event = self.conn.next_event()
            if event is NEED_DATA:
                break
            assert isinstance(event, Event)
            new.append(event)
            if self.conn.awaiting_reply:
                self.conn.respond(self.answer_for(event))
            if isinstance(event, ConnectionClosed | ConnectionMustClose):
                break
        else:
            raise AssertionError("event loop did not settle")
        self.events.extend(new)
        return new

    def send(self, data: bytes, chunk: int | None = None) -> list[Event]:
        """Feed ``data`` (in pieces of ``chunk`` octets, pumping after each) and pump."""
        new: list[Event] = []
        step = chunk or max(len(data), 1)
        for start in range(0, len(data), step):
            self.conn.receive_data(data[start : start + step])
            new += self.pump()
        return new

    def output(self) -> bytes:
        return self.conn.take_output()

    def of_type(self, kind: type[Event]) -> list[Event]:
        return [event for event in self.events if isinstance(event, kind)]


def greeted(**options: object) -> Driver:
    """A driver after an accepted EHLO, output drained."""
    driver = Driver(**options)  # type: ignore[arg-type]
    driver.send(b"EHLO client.example\r\n")
    driver.output()
    return driver


def in_transaction(**options: object) -> Driver:
    """A driver after EHLO, MAIL and one RCPT were accepted, output drained."""
    driver = greeted(**options)
    driver.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.test>\r\n")
    driver.output()
    return driver
