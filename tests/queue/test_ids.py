"""Queue ids: short, unique, time-sortable, safe in file names and headers."""

from __future__ import annotations

import re

import pytest

from postgate.queue.ids import QUEUE_ID_LENGTH, QueueIdGenerator, is_queue_id, queue_id_time


def test_ids_are_unique_and_safe() -> None:
    generator = QueueIdGenerator(clock=lambda: 1_700_000_000.0)  # all in one millisecond
    ids = [generator.new() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{16}", i) for i in ids)
    assert QUEUE_ID_LENGTH == 16
    assert all(is_queue_id(i) for i in ids[:10])


def test_ids_sort_by_time_and_decode_it() -> None:
    now = [1_700_000_000.0]
    generator = QueueIdGenerator(clock=lambda: now[0])
    earlier = generator.new()
    now[0] += 0.002
    later = generator.new()
    assert earlier < later
    assert queue_id_time(earlier) == 1_700_000_000.0
    assert queue_id_time(later) == pytest.approx(1_700_000_000.002, abs=0.0011)


def test_two_generators_differ() -> None:
    a = QueueIdGenerator(clock=lambda: 1.0)
    b = QueueIdGenerator(clock=lambda: 1.0)
    assert {a.new() for _ in range(100)}.isdisjoint({b.new() for _ in range(100)})


def test_is_queue_id_rejects_other_text() -> None:
    assert not is_queue_id("")
    assert not is_queue_id("../../etc/passwd")
    assert not is_queue_id("0123456789ABCDEI")  # I is not in the alphabet
