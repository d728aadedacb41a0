"""qshape on known ages: buckets, rows, statuses, text and JSON."""

from __future__ import annotations

import json

import pytest

from postgate.queue.model import QueuedMessageSummary, QueuedRecipientSummary, RecipientStatus
from postgate.queue.qshape import build_qshape

NOW = 1_700_000_000.0
QUEUED = RecipientStatus.QUEUED
DEFERRED = RecipientStatus.DEFERRED
HELD = RecipientStatus.HELD


def message(
    age_minutes: float, *recipients: tuple[str, RecipientStatus], sender: str = "a@example.org"
) -> QueuedMessageSummary:
    return QueuedMessageSummary(
        queue_id=f"Q{age_minutes}",
        sender=sender,
        size=100,
        received_at=NOW - age_minutes * 60,
        recipients=tuple(
            QueuedRecipientSummary(i, address, address, status, 0, None, "")
            for i, (address, status) in enumerate(recipients)
        ),
    )


MESSAGES = [
    message(0, ("a@gmail.com", QUEUED), ("b@Gmail.com", QUEUED)),  # bucket "5"
    message(4.99, ("c@yahoo.com", QUEUED)),  # still "5"
    message(5, ("d@gmail.com", DEFERRED)),  # "10": 5 <= age < 10
    message(30, ("e@gmail.com", DEFERRED)),  # "40"
    message(1279, ("f@yahoo.com", DEFERRED)),  # "1280"
    message(1280, ("g@yahoo.com", DEFERRED), ("h@example.net", HELD)),  # "1280+"
    message(99999, ("i@example.net", DEFERRED)),  # "1280+"
]


def test_buckets_on_known_ages() -> None:
    shape = build_qshape(MESSAGES, NOW)
    assert shape.labels == ("5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+")
    assert shape.total.total == 8  # the held recipient is not counted by default
    assert shape.total.counts == (3, 1, 0, 1, 0, 0, 0, 0, 1, 2)
    rows = {row.domain: row for row in shape.rows}
    assert [row.domain for row in shape.rows] == ["gmail.com", "yahoo.com", "example.net"]
    assert rows["gmail.com"].counts == (2, 1, 0, 1, 0, 0, 0, 0, 0, 0)
    assert rows["yahoo.com"].counts == (1, 0, 0, 0, 0, 0, 0, 0, 1, 1)
    assert rows["example.net"].total == 1


def test_status_selection() -> None:
    deferred = build_qshape(MESSAGES, NOW, statuses=[DEFERRED])
    assert deferred.total.total == 5
    held = build_qshape(MESSAGES, NOW, statuses=[HELD])
    assert [(r.domain, r.total) for r in held.rows] == [("example.net", 1)]
    assert held.total.counts[-1] == 1


def test_top_n_keeps_the_total() -> None:
    shape = build_qshape(MESSAGES, NOW, top=1)
    assert [r.domain for r in shape.rows] == ["gmail.com"]
    assert shape.total.total == 8


def test_custom_buckets_and_sender_grouping() -> None:
    shape = build_qshape(MESSAGES, NOW, first_bucket=10, bucket_count=3, by_sender=True)
    assert shape.labels == ("10", "20", "40", "40+")
    assert [(r.domain, r.counts) for r in shape.rows] == [("example.org", (4, 0, 1, 3))]


def test_format_text_is_right_aligned_with_total_first() -> None:
    shape = build_qshape(
        [message(0, ("a@gmail.com", QUEUED)), message(7, ("b@x.org", QUEUED))], NOW, bucket_count=2
    )
    assert shape.format_text() == (
        "          T 5 10 10+\n    TOTAL 2 1  1   0\ngmail.com 1 1  0   0\n    x.org 1 0  1   0\n"
    )


def test_to_json() -> None:
    shape = build_qshape(MESSAGES, NOW, statuses=[DEFERRED], top=1)
    data = json.loads(shape.to_json())
    assert data["statuses"] == ["deferred"]
    assert data["buckets"][-1] == "1280+"
    assert data["total"]["total"] == 5
    assert data["domains"] == [
        {"domain": "gmail.com", "total": 2, "counts": [0, 1, 0, 1, 0, 0, 0, 0, 0, 0]}
    ]


def test_empty_queue_and_bad_arguments() -> None:
    shape = build_qshape([], NOW)
    assert shape.total.total == 0 and shape.rows == ()
    with pytest.raises(ValueError):
        build_qshape([], NOW, bucket_count=0)
