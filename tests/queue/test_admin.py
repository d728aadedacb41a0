"""Operator actions: hold, release, requeue, delete, by each kind of selector."""

from __future__ import annotations

import pytest

from postgate.queue.admin import Selector
from postgate.queue.model import AttemptResult, RecipientStatus
from postgate.queue.sqlite import SqliteStore
from tests.queue.conftest import FakeClock, make_envelope

MESSAGE = b"Subject: x\r\n\r\ny\r\n"


async def statuses(store: SqliteStore) -> dict[str, RecipientStatus]:
    return {r.address: r.status for m in await store.list_messages() for r in m.recipients}


@pytest.fixture
async def queue_ids(store: SqliteStore) -> list[str]:
    return [
        await store.enqueue(
            make_envelope("alice@example.org", "bob@example.com", "carol@Example.NET"), MESSAGE
        ),
        await store.enqueue(make_envelope("dave@example.org", "erin@example.com"), MESSAGE),
        await store.enqueue(make_envelope("", "frank@sub.example.com"), MESSAGE),
    ]


async def test_empty_selector_matches_nothing(store: SqliteStore, queue_ids: list[str]) -> None:
    assert await store.hold(Selector()) == 0
    assert await store.delete(Selector()) == 0
    assert len(await store.list_messages()) == 3


async def test_hold_by_recipient_domain_is_exact_and_case_insensitive(
    store: SqliteStore, queue_ids: list[str]
) -> None:
    assert await store.hold(Selector(recipient_domain="EXAMPLE.com")) == 2
    current = await statuses(store)
    assert current["bob@example.com"] is RecipientStatus.HELD
    assert current["erin@example.com"] is RecipientStatus.HELD
    # A subdomain is another domain; other domains untouched.
    assert current["frank@sub.example.com"] is RecipientStatus.QUEUED
    assert current["carol@Example.NET"] is RecipientStatus.QUEUED


async def test_held_recipients_are_not_leased_until_released(
    store: SqliteStore, clock: FakeClock, queue_ids: list[str]
) -> None:
    assert await store.hold(Selector(queue_id=queue_ids[0])) == 2
    leased = await store.lease_due(clock.now, 100, 60, "A")
    assert {r.queue_id for r in leased} == {queue_ids[1], queue_ids[2]}
    assert await store.next_due_at() == clock.now + 60  # only the leased ones remain due

    clock.advance(10)
    assert await store.release(Selector(queue_id=queue_ids[0])) == 2
    assert await store.release(Selector(queue_id=queue_ids[0])) == 0  # nothing held any more
    again = await store.lease_due(clock.now, 100, 60, "A")
    assert {r.queue_id for r in again} == {queue_ids[0]}


async def test_hold_during_an_attempt_survives_a_deferral(
    store: SqliteStore, clock: FakeClock, queue_ids: list[str]
) -> None:
    [leased] = [
        r for r in await store.lease_due(clock.now, 100, 60, "A") if r.address == "erin@example.com"
    ]
    assert await store.hold(Selector(recipient="ERIN@example.com")) == 1
    await store.record_attempt(
        leased, AttemptResult(RecipientStatus.DEFERRED, "451 later", next_attempt_at=clock.now + 5)
    )
    assert (await statuses(store))["erin@example.com"] is RecipientStatus.HELD


async def test_requeue_by_sender_makes_deferred_mail_due_now(
    store: SqliteStore, clock: FakeClock, queue_ids: list[str]
) -> None:
    for leased in await store.lease_due(clock.now, 100, 60, "A"):
        await store.record_attempt(
            leased,
            AttemptResult(RecipientStatus.DEFERRED, "451 later", next_attempt_at=clock.now + 3600),
        )
    clock.advance(1)
    assert await store.requeue(Selector(sender="Alice@example.org")) == 2
    due = await store.lease_due(clock.now, 100, 60, "A")
    assert {r.queue_id for r in due} == {queue_ids[0]}
    # Leased recipients are being delivered right now: requeue leaves them alone.
    assert await store.requeue(Selector(sender="alice@example.org")) == 0


async def test_requeue_by_null_sender(store: SqliteStore, queue_ids: list[str]) -> None:
    assert await store.requeue(Selector(sender="")) == 1


async def test_delete_logs_each_recipient_and_removes_the_message(
    store: SqliteStore, clock: FakeClock, queue_ids: list[str]
) -> None:
    assert await store.delete(Selector(queue_id=queue_ids[0])) == 2
    assert await store.get_message(queue_ids[0]) is None
    log = await store.status_log(queue_ids[0])
    assert {(e.address, e.status) for e in log} == {
        ("bob@example.com", RecipientStatus.DELETED),
        ("carol@Example.NET", RecipientStatus.DELETED),
    }
    assert await store.delete(Selector(queue_id=queue_ids[0])) == 0


async def test_delete_one_recipient_keeps_the_others(
    store: SqliteStore, queue_ids: list[str]
) -> None:
    assert await store.delete(Selector(recipient="bob@example.com")) == 1
    message = await store.get_message(queue_ids[0])
    assert message is not None
    assert {r.address: r.status for r in message.recipients} == {
        "bob@example.com": RecipientStatus.DELETED,
        "carol@Example.NET": RecipientStatus.QUEUED,
    }


async def test_selector_fields_combine_with_and(store: SqliteStore, queue_ids: list[str]) -> None:
    assert (
        await store.hold(Selector(sender="dave@example.org", recipient_domain="example.net")) == 0
    )
    assert (
        await store.hold(Selector(sender="dave@example.org", recipient_domain="example.com")) == 1
    )


async def test_everything_selector(store: SqliteStore, queue_ids: list[str]) -> None:
    assert await store.delete(Selector.everything()) == 4
    assert await store.list_messages() == []


async def test_domain_selector_treats_like_wildcards_literally(store: SqliteStore) -> None:
    await store.enqueue(make_envelope("a@example.org", "x@exampleXcom"), MESSAGE)
    assert await store.hold(Selector(recipient_domain="example_com")) == 0
    assert await store.hold(Selector(recipient_domain="%")) == 0


async def test_mail_enqueued_on_hold_waits_for_release(
    store: SqliteStore, clock: FakeClock
) -> None:
    held_id = await store.enqueue(
        make_envelope("alice@example.org", "bob@example.com", "carol@example.net"),
        MESSAGE,
        hold=True,
    )
    free_id = await store.enqueue(make_envelope("dave@example.org", "erin@example.com"), MESSAGE)
    current = await statuses(store)
    assert current["bob@example.com"] is RecipientStatus.HELD
    assert current["carol@example.net"] is RecipientStatus.HELD
    assert current["erin@example.com"] is RecipientStatus.QUEUED
    assert {r.queue_id for r in await store.lease_due(clock.now, 100, 60, "A")} == {free_id}

    assert await store.release(Selector.everything()) == 2
    again = await store.lease_due(clock.now, 100, 60, "A")
    assert {r.address for r in again} == {"bob@example.com", "carol@example.net"}
    assert {r.queue_id for r in again} == {held_id}
