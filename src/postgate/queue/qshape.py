"""queue.qshape — the shape of the queue: recipients by domain and age.

SYNOPSIS
    shape = build_qshape(await store.list_messages(), now=time.time())
    print(shape.format_text())
    print(shape.to_json())

DESCRIPTION
    Postfix's qshape(1) for postgate. Rows are recipient domains (the top N by
    count, after a TOTAL row); columns are age buckets whose bounds double:

                         T  5 10 20 40 80 160 320 640 1280 1280+
                  TOTAL 12  4  2  0  ...
            example.com  8  3  ...

    "T" is the row total; "5" counts recipients of messages younger than 5 minutes,
    "10" those from 5 up to 10 minutes, and so on; "1280+" is everything older.
    Age is measured from the message's arrival (received_at).

    A pure function of list_messages() output and ``now``: no I/O, no clock.

OPTIONS
    statuses        Which recipients count (default QUEUED and DEFERRED: all mail
                    still waiting; DEFERRED alone is Postfix's "qshape deferred",
                    HELD is "qshape hold").
    top             How many domain rows to show (default 20; None for all).
    first_bucket    Upper bound of the first age bucket in minutes (default 5).
    bucket_count    Number of bounded buckets (default 9, i.e. up to 1280 minutes).
    by_sender       Group by sender domain instead (Postfix qshape -s).

SEE ALSO
    queue.store (list_messages), cli (postgate qshape)
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from postgate.queue.model import QueuedMessageSummary, RecipientStatus

DEFAULT_STATUSES = (RecipientStatus.QUEUED, RecipientStatus.DEFERRED)


@dataclass(frozen=True, slots=True)
class QShapeRow:
    domain: str
    total: int
    counts: tuple[int, ...]  # one per bucket, oldest last


@dataclass(frozen=True, slots=True)
class QShape:
    statuses: tuple[RecipientStatus, ...]
    bounds: tuple[int, ...]  # upper bounds in minutes; the last bucket is open-ended
    total: QShapeRow
    rows: tuple[QShapeRow, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return (*(str(b) for b in self.bounds), f"{self.bounds[-1]}+")

    def format_text(self) -> str:
        header = ["", "T", *self.labels]
        lines = [header] + [
            [row.domain, str(row.total), *(str(c) for c in row.counts)]
            for row in (self.total, *self.rows)
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        return (
            "\n".join(
                " ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True))
                for line in lines
            )
            + "\n"
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "statuses": [s.value for s in self.statuses],
                "buckets": list(self.labels),
                "total": {"total": self.total.total, "counts": list(self.total.counts)},
                "domains": [
                    {"domain": r.domain, "total": r.total, "counts": list(r.counts)}
                    for r in self.rows
                ],
            }
        )


def _domain(address: str) -> str:
    if not address:
        return "MAILER-DAEMON"  # the null sender, as Postfix shows it
    _, at, domain = address.rpartition("@")
    return domain.lower() if at else address.lower()


def _bucket(age_minutes: float, bounds: Sequence[int]) -> int:
    for index, bound in enumerate(bounds):
        if age_minutes < bound:
            return index
    return len(bounds)


def build_qshape(
    messages: Sequence[QueuedMessageSummary],
    now: float,
    *,
    statuses: Collection[RecipientStatus] = DEFAULT_STATUSES,
    top: int | None = 20,
    first_bucket: int = 5,
    bucket_count: int = 9,
    by_sender: bool = False,
) -> QShape:
    if first_bucket < 1 or bucket_count < 1:
        raise ValueError("first_bucket and bucket_count must be at least 1")
    bounds = tuple(first_bucket * 2**i for i in range(bucket_count))
    width = len(bounds) + 1
    wanted = frozenset(statuses)
    per_domain: dict[str, list[int]] = {}
    for message in messages:
        # Clock skew between nodes can make an age negative: count it as newest.
        bucket = _bucket(max(0.0, now - message.received_at) / 60.0, bounds)
        for recipient in message.recipients:
            if recipient.status not in wanted:
                continue
            domain = _domain(message.sender if by_sender else recipient.address)
            counts = per_domain.get(domain)
            if counts is None:
                counts = per_domain[domain] = [0] * width
            counts[bucket] += 1
    rows = sorted(
        (QShapeRow(domain, sum(counts), tuple(counts)) for domain, counts in per_domain.items()),
        key=lambda row: (-row.total, row.domain),
    )
    totals = tuple(sum(row.counts[i] for row in rows) for i in range(width))
    return QShape(
        statuses=tuple(s for s in RecipientStatus if s in wanted),
        bounds=bounds,
        total=QShapeRow("TOTAL", sum(totals), totals),
        rows=tuple(rows if top is None else rows[:top]),
    )
