"""delivery.bounces: the Notifier with a real SQLite store and the real scheduler.

DSNs are read back out of the queue and parsed with the stdlib email package.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import time
from collections.abc import AsyncIterator, Sequence
from email.message import EmailMessage, Message
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from postgate.delivery.base import Route
from postgate.delivery.bounces import Notifier, dsn_status
from postgate.queue.model import (
    AttemptResult,
    DsnNotify,
    DsnRet,
    Envelope,
    EnvelopeRecipient,
    LeasedRecipient,
    NotificationKind,
    NotificationRecipient,
    PendingNotification,
    RecipientStatus,
    StatusLogEntry,
)
from postgate.queue.scheduler import Scheduler
from postgate.queue.sqlite import SqliteStore
from postgate.queue.store import QueueError
from tests.queue.conftest import FakeClock, make_envelope

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: lunch\r\n"
    b"Message-ID: <lunch.1@example.org>\r\n"
    b"\r\n"
    b"Shall we meet at noon? SECRET-BODY-TEXT\r\n"
)
NO_SUCH_USER = AttemptResult(
    RecipientStatus.BOUNCED,
    "550 5.1.1 <bob@example.com>: no such user",
    "5.1.1",
    remote_host="mx.example.com",
)
DELIVERED = AttemptResult(RecipientStatus.DELIVERED, "250 2.0.0 ok", "2.0.0", "mx.example.com")
TRY_LATER = AttemptResult(
    RecipientStatus.DEFERRED, "451 4.4.1 try later", "4.4.1", "mx.example.com"
)


class PerAddressTransport:
    """Answers each recipient from a table (default: deferred); records each call."""

    name = "fake"

    def __init__(self, answers: dict[str, AttemptResult] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[list[str]] = []

    async def deliver(
        self, message: bytes, recipients: Sequence[LeasedRecipient]
    ) -> list[AttemptResult]:
        self.calls.append([r.address for r in recipients])
        return [self.answers.get(r.address, TRY_LATER) for r in recipients]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "queue.db", clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


def make_scheduler(
    store: SqliteStore,
    transport: PerAddressTransport,
    clock: FakeClock,
    **options: float,
) -> Scheduler:
    settings: dict[str, float] = {"max_lifetime": 86400.0, **options}
    return Scheduler(
        store,
        lambda address, sender="": Route(transport, address.rpartition("@")[2]),
        retry_schedule=(60,),
        max_lifetime=settings["max_lifetime"],
        lease_seconds=120,
        concurrency=4,
        owner="test-node",
        clock=clock,
        delay_warning_after=settings.get("delay_warning_after", 0.0),
    )


def make_notifier(store: object, clock: FakeClock, **options: object) -> Notifier:
    return Notifier(
        store,  # type: ignore[arg-type]
        reporting_mta="mail.ours.test",
        postmaster="postmaster@ours.test",
        clock=clock,
        **options,  # type: ignore[arg-type]
    )


def recipient(address: str, **changes: Any) -> EnvelopeRecipient:
    return dataclasses.replace(EnvelopeRecipient(address, address), **changes)


def envelope(*recipients: EnvelopeRecipient, **changes: Any) -> Envelope:
    return dataclasses.replace(
        Envelope(sender="alice@example.org", recipients=recipients), **changes
    )


async def queued_dsns(store: SqliteStore) -> list[tuple[list[str], EmailMessage]]:
    """Every DSN in the queue: (its envelope recipients, the parsed report)."""
    found = []
    for summary in await store.list_messages():
        if summary.sender != "":
            continue
        parsed = email.message_from_bytes(
            await store.load_message(summary.queue_id), policy=email.policy.default
        )
        assert isinstance(parsed, EmailMessage)
        found.append(([r.address for r in summary.recipients], parsed))
    return found


def parts(report: Message) -> list[Message]:
    payload = report.get_payload()
    assert isinstance(payload, list)
    return [part for part in payload if isinstance(part, Message)]


def recipient_blocks(report: EmailMessage) -> list[Message]:
    """The per-recipient groups of the message/delivery-status part."""
    return parts(parts(report)[1])[1:]


async def test_550_queues_one_dsn_to_the_sender_and_removes_the_original_after(
    store: SqliteStore, clock: FakeClock
) -> None:
    transport = PerAddressTransport({"bob@example.com": NO_SUCH_USER})
    scheduler = make_scheduler(store, transport, clock)
    queue_id = await store.enqueue(make_envelope("alice@example.org", "bob@example.com"), MESSAGE)
    assert await scheduler.run_once() == 1
    # The bounce is final, but its DSN is pending: the message must stay.
    assert await store.get_message(queue_id) is not None

    class Watching:
        """The store, checking that the original still exists when the DSN is queued."""

        def __init__(self) -> None:
            self.original_present: list[bool] = []

        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        async def enqueue(self, env: Envelope, message: bytes) -> str:
            self.original_present.append(await store.get_message(queue_id) is not None)
            return await store.enqueue(env, message)

    watching = Watching()
    woken: list[int] = []
    notifier = make_notifier(watching, clock, on_enqueued=lambda: woken.append(1))
    with capture_logs() as logs:
        assert await notifier.drain_once() == 1

    assert watching.original_present == [True]
    assert woken == [1]
    assert await store.get_message(queue_id) is None
    [(to, report)] = await queued_dsns(store)
    assert to == ["alice@example.org"]
    assert report["To"] == "alice@example.org"
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert [p.get_content_type() for p in parts(report)] == [
        "text/plain",
        "message/delivery-status",
        "message/rfc822",
    ]
    human = parts(report)[0].get_payload(decode=True)
    assert isinstance(human, bytes)
    assert b"could not be delivered" in human and b"no such user" in human
    assert b"mx.example.com said:" in human
    [block] = recipient_blocks(report)
    assert block["Final-Recipient"] == "rfc822; bob@example.com"
    assert block["Action"] == "failed"
    assert block["Status"] == "5.1.1"
    assert block["Remote-MTA"] == "dns; mx.example.com"
    assert block["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@example.com>: no such user"
    assert block["Last-Attempt-Date"] is not None
    assert b"SECRET-BODY-TEXT" in parts(report)[2].as_bytes()  # no RET: the full message
    [line] = [entry for entry in logs if entry["event"] == "dsn"]
    assert line["queue_id"] == queue_id and line["kind"] == "failed"
    assert line["recipients"] == ["bob@example.com"]
    assert line["dsn_queue_id"] != queue_id
    assert await notifier.drain_once() == 0


async def test_the_dsn_itself_is_delivered_like_any_message(
    store: SqliteStore, clock: FakeClock
) -> None:
    transport = PerAddressTransport(
        {"bob@example.com": NO_SUCH_USER, "alice@example.org": DELIVERED}
    )
    scheduler = make_scheduler(store, transport, clock)
    await store.enqueue(make_envelope("alice@example.org", "bob@example.com"), MESSAGE)
    await scheduler.run_once()
    assert await make_notifier(store, clock).drain_once() == 1
    assert await scheduler.run_once() == 1
    assert transport.calls[-1] == ["alice@example.org"]
    assert await store.list_messages() == []  # <> gets no success report


async def test_three_recipients_failing_in_one_round_share_one_dsn(
    store: SqliteStore, clock: FakeClock
) -> None:
    bounced = ["b1@example.com", "b2@example.com", "b3@example.net"]
    transport = PerAddressTransport({a: NO_SUCH_USER for a in bounced})
    scheduler = make_scheduler(store, transport, clock)
    await store.enqueue(make_envelope("alice@example.org", *bounced), MESSAGE)
    assert await scheduler.run_once() == 3

    assert await make_notifier(store, clock).drain_once() == 1
    [(to, report)] = await queued_dsns(store)
    assert to == ["alice@example.org"]
    blocks = recipient_blocks(report)
    assert [b["Final-Recipient"] for b in blocks] == [f"rfc822; {a}" for a in bounced]
    assert {b["Action"] for b in blocks} == {"failed"}


async def test_null_sender_bounce_gets_no_dsn_and_is_removed(
    store: SqliteStore, clock: FakeClock
) -> None:
    transport = PerAddressTransport({"bob@example.com": NO_SUCH_USER})
    queue_id = await store.enqueue(make_envelope("", "bob@example.com"), MESSAGE)
    assert await make_scheduler(store, transport, clock).run_once() == 1

    assert await store.get_message(queue_id) is None
    assert await store.pending_notifications() == []
    assert await make_notifier(store, clock).drain_once() == 0
    assert await store.list_messages() == []


async def test_notify_never_gets_no_dsn(store: SqliteStore, clock: FakeClock) -> None:
    transport = PerAddressTransport({"bob@example.com": NO_SUCH_USER})
    env = envelope(recipient("bob@example.com", notify=frozenset({DsnNotify.NEVER})))
    queue_id = await store.enqueue(env, MESSAGE)
    assert await make_scheduler(store, transport, clock).run_once() == 1

    assert await store.get_message(queue_id) is None
    assert await make_notifier(store, clock).drain_once() == 0
    assert await queued_dsns(store) == []


async def test_success_dsn_only_for_notify_success(store: SqliteStore, clock: FakeClock) -> None:
    transport = PerAddressTransport(
        {"asked@example.com": DELIVERED, "default@example.com": DELIVERED}
    )
    env = envelope(
        recipient("asked@example.com", notify=frozenset({DsnNotify.SUCCESS, DsnNotify.FAILURE})),
        recipient("default@example.com"),
    )
    queue_id = await store.enqueue(env, MESSAGE)
    assert await make_scheduler(store, transport, clock).run_once() == 2

    assert await make_notifier(store, clock).drain_once() == 1
    assert await store.get_message(queue_id) is None
    [(_, report)] = await queued_dsns(store)
    assert report["Subject"] == "Successful Mail Delivery Report"
    [block] = recipient_blocks(report)
    assert block["Final-Recipient"] == "rfc822; asked@example.com"
    assert block["Action"] == "delivered"
    assert block["Status"] == "2.0.0"
    # RFC 3461 4.3: a success report returns headers only.
    assert parts(report)[2].get_content_type() == "text/rfc822-headers"


async def test_default_notify_gets_no_dsn_on_delivery(store: SqliteStore, clock: FakeClock) -> None:
    transport = PerAddressTransport({"bob@example.com": DELIVERED})
    queue_id = await store.enqueue(make_envelope("alice@example.org", "bob@example.com"), MESSAGE)
    assert await make_scheduler(store, transport, clock).run_once() == 1
    assert await store.get_message(queue_id) is None
    assert await make_notifier(store, clock).drain_once() == 0
    assert await store.list_messages() == []


async def test_one_delay_warning_after_delay_warning_after(
    store: SqliteStore, clock: FakeClock
) -> None:
    transport = PerAddressTransport()  # always 451
    scheduler = make_scheduler(store, transport, clock, delay_warning_after=100, max_lifetime=86400)
    notifier = make_notifier(store, clock, max_lifetime=86400.0)
    queue_id = await store.enqueue(make_envelope("alice@example.org", "bob@example.com"), MESSAGE)
    arrival = clock.now
    sent = []
    dsns = []
    for _ in range(5):  # ages 0, 60, 120, 180, 240: the warning is due from 120 on
        assert await scheduler.run_once() >= 1  # the DSN is being retried too, from 180 on
        sent.append(await notifier.drain_once())
        dsns.extend(await queued_dsns(store))
        clock.advance(60)
    assert sent == [0, 0, 1, 0, 0]

    (to, report) = dsns[0]
    assert all(to == other_to for other_to, _ in dsns)  # the same DSN, still queued
    assert to == ["alice@example.org"]
    assert report["Subject"] == "Delayed Mail (still being retried)"
    [block] = recipient_blocks(report)
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.4.1"
    assert block["Diagnostic-Code"] == "smtp; 451 4.4.1 try later"
    retry_until = parsedate_to_datetime(str(block["Will-Retry-Until"]))
    assert retry_until.timestamp() == arrival + 86400
    message = await store.get_message(queue_id)
    assert message is not None  # still being retried
    assert message.recipients[0].status is RecipientStatus.DEFERRED


async def test_no_delay_warning_when_notify_omits_delay(
    store: SqliteStore, clock: FakeClock
) -> None:
    transport = PerAddressTransport()
    scheduler = make_scheduler(store, transport, clock, delay_warning_after=1)
    env = envelope(recipient("bob@example.com", notify=frozenset({DsnNotify.FAILURE})))
    await store.enqueue(env, MESSAGE)
    for _ in range(3):
        await scheduler.run_once()
        clock.advance(60)
    assert await store.pending_notifications() == []
    assert await make_notifier(store, clock).drain_once() == 0


async def test_ret_hdrs_envid_and_orcpt(store: SqliteStore, clock: FakeClock) -> None:
    transport = PerAddressTransport({"bob@example.com": NO_SUCH_USER})
    env = envelope(
        recipient("bob@example.com", orcpt=("rfc822", "Bob.Original@example.com")),
        ret=DsnRet.HDRS,
        envid="ENV-42",
    )
    await store.enqueue(env, MESSAGE)
    await make_scheduler(store, transport, clock).run_once()

    assert await make_notifier(store, clock).drain_once() == 1
    [(_, report)] = await queued_dsns(store)
    returned = parts(report)[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert b"Subject: lunch" in returned.as_bytes()
    assert b"SECRET-BODY-TEXT" not in returned.as_bytes()
    per_message = parts(parts(report)[1])[0]
    assert per_message["Original-Envelope-Id"] == "ENV-42"
    [block] = recipient_blocks(report)
    assert block["Original-Recipient"] == "rfc822; Bob.Original@example.com"
    assert block["Final-Recipient"] == "rfc822; bob@example.com"


async def test_notification_is_durable_and_sent_after_reopen(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "queue.db"
    store = await SqliteStore.open(path, clock=clock)
    try:
        transport = PerAddressTransport({"bob@example.com": NO_SUCH_USER})
        queue_id = await store.enqueue(
            make_envelope("alice@example.org", "bob@example.com"), MESSAGE
        )
        await make_scheduler(store, transport, clock).run_once()
    finally:
        await store.close()  # the notifier never ran

    reopened = await SqliteStore.open(path, clock=clock)
    try:
        [pending] = await reopened.pending_notifications()
        assert pending.queue_id == queue_id and pending.kind is NotificationKind.FAILED
        assert await make_notifier(reopened, clock).drain_once() == 1
        assert await reopened.get_message(queue_id) is None
        [(to, _)] = await queued_dsns(reopened)
        assert to == ["alice@example.org"]
    finally:
        await reopened.close()


async def test_crash_between_enqueue_and_mark_done_duplicates_never_loses(
    store: SqliteStore, clock: FakeClock
) -> None:
    transport = PerAddressTransport({"bob@example.com": NO_SUCH_USER})
    queue_id = await store.enqueue(make_envelope("alice@example.org", "bob@example.com"), MESSAGE)
    await make_scheduler(store, transport, clock).run_once()

    class FailsToMarkOnce:
        def __init__(self) -> None:
            self.failures = 1

        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        async def finish_notifications(self, ids: Sequence[int], dsn_queue_id: str | None) -> int:
            if self.failures:
                self.failures -= 1
                raise QueueError("disk I/O error")
            return await store.finish_notifications(ids, dsn_queue_id)

    notifier = make_notifier(FailsToMarkOnce(), clock)
    with pytest.raises(QueueError):
        await notifier.drain_once()
    assert len(await queued_dsns(store)) == 1
    assert await store.get_message(queue_id) is not None  # still pending

    assert await notifier.drain_once() == 1
    assert len(await queued_dsns(store)) == 2  # a duplicate, not a loss
    assert await store.pending_notifications() == []
    assert await store.get_message(queue_id) is None


async def test_expiry_sends_a_failed_dsn_with_4_4_7(store: SqliteStore, clock: FakeClock) -> None:
    transport = PerAddressTransport()  # always 451
    scheduler = make_scheduler(store, transport, clock, max_lifetime=150)
    queue_id = await store.enqueue(make_envelope("alice@example.org", "bob@example.com"), MESSAGE)
    for _ in range(4):  # ages 0, 60, 120, 180: expired at the 4th attempt
        assert await scheduler.run_once() == 1
        clock.advance(60)
    [pending] = await store.pending_notifications()
    assert pending.queue_id == queue_id

    assert await make_notifier(store, clock).drain_once() == 1
    [(_, report)] = await queued_dsns(store)
    [block] = recipient_blocks(report)
    assert block["Action"] == "failed"
    assert block["Status"] == "4.4.7"
    diagnostic = str(block["Diagnostic-Code"])
    assert diagnostic.startswith("x-postgate; 4.4.7 message expired")
    assert "451 4.4.1 try later" in diagnostic
    assert await store.get_message(queue_id) is None
    # The expiry text is ours: the human part must not put it in the last MX's mouth.
    human = str(parts(report)[0].get_payload(decode=True), "utf-8")
    assert "The mail system said:" in human and "mx.example.com said:" not in human


async def test_stale_delay_warning_is_dropped_once_the_recipient_is_delivered(
    store: SqliteStore, clock: FakeClock
) -> None:
    transport = PerAddressTransport()
    scheduler = make_scheduler(store, transport, clock, delay_warning_after=1)
    queue_id = await store.enqueue(make_envelope("alice@example.org", "bob@example.com"), MESSAGE)
    clock.advance(10)
    await scheduler.run_once()  # deferred with a delay warning
    clock.advance(60)
    transport.answers["bob@example.com"] = DELIVERED
    await scheduler.run_once()
    assert await store.get_message(queue_id) is not None  # kept for the pending row

    assert await make_notifier(store, clock).drain_once() == 0
    assert await store.pending_notifications() == []
    assert await store.get_message(queue_id) is None


async def test_run_batches_one_round_into_one_dsn_and_stops(
    store: SqliteStore, clock: FakeClock
) -> None:
    queue_id = await store.enqueue(
        make_envelope("alice@example.org", "b1@example.com", "b2@example.com"), MESSAGE
    )
    first, second = await store.lease_due(clock.now, 10, 60, "A")
    notifier = make_notifier(store, clock, batch_window=0.5, poll=600)
    runner = asyncio.create_task(notifier.run())
    try:
        await store.record_attempt(first, NO_SUCH_USER)
        notifier.wake()
        await store.record_attempt(second, NO_SUCH_USER)
        notifier.wake()
        deadline = time.monotonic() + 10
        while await store.get_message(queue_id) is not None:
            assert time.monotonic() < deadline, "notifier did not drain after wake()"
            await asyncio.sleep(0.01)
    finally:
        await notifier.stop()
        await asyncio.wait_for(runner, 5)
    assert runner.exception() is None
    [(_, report)] = await queued_dsns(store)
    assert len(recipient_blocks(report)) == 2


async def test_run_drains_rows_left_from_before_at_start(
    store: SqliteStore, clock: FakeClock
) -> None:
    queue_id = await store.enqueue(make_envelope("alice@example.org", "bob@example.com"), MESSAGE)
    [leased] = await store.lease_due(clock.now, 10, 60, "A")
    await store.record_attempt(leased, NO_SUCH_USER)
    notifier = make_notifier(store, clock, poll=600)  # only the start-up drain can do it
    runner = asyncio.create_task(notifier.run())
    try:
        deadline = time.monotonic() + 10
        while await store.get_message(queue_id) is not None:
            assert time.monotonic() < deadline, "notifier did not drain at start"
            await asyncio.sleep(0.01)
    finally:
        await notifier.stop()
        await asyncio.wait_for(runner, 5)
    assert len(await queued_dsns(store)) == 1


async def test_a_group_that_cannot_be_built_stays_pending_and_others_go_on(
    store: SqliteStore, clock: FakeClock
) -> None:
    transport = PerAddressTransport({"bob@example.com": NO_SUCH_USER})
    broken = await store.enqueue(make_envelope("alice@example.org", "bob@example.com"), MESSAGE)
    fine = await store.enqueue(make_envelope("carol@example.org", "bob@example.com"), MESSAGE)
    await make_scheduler(store, transport, clock).run_once()

    class BrokenMessage:
        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        async def load_message(self, queue_id: str) -> bytes:
            if queue_id == broken:
                raise RuntimeError("corrupt")
            return await store.load_message(queue_id)

    assert await make_notifier(BrokenMessage(), clock).drain_once() == 1
    [pending] = await store.pending_notifications()
    assert pending.queue_id == broken
    assert await store.get_message(fine) is None
    assert await make_notifier(store, clock).drain_once() == 1  # retried later


def _attempt(reply: str, enhanced: str) -> StatusLogEntry:
    return StatusLogEntry("q", 1, "b@x", RecipientStatus.BOUNCED, reply, enhanced, "", "", 1, 0.0)


@pytest.mark.parametrize(
    ("kind", "reply", "enhanced", "expected"),
    [
        (NotificationKind.FAILED, "550 5.7.1 denied", "5.7.1", "5.7.1"),
        (NotificationKind.FAILED, "550 5.2.2 mailbox full", "", "5.2.2"),
        (NotificationKind.FAILED, "550 mailbox unavailable", "bogus", "5.0.0"),
        (NotificationKind.FAILED, "4.4.7 message expired", "4.4.7", "4.4.7"),
        (NotificationKind.DELAYED, "451 4.4.1 later", "5.1.1", "4.4.1"),
        (NotificationKind.DELAYED, "421 busy", "", "4.0.0"),
        (NotificationKind.DELIVERED, "250 ok", "", "2.0.0"),
        (NotificationKind.DELIVERED, "250 2.6.0 queued", "2.6.0", "2.6.0"),
    ],
)
def test_dsn_status_fits_the_action(
    kind: NotificationKind, reply: str, enhanced: str, expected: str
) -> None:
    assert dsn_status(kind, _attempt(reply, enhanced)) == expected


def test_pending_notification_ids() -> None:
    attempt = _attempt("550 no", "5.0.0")
    recipients = tuple(
        NotificationRecipient(i, i, "b@x", "b@x", None, None, 0.0, RecipientStatus.BOUNCED, attempt)
        for i in (7, 3)
    )
    group = PendingNotification("q", NotificationKind.FAILED, envelope(), recipients)
    assert group.notification_ids == (7, 3)
    assert group.first_notification_id == 3


async def test_success_at_a_dsn_capable_next_hop_is_left_to_it_else_relayed(
    store: SqliteStore, clock: FakeClock
) -> None:
    # RFC 3461 5.2.2: a next hop that took NOTIFY reports success itself (no DSN from
    # us); one that does not speak DSN gets "relayed", never a false "delivered".
    success = frozenset({DsnNotify.SUCCESS})
    passed_on = dataclasses.replace(DELIVERED, relayed=True, dsn_passed_on=True)
    relayed = dataclasses.replace(DELIVERED, relayed=True)
    transport = PerAddressTransport({"dsn@example.com": passed_on, "old@example.com": relayed})
    env = envelope(
        recipient("dsn@example.com", notify=success), recipient("old@example.com", notify=success)
    )
    await store.enqueue(env, MESSAGE)
    assert await make_scheduler(store, transport, clock).run_once() == 2
    assert await make_notifier(store, clock).drain_once() == 1
    [(_, report)] = await queued_dsns(store)
    [block] = recipient_blocks(report)
    assert block["Final-Recipient"] == "rfc822; old@example.com"
    assert block["Action"] == "relayed"


async def test_bounce_after_alias_expansion_names_the_address_the_sender_used(
    store: SqliteStore, clock: FakeClock
) -> None:
    transport = PerAddressTransport({"target@elsewhere.example": NO_SUCH_USER})
    env = envelope(recipient("target@elsewhere.example", original="alias@example.com"))
    await store.enqueue(env, MESSAGE)
    assert await make_scheduler(store, transport, clock).run_once() == 1
    assert await make_notifier(store, clock).drain_once() == 1
    [(_, report)] = await queued_dsns(store)
    [block] = recipient_blocks(report)
    assert block["Original-Recipient"] == "rfc822; alias@example.com"
    assert block["Final-Recipient"] == "rfc822; target@elsewhere.example"
