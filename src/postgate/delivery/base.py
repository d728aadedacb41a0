"""delivery.base — what every transport promises.

SYNOPSIS
    class Transport(Protocol):
        name: str
        async def deliver(message, recipients) -> list[AttemptResult]
    Route(transport, destination)
    deferred(reply, enhanced_status, remote_host) -> AttemptResult
    bounced(reply, enhanced_status, remote_host) -> AttemptResult

DESCRIPTION
    A transport does one kind of delivery (remote SMTP, LMTP, Maildir, pipe) for a
    group of recipients of ONE message that share a destination, and reports one
    AttemptResult per recipient, in the order given: DELIVERED, DEFERRED (try
    later) or BOUNCED (give up). It never records anything itself: the scheduler
    hands the results to the queue (queue.store.record_attempt).

    A transport should turn its expected failures into DEFERRED results. The
    scheduler still treats an exception, or a wrong number of results, as DEFERRED
    with 4.3.0 for every recipient of the call, so a bug delays mail but never
    loses it.

    Route is what the address resolver answers for one final address: which
    transport, and the destination key grouping recipients one transport call may
    take together (one Maildir, one remote domain, one LMTP server).

SEE ALSO
    queue.scheduler, delivery.maildir, routing
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from postgate.queue.model import AttemptResult, LeasedRecipient, RecipientStatus


class Transport(Protocol):
    name: str

    async def deliver(
        self, message: bytes, recipients: Sequence[LeasedRecipient]
    ) -> list[AttemptResult]: ...


@dataclass(frozen=True)
class Route:
    transport: Transport
    destination: str


def deferred(reply: str, enhanced_status: str = "4.3.0", remote_host: str = "") -> AttemptResult:
    """A temporary failure: the scheduler sets the next attempt time."""
    return AttemptResult(
        status=RecipientStatus.DEFERRED,
        reply=reply,
        enhanced_status=enhanced_status,
        remote_host=remote_host,
    )


def bounced(reply: str, enhanced_status: str, remote_host: str = "") -> AttemptResult:
    """A permanent failure: the recipient is final, a DSN follows (part 2)."""
    return AttemptResult(
        status=RecipientStatus.BOUNCED,
        reply=reply,
        enhanced_status=enhanced_status,
        remote_host=remote_host,
    )
