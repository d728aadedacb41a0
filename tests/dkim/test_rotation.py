"""dkim.rotation: the pure state machine, and the whole rotation against a real NSD."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from pathlib import Path

import dkim.util
import pytest

from postgate.dkim.keys import Algorithm, DkimKey, KeyState, KeyStore
from postgate.dkim.manager import KeyManager, run_rotation
from postgate.dkim.rotation import (
    DAY,
    EventKind,
    RotationPolicy,
    Visibility,
    plan_advance,
)
from postgate.dkim.signer import DkimSigner
from postgate.dkim.verify import DkimOutcome, verify_dkim
from tests.dkim.helpers import MESSAGE, fresh_resolver, zone_txt
from tests.fixtures.nsd import NsdServer, Record, Zones

T0 = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC).timestamp()
POLICY = RotationPolicy()


def key(selector: str, state: KeyState, **times: float) -> DkimKey:
    return DkimKey(
        domain="example.test",
        selector=selector,
        algorithm=Algorithm.ED25519,
        state=state,
        created_at=times.pop("created_at", T0),
        public_key="AAAA",
        **times,
    )


def test_plan_pending_not_visible_waits_and_says_what_to_publish() -> None:
    keys = [key("old", KeyState.ACTIVE, activated_at=T0), key("new", KeyState.PENDING)]
    new_keys, events, due = plan_advance(keys, {"new": Visibility.ABSENT}, T0 + DAY, POLICY)
    assert new_keys == keys and due == []
    assert [(e.kind, e.selector) for e in events] == [(EventKind.WAITING, "new")]
    assert 'new._domainkey.example.test. IN TXT "v=DKIM1; k=ed25519; p=AAAA"' in events[0].message


def test_plan_visible_pending_activates_and_old_starts_retiring() -> None:
    keys = [key("old", KeyState.ACTIVE, activated_at=T0), key("new", KeyState.PENDING)]
    now = T0 + DAY
    new_keys, events, _ = plan_advance(keys, {"new": Visibility.MATCHES}, now, POLICY)
    by_name = {k.selector: k for k in new_keys}
    assert by_name["new"].state is KeyState.ACTIVE and by_name["new"].activated_at == now
    assert by_name["old"].state is KeyState.RETIRING
    assert by_name["old"].retire_at == now + 7 * DAY
    assert {e.kind for e in events} == {EventKind.ACTIVATED, EventKind.RETIRING}


def test_plan_retires_after_the_overlap_only() -> None:
    keys = [key("old", KeyState.RETIRING, retire_at=T0 + 7 * DAY)]
    assert plan_advance(keys, {}, T0 + 7 * DAY - 1, POLICY)[0] == keys
    new_keys, events, _ = plan_advance(keys, {}, T0 + 7 * DAY, POLICY)
    assert new_keys[0].state is KeyState.RETIRED
    assert "may be removed now" in events[0].message


def test_plan_mismatch_and_dns_error_keep_the_key_pending() -> None:
    keys = [key("a", KeyState.PENDING), key("b", KeyState.PENDING)]
    seen = {"a": Visibility.MISMATCH, "b": Visibility.DNS_ERROR}
    new_keys, events, _ = plan_advance(keys, seen, T0, POLICY)
    assert new_keys == keys
    assert [e.kind for e in events] == [EventKind.MISMATCH, EventKind.DNS_ERROR]


def test_plan_schedules_rotation_of_old_active_keys_unless_one_is_pending() -> None:
    old = key("old", KeyState.ACTIVE, activated_at=T0)
    assert plan_advance([old], {}, T0 + 89 * DAY, POLICY)[2] == []
    assert plan_advance([old], {}, T0 + 90 * DAY, POLICY)[2] == [Algorithm.ED25519]
    waiting = [old, key("new", KeyState.PENDING)]
    assert plan_advance(waiting, {}, T0 + 90 * DAY, POLICY)[2] == []
    never = RotationPolicy(rotation_interval=0)
    assert plan_advance([old], {}, T0 + 900 * DAY, never)[2] == []


def txt_records(keys: list[DkimKey]) -> list[Record]:
    return [(f"{k.selector}._domainkey", "TXT", zone_txt(k.txt_value)) for k in keys]


def zones(records: list[Record]) -> Zones:
    return {"example.test": [("@", "A", "192.0.2.1"), *records]}


def signed_selectors(signer: DkimSigner) -> list[str]:
    headers = signer.sign(MESSAGE)
    fields = [f for f in headers.split(b"DKIM-Signature:") if f.strip()]
    return [dkim.util.parse_tag_value(f)[b"s"].decode() for f in fields]


@pytest.mark.nsd
async def test_rotation_scenario_against_nsd(
    nsd_server: Callable[[Zones], NsdServer], tmp_path: Path
) -> None:
    server: NsdServer = nsd_server(zones([]))
    store = KeyStore(tmp_path / "dkim")
    manager = KeyManager(store, clock=lambda: T0)
    signer = DkimSigner(store)

    first = manager.keygen("example.test")
    assert signed_selectors(signer) == []  # pending keys never sign
    events = await manager.advance("example.test", fresh_resolver(server), T0)
    assert {e.kind for e in events} == {EventKind.WAITING}

    await asyncio.to_thread(server.update_zones, zones(txt_records(first)))
    events = await manager.advance("example.test", fresh_resolver(server), T0 + 60)
    assert {e.kind for e in events} == {EventKind.ACTIVATED}
    assert signed_selectors(signer) == ["s202612r", "s202612e"]

    second = manager.rotate("example.test")
    assert [k.selector for k in second] == ["s202612r2", "s202612e2"]
    await manager.advance("example.test", fresh_resolver(server), T0 + DAY)
    assert signed_selectors(signer) == ["s202612r", "s202612e"]  # TXT not yet published
    old_signed = signer.sign(MESSAGE) + MESSAGE

    await asyncio.to_thread(server.update_zones, zones(txt_records(first + second)))
    switch = T0 + 2 * DAY
    events = await manager.advance("example.test", fresh_resolver(server), switch)
    assert sorted(e.kind for e in events) == sorted(
        [EventKind.ACTIVATED] * 2 + [EventKind.RETIRING] * 2
    )
    assert signed_selectors(signer) == ["s202612r2", "s202612e2"]
    states = {k.selector: k.state for k in store.keys("example.test")}
    assert states["s202612r"] is KeyState.RETIRING and states["s202612e"] is KeyState.RETIRING
    # During the overlap, mail signed with the old keys still verifies.
    results = await verify_dkim(old_signed, fresh_resolver(server))
    assert [r.result for r in results] == [DkimOutcome.PASS, DkimOutcome.PASS]
    new_signed = signer.sign(MESSAGE) + MESSAGE
    results = await verify_dkim(new_signed, fresh_resolver(server))
    assert [(r.result, r.selector) for r in results] == [
        (DkimOutcome.PASS, "s202612r2"),
        (DkimOutcome.PASS, "s202612e2"),
    ]

    await manager.advance("example.test", fresh_resolver(server), switch + 7 * DAY - 60)
    assert store.keys("example.test")[0].state is KeyState.RETIRING
    events = await manager.advance("example.test", fresh_resolver(server), switch + 7 * DAY)
    assert [e.kind for e in events] == [EventKind.RETIRED, EventKind.RETIRED]
    states = {k.selector: k.state for k in store.keys("example.test")}
    assert states == {
        "s202612r": KeyState.RETIRED,
        "s202612e": KeyState.RETIRED,
        "s202612r2": KeyState.ACTIVE,
        "s202612e2": KeyState.ACTIVE,
    }


@pytest.mark.nsd
async def test_wrong_key_published_keeps_pending(
    nsd_server: Callable[[Zones], NsdServer], tmp_path: Path
) -> None:
    store = KeyStore(tmp_path / "dkim")
    manager = KeyManager(store, clock=lambda: T0)
    (pending,) = manager.keygen("example.test", algorithms=["ed25519"])
    wrong = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    server: NsdServer = nsd_server(
        zones([(f"{pending.selector}._domainkey", "TXT", zone_txt(wrong))])
    )
    events = await manager.advance("example.test", fresh_resolver(server), T0)
    assert [e.kind for e in events] == [EventKind.MISMATCH]
    assert store.active_keys("example.test") == []


@pytest.mark.nsd
async def test_run_rotation_loop_advances_all_domains_until_stopped(
    nsd_server: Callable[[Zones], NsdServer], tmp_path: Path
) -> None:
    store = KeyStore(tmp_path / "dkim")
    manager = KeyManager(store)
    keys = manager.keygen("example.test", algorithms=["ed25519"])
    server: NsdServer = nsd_server(zones(txt_records(keys)))
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_rotation(manager, fresh_resolver(server), interval=0.05, stop=stop)
    )
    try:
        async with asyncio.timeout(10):
            while not store.active_keys("example.test"):
                await asyncio.sleep(0.02)  # polling a condition, bounded by the timeout
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
    assert task.done() and task.exception() is None
    assert store.active_keys("example.test")[0].selector == keys[0].selector
