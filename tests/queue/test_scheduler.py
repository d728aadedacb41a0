"""Scheduler with a real store and a real Maildir: delivery, backoff, expiry, failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from postgate.delivery.base import Route
from postgate.delivery.maildir import MaildirTransport
from postgate.queue.model import AttemptResult, LeasedRecipient, RecipientStatus
from postgate.queue.scheduler import Scheduler
from postgate.queue.sqlite import SqliteStore
from tests.queue.conftest import FakeClock, make_envelope

MESSAGE = b"Subject: hello\r\n\r\nHi Bob.\r\n"


class ScriptedTransport:
    """Answers each call from a script of statuses; records what it was given."""

    name = "scripted"

    def __init__(self, *script: RecipientStatus | Exception) -> None:
        self.script = list(script)
        self.calls: list[list[str]] = []

    async def deliver(
        self, message: bytes, recipients: Sequence[LeasedRecipient]
    ) -> list[AttemptResult]:
        self.calls.append([r.address for r in recipients])
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        code = {"delivered": "250 2.0.0", "deferred": "451 4.4.1", "bounced": "550 5.1.1"}
        return [
            AttemptResult(step, f"{code[step.value]} {step.value}", code[step.value][4:])
            for _ in recipients
        ]


def make_scheduler(
    store: SqliteStore,
    transport: object,
    clock: FakeClock | None = None,
    outcomes: list[tuple[LeasedRecipient, AttemptResult]] | None = None,
    *,
    destination: str = "",
    retry_schedule: Sequence[float] = (60, 300),
    max_lifetime: float = 86400,
    concurrency: int = 4,
) -> Scheduler:
    def route(address: str, sender: str = "") -> Route:
        return Route(transport, destination or address.rpartition("@")[2])  # type: ignore[arg-type]

    return Scheduler(
        store,
        route,
        retry_schedule=retry_schedule,
        max_lifetime=max_lifetime,
        lease_seconds=120,
        concurrency=concurrency,
        owner="test-node",
        clock=clock or time.time,
        on_outcome=(lambda leased, result: outcomes.append((leased, result)))
        if outcomes is not None
        else None,
    )


async def test_delivers_into_a_real_maildir_with_exact_content(
    store: SqliteStore, clock: FakeClock, tmp_path: Path
) -> None:
    maildir = tmp_path / "mail" / "bob"
    transport = MaildirTransport(lambda address: maildir if address == "bob@example.com" else None)
    outcomes: list[tuple[LeasedRecipient, AttemptResult]] = []
    scheduler = make_scheduler(store, transport, clock, outcomes)
    queue_id = await store.enqueue(make_envelope("alice@example.org", "bob@example.com"), MESSAGE)

    assert await scheduler.run_once() == 1

    [delivered_file] = list((maildir / "new").iterdir())
    assert delivered_file.read_bytes() == (
        b"Return-Path: <alice@example.org>\n"
        b"Delivered-To: bob@example.com\n"
        b"Subject: hello\n\nHi Bob.\n"
    )
    assert await store.get_message(queue_id) is None
    [entry] = await store.status_log(queue_id)
    assert entry.status is RecipientStatus.DELIVERED
    assert entry.remote_host == "maildir"
    assert [(leased.address, result.status) for leased, result in outcomes] == [
        ("bob@example.com", RecipientStatus.DELIVERED)
    ]
    assert await scheduler.run_once() == 0


async def test_groups_recipients_by_message_and_destination(
    store: SqliteStore, clock: FakeClock
) -> None:
    transport = ScriptedTransport(RecipientStatus.DELIVERED)
    scheduler = make_scheduler(store, transport, clock)
    await store.enqueue(
        make_envelope("a@example.org", "b@example.com", "c@example.com", "d@example.net"), MESSAGE
    )
    await store.enqueue(make_envelope("a@example.org", "e@example.com"), MESSAGE)

    assert await scheduler.run_once() == 4
    assert sorted(transport.calls) == [
        ["b@example.com", "c@example.com"],
        ["d@example.net"],
        ["e@example.com"],
    ]


async def test_deferred_is_retried_per_schedule_with_last_delay_repeating(
    store: SqliteStore, clock: FakeClock
) -> None:
    transport = ScriptedTransport(
        RecipientStatus.DEFERRED,
        RecipientStatus.DEFERRED,
        RecipientStatus.DEFERRED,
        RecipientStatus.DELIVERED,
    )
    scheduler = make_scheduler(store, transport, clock, retry_schedule=(60, 300))
    queue_id = await store.enqueue(make_envelope(), MESSAGE)

    expected_delays = [60, 300, 300]
    for delay in expected_delays:
        assert await scheduler.run_once() == 1
        message = await store.get_message(queue_id)
        assert message is not None
        assert message.recipients[0].status is RecipientStatus.DEFERRED
        assert message.recipients[0].next_attempt_at == clock.now + delay
        clock.advance(delay - 1)
        assert await scheduler.run_once() == 0  # not yet due
        clock.advance(1)

    assert await scheduler.run_once() == 1
    assert await store.get_message(queue_id) is None
    log = await store.status_log(queue_id)
    assert [(e.attempt, e.status) for e in log] == [
        (1, RecipientStatus.DEFERRED),
        (2, RecipientStatus.DEFERRED),
        (3, RecipientStatus.DEFERRED),
        (4, RecipientStatus.DELIVERED),
    ]


async def test_expired_message_bounces_with_4_4_7(store: SqliteStore, clock: FakeClock) -> None:
    transport = ScriptedTransport(RecipientStatus.DEFERRED)
    outcomes: list[tuple[LeasedRecipient, AttemptResult]] = []
    scheduler = make_scheduler(
        store, transport, clock, outcomes, retry_schedule=(1000,), max_lifetime=3600
    )
    queue_id = await store.enqueue(make_envelope(), MESSAGE)

    for _ in range(10):  # bounded: expiry must come after 4 deferrals
        await scheduler.run_once()
        if await store.get_message(queue_id) is None:
            break
        clock.advance(1000)

    statuses = [result.status for _, result in outcomes]
    assert statuses == [RecipientStatus.DEFERRED] * 4 + [RecipientStatus.BOUNCED]
    bounce = outcomes[-1][1]
    assert bounce.enhanced_status == "4.4.7"
    assert "message expired" in bounce.reply
    assert "451 4.4.1 deferred" in bounce.reply  # the last error is kept for the DSN
    log = await store.status_log(queue_id)
    assert log[-1].status is RecipientStatus.BOUNCED


async def test_transport_exception_defers_with_4_3_0(store: SqliteStore, clock: FakeClock) -> None:
    transport = ScriptedTransport(RuntimeError("boom"), RecipientStatus.DELIVERED)
    outcomes: list[tuple[LeasedRecipient, AttemptResult]] = []
    scheduler = make_scheduler(store, transport, clock, outcomes)
    queue_id = await store.enqueue(
        make_envelope("a@example.org", "b@example.com", "c@example.com"), MESSAGE
    )

    assert await scheduler.run_once() == 2
    assert [r.status for _, r in outcomes] == [RecipientStatus.DEFERRED] * 2
    assert all(r.enhanced_status == "4.3.0" and "boom" in r.reply for _, r in outcomes)
    message = await store.get_message(queue_id)
    assert message is not None
    assert {r.status for r in message.recipients} == {RecipientStatus.DEFERRED}

    clock.advance(60)
    assert await scheduler.run_once() == 2
    assert await store.get_message(queue_id) is None


async def test_wrong_number_of_results_is_treated_as_failure(
    store: SqliteStore, clock: FakeClock
) -> None:
    class Short:
        name = "short"

        async def deliver(
            self, message: bytes, recipients: Sequence[LeasedRecipient]
        ) -> list[AttemptResult]:
            return []

    scheduler = make_scheduler(store, Short(), clock)
    queue_id = await store.enqueue(make_envelope(), MESSAGE)
    assert await scheduler.run_once() == 1
    [entry] = await store.status_log(queue_id)
    assert entry.status is RecipientStatus.DEFERRED
    assert entry.reply.startswith("451 4.3.0")


async def test_routing_failure_defers_only_that_recipient(
    store: SqliteStore, clock: FakeClock
) -> None:
    transport = ScriptedTransport(RecipientStatus.DELIVERED)

    def route(address: str, sender: str = "") -> Route:
        if address.startswith("broken"):
            raise LookupError("alias table unreadable")
        return Route(transport, "x")

    scheduler = Scheduler(
        store,
        route,
        retry_schedule=[60],
        max_lifetime=3600,
        lease_seconds=60,
        concurrency=2,
        owner="n",
        clock=clock,
    )
    queue_id = await store.enqueue(
        make_envelope("a@example.org", "ok@example.com", "broken@example.com"), MESSAGE
    )
    assert await scheduler.run_once() == 2
    message = await store.get_message(queue_id)
    assert message is not None
    assert [(r.address, r.status) for r in message.recipients] == [
        ("ok@example.com", RecipientStatus.DELIVERED),
        ("broken@example.com", RecipientStatus.DEFERRED),
    ]


async def test_concurrency_is_bounded(store: SqliteStore, clock: FakeClock) -> None:
    class Gate:
        """Holds each call until two are inside at once, so overlap is certain."""

        name = "gate"

        def __init__(self) -> None:
            self.active = 0
            self.most = 0
            self.two_inside = asyncio.Event()

        async def deliver(
            self, message: bytes, recipients: Sequence[LeasedRecipient]
        ) -> list[AttemptResult]:
            self.active += 1
            self.most = max(self.most, self.active)
            if self.active == 2:
                self.two_inside.set()
            await asyncio.wait_for(self.two_inside.wait(), 5)
            await asyncio.sleep(0)  # give a third call the chance to get in, were it allowed
            self.active -= 1
            return [AttemptResult(RecipientStatus.DELIVERED, "250 ok") for _ in recipients]

    gate = Gate()
    scheduler = make_scheduler(store, gate, clock, concurrency=2)
    for i in range(8):
        await store.enqueue(make_envelope("a@example.org", f"r@d{i}.example"), MESSAGE)
    assert await scheduler.run_once() == 8
    assert gate.most == 2


async def test_run_delivers_on_wake_and_stops(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "queue.db")
    maildir = tmp_path / "bob"
    scheduler = Scheduler(
        store,
        lambda address, sender="": Route(MaildirTransport(lambda _: maildir), "local"),
        retry_schedule=[60],
        max_lifetime=3600,
        lease_seconds=60,
        concurrency=4,
        owner="n",
        idle_poll=600,  # so only wake() can explain a prompt delivery
    )
    runner = asyncio.create_task(scheduler.run())
    try:
        for i in range(3):
            await store.enqueue(make_envelope("a@example.org", f"bob{i}@example.com"), MESSAGE)
            scheduler.wake()
        deadline = time.monotonic() + 10
        while not (maildir / "new").is_dir() or len(list((maildir / "new").iterdir())) < 3:
            assert time.monotonic() < deadline, "scheduler did not deliver after wake()"
            await asyncio.sleep(0.01)
        assert len(list((maildir / "new").iterdir())) == 3
    finally:
        await scheduler.stop()
        await asyncio.wait_for(runner, 5)
        await store.close()
    assert runner.done() and runner.exception() is None


async def test_invalid_parameters_are_refused(store: SqliteStore) -> None:
    with pytest.raises(ValueError):
        make_scheduler(store, ScriptedTransport(RecipientStatus.DELIVERED), retry_schedule=())
    with pytest.raises(ValueError):
        make_scheduler(store, ScriptedTransport(RecipientStatus.DELIVERED), concurrency=0)
    with pytest.raises(ValueError):
        Scheduler(
            store,
            lambda address, sender="": Route(ScriptedTransport(RecipientStatus.DELIVERED), "x"),
            retry_schedule=[60],
            max_lifetime=3600,
            lease_seconds=60,
            concurrency=1,
            owner="n",
            delay_warning_after=-1,
        )
