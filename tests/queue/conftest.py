"""Shared helpers for the queue tests: a settable clock, envelopes, an open store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postgate.queue.model import Envelope, EnvelopeRecipient
from postgate.queue.sqlite import SqliteStore


class FakeClock:
    """A clock the test moves by hand; shared by the store and the scheduler."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_envelope(
    sender: str = "alice@example.org", *recipients: str, received_at: float = 0.0
) -> Envelope:
    addresses = recipients or ("bob@example.com",)
    return Envelope(
        sender=sender,
        recipients=tuple(EnvelopeRecipient(address=a, original=a) for a in addresses),
        client_address="192.0.2.1",
        client_helo="client.example.org",
        received_at=received_at,
    )


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
