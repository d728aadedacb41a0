"""DATA framing: dot-stuffing, the end-of-data rule, and SMTP smuggling."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from postgate.smtp import (
    CommandRejected,
    DataRequested,
    MailFrom,
    MessageReceived,
    Noop,
    RcptTo,
    Reply,
    SmtpLimits,
    SmtpState,
)
from postgate.smtp.readers import body_problem, has_line_longer_than
from tests.smtp.helpers import in_transaction

QUEUED = b"250 2.0.0 Ok: queued as Q1\r\n"
GO_AHEAD = b"354 End data with <CR><LF>.<CR><LF>\r\n"


def deliver(body: bytes, chunk: int | None = None, **options: object) -> tuple[list, bytes]:
    """DATA, then ``body`` (which must carry its own terminator); events and output."""
    driver = in_transaction(**options)
    driver.send(b"DATA\r\n")
    assert driver.output() == GO_AHEAD
    events = driver.send(body, chunk=chunk)
    return events, driver.output()


def stuff(body: bytes) -> bytes:
    """What a client sends for ``body`` (CRLF-terminated lines), RFC 5321 4.5.2."""
    stuffed = (b"\r\n" + body).replace(b"\r\n.", b"\r\n..")[2:]
    return stuffed + b".\r\n"


def test_immediate_dot_is_an_empty_message() -> None:
    events, output = deliver(b".\r\n")
    assert events == [MessageReceived(b"", via_bdat=False)]
    assert output == QUEUED


def test_dot_unstuffing() -> None:
    events, _ = deliver(b"..leading dot\r\n...two\r\nmid.dle\r\n.\r\n")
    assert events == [MessageReceived(b".leading dot\r\n..two\r\nmid.dle\r\n", via_bdat=False)]


def test_dot_stuffed_first_line_split_across_writes() -> None:
    events, _ = deliver(b"..x\r\n.\r\n", chunk=1)
    assert events == [MessageReceived(b".x\r\n", via_bdat=False)]


def test_commands_pipelined_after_the_final_dot_run_in_order() -> None:
    events, output = deliver(b"body\r\n.\r\nNOOP\r\nMAIL FROM:<x@y.example>\r\n")
    assert [type(e) for e in events] == [MessageReceived, Noop, MailFrom]
    assert output == QUEUED + b"250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n"


# Each of these, put in the middle of a body, is the SMTP smuggling attack: a server
# that ends DATA on it executes the rest as a second, forged transaction.
SMUGGLING = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r.\r",
    b"\r\n.\r",
    b"\r\n.\n",
    b"\n.\r",
    b"\r.\n",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
]
FORGED = (
    b"MAIL FROM:<ceo@bank.example>\r\n"
    b"RCPT TO:<victim@example.test>\r\n"
    b"DATA\r\n"
    b"From: ceo@bank.example\r\n\r\nWire the money.\r\n"
)


@pytest.mark.parametrize("sequence", SMUGGLING, ids=repr)
@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_smuggling_sequences_never_end_data(sequence: bytes, chunk: int | None) -> None:
    body = b"Subject: real\r\n\r\nreal text" + sequence + FORGED + b".\r\n"
    events, output = deliver(body, chunk=chunk)
    # Exactly one outcome for the one real message, and no forged command events.
    assert len(events) == 1
    assert isinstance(events[0], CommandRejected)
    assert events[0].reply.code == 554
    assert output.startswith(b"554 5.6.0 Message refused: ")
    assert b"lines must end with CRLF" in output or b"NUL" in output


@pytest.mark.parametrize("sequence", SMUGGLING, ids=repr)
def test_smuggling_sequence_then_pipelined_commands_after_the_real_end(sequence: bytes) -> None:
    driver = in_transaction()
    events = driver.send(b"DATA\r\nreal" + sequence + FORGED + b".\r\nNOOP\r\n")
    assert [type(e) for e in events] == [DataRequested, CommandRejected, Noop]
    assert len(driver.of_type(MailFrom)) == 1  # the real one, before DATA
    assert len(driver.of_type(DataRequested)) == 1
    assert not driver.of_type(MessageReceived)


def test_a_clean_body_with_a_forged_transaction_inside_is_just_text() -> None:
    # Without bare line endings the fake commands are ordinary lines of the message.
    events, _ = deliver(b"real\r\n" + FORGED + b".\r\n")
    assert events == [MessageReceived(b"real\r\n" + FORGED, via_bdat=False)]


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (
            b"a\nb\r\n.\r\n",
            b"554 5.6.0 Message refused: bare LF in message; lines must end with CRLF",
        ),
        (
            b"a\rb\r\n.\r\n",
            b"554 5.6.0 Message refused: bare CR in message; lines must end with CRLF",
        ),
        (b"a\x00b\r\n.\r\n", b"554 5.6.0 Message refused: NUL octet in message"),
        (
            b"x\r\r\n.\r\n",
            b"554 5.6.0 Message refused: bare CR in message; lines must end with CRLF",
        ),
    ],
)
def test_bad_content_is_refused_after_the_final_dot(body: bytes, text: bytes) -> None:
    driver = in_transaction()
    driver.send(b"DATA\r\n")
    driver.output()
    driver.send(body + b"NOOP\r\n")
    assert driver.output() == text + b"\r\n250 2.0.0 Ok\r\n"
    assert driver.conn.state is SmtpState.GREETED
    assert driver.conn.recipients_accepted == 0
    assert driver.conn.bad_commands == 0


def test_text_line_of_1000_octets_is_accepted_and_1001_refused() -> None:
    fits = b"a" * 998 + b"\r\n"
    events, _ = deliver(fits + b"." + b"b" * 997 + b"\r\n.\r\n")  # a stuffed dot is free
    assert events == [MessageReceived(fits + b"b" * 997 + b"\r\n", via_bdat=False)]
    events, output = deliver(b"a" * 999 + b"\r\n.\r\n")
    assert isinstance(events[0], CommandRejected)
    assert events[0].reason == "text line too long"
    assert output.startswith(b"554 5.6.0 Message refused: a line is longer than 1000 octets")


def test_endless_line_is_refused_with_bounded_buffering() -> None:
    driver = in_transaction()
    driver.send(b"DATA\r\n")
    for _ in range(200):
        driver.send(b"z" * 10_000)
    reader = driver.conn._data_reader
    assert reader is not None
    assert len(reader._pending) <= 4 and len(reader._message) == 0
    driver.send(b"\r\n.\r\n")
    assert isinstance(driver.events[-1], CommandRejected)
    assert driver.events[-1].reason == "text line too long"


def test_message_over_the_size_limit_is_read_to_the_end_and_refused() -> None:
    line = b"x" * 78 + b"\r\n"
    events, output = deliver(
        line * 200 + b".\r\nNOOP\r\n", chunk=512, limits=SmtpLimits(max_message_size=10_000)
    )
    assert [type(e) for e in events] == [CommandRejected, Noop]
    assert output == (
        b"552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 Ok\r\n"
    )


def test_message_exactly_at_the_size_limit_is_accepted() -> None:
    body = b"x" * 98 + b"\r\n"
    events, _ = deliver(body + b".\r\n", limits=SmtpLimits(max_message_size=100))
    assert events == [MessageReceived(body, via_bdat=False)]


def test_size_parameter_over_the_limit_is_refused_at_mail() -> None:
    driver = in_transaction(limits=SmtpLimits(max_message_size=1000))
    driver.send(b"RSET\r\nMAIL FROM:<a@b.example> SIZE=1001\r\n")
    assert driver.output() == (
        b"250 2.0.0 Ok\r\n552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    )


def test_body_pipelined_after_a_refused_data_is_never_executed() -> None:
    # RCPT refused, so DATA is refused by the machine: the body after it is discarded.
    driver = in_transaction(answers={RcptTo: Reply(550, "5.1.1", "No such user")})
    driver.send(
        b"RSET\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<nobody@example.test>\r\nDATA\r\n"
        + FORGED
        + b".\r\n"
    )
    assert driver.output() == (
        b"250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n550 5.1.1 No such user\r\n"
        b"503 5.5.1 Need RCPT command (no valid recipients)\r\n"
    )
    assert len(driver.of_type(MailFrom)) == 2  # the in_transaction one and ours, not FORGED's
    assert not driver.of_type(DataRequested)


def test_body_pipelined_after_data_refused_by_the_application_is_never_executed() -> None:
    driver = in_transaction(answers={DataRequested: Reply(554, "5.7.1", "Not from you")})
    driver.send(b"DATA\r\n" + FORGED + b".\r\n")
    assert driver.output() == b"554 5.7.1 Not from you\r\n"
    assert driver.of_type(DataRequested) == [DataRequested()]
    assert len(driver.of_type(MailFrom)) == 1
    assert driver.conn.state is SmtpState.RCPT


def test_data_with_an_argument_discards_the_pipelined_body() -> None:
    driver = in_transaction()
    driver.send(b"DATA now\r\n" + FORGED)
    assert driver.output() == b"501 5.5.4 Syntax: DATA takes no argument\r\n"
    assert len(driver.of_type(MailFrom)) == 1


def test_second_transaction_after_a_message() -> None:
    driver = in_transaction()
    driver.send(
        b"DATA\r\none\r\n.\r\n"
        b"MAIL FROM:<b@c.example>\r\nRCPT TO:<d@e.example>\r\nDATA\r\ntwo\r\n.\r\n"
    )
    messages = driver.of_type(MessageReceived)
    assert messages == [
        MessageReceived(b"one\r\n", via_bdat=False),
        MessageReceived(b"two\r\n", via_bdat=False),
    ]


CRLF_BODIES = st.lists(
    st.binary(max_size=40).map(
        lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\0", b"")
    ),
    max_size=30,
).map(lambda lines: b"".join(line + b"\r\n" for line in lines))


@settings(max_examples=200, deadline=None)
@given(body=CRLF_BODIES, data=st.data())
def test_dot_stuffing_round_trip_in_random_chunks(body: bytes, data: st.DataObject) -> None:
    wire = stuff(body) + b"NOOP\r\n"
    driver = in_transaction()
    driver.send(b"DATA\r\n")
    position = 0
    for _ in range(len(wire) + 1):  # bounded: each step sends at least one octet
        if position >= len(wire):
            break
        size = data.draw(st.integers(min_value=1, max_value=64), label="chunk")
        driver.send(wire[position : position + size])
        position += size
    assert driver.of_type(MessageReceived) == [MessageReceived(body, via_bdat=False)]
    assert driver.of_type(Noop) == [Noop()]


@settings(max_examples=100, deadline=None)
@given(body=CRLF_BODIES, dots=st.lists(st.sampled_from([b".", b"..", b".\r\n.."]), max_size=5))
def test_lines_of_dots_round_trip(body: bytes, dots: list[bytes]) -> None:
    body = body + b"".join(d + b"\r\n" for d in dots)
    events, _ = deliver(stuff(body), chunk=3)
    assert events == [MessageReceived(body, via_bdat=False)]


@settings(max_examples=300, deadline=None)
@given(
    noise=st.lists(st.sampled_from([b"\r", b"\n", b".", b"\0", b"x", b"\r\n"]), max_size=12),
    chunk=st.integers(min_value=1, max_value=16),
)
def test_no_line_ending_noise_ever_yields_a_second_transaction(
    noise: list[bytes], chunk: int
) -> None:
    inner = b"real" + b"".join(noise) + b"\r\n" + FORGED
    assume(b"\r\n.\r\n" not in b"\r\n" + inner)  # a genuine end of data is not an attack
    driver = in_transaction()
    driver.send(b"DATA\r\n" + inner + b".\r\nNOOP\r\n", chunk=chunk)
    outcomes = driver.of_type(MessageReceived) + driver.of_type(CommandRejected)
    assert len(outcomes) == 1
    assert len(driver.of_type(MailFrom)) == 1  # only the real MAIL before DATA
    assert driver.of_type(Noop) == [Noop()]
    for message in driver.of_type(MessageReceived):
        assert isinstance(message, MessageReceived)
        body = message.message
        assert body.count(b"\n") == body.count(b"\r\n") == body.count(b"\r")


_LINE = st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@settings(max_examples=500)
@given(st.lists(_LINE, max_size=20), st.integers(0, 25))
def test_long_line_check_agrees_with_splitting(lines: list[bytes], limit: int) -> None:
    # The window-jumping check must give exactly the answer of the obvious split.
    text = b"\r\n".join(lines)
    expected = max(map(len, text.split(b"\r\n"))) > limit
    assert has_line_longer_than(text, limit) is expected


def reference_body_problem(block: bytes) -> str | None:
    """The plain definition, three passes: what body_problem must agree with."""
    crlf = block.count(b"\r\n")
    if block.count(b"\n") != crlf:
        return "bare LF"
    if block.count(b"\r") != crlf:
        return "bare CR"
    if b"\0" in block:
        return "NUL"
    return None


@given(st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"\0", b"a", b".", b"\r\n."]), max_size=40))
def test_body_problem_agrees_with_the_plain_definition(parts: list[bytes]) -> None:
    block = b"\r\n" + b"".join(parts) + b"\r\n"
    found = body_problem(block)
    expected = reference_body_problem(block)
    assert (found[1].split(" in ")[0] if found else None) == expected
