"""queue.admin — operator actions on queued mail.

SYNOPSIS
    selector = Selector(recipient_domain="example.com")
    count = await store.hold(selector)       # QUEUED/DEFERRED -> HELD
    count = await store.release(selector)    # HELD -> QUEUED, due now
    count = await store.requeue(selector)    # QUEUED/DEFERRED due now ("flush")
    count = await store.delete(selector)     # any non-final -> DELETED

DESCRIPTION
    What ``postgate queue hold|release|requeue|delete`` and the admin API do. Each
    action picks recipients with a Selector (all given fields must match) and
    returns how many recipients it changed. An empty Selector matches nothing, so a
    forgotten argument never empties the whole queue; ``Selector.everything()`` is
    the explicit way to say "all".

    Deleting writes one status-log row per recipient (status DELETED) like any other
    final outcome (invariant 3), and removes messages whose recipients are then all
    final.

    Recipients that a delivery agent holds a live lease on keep that lease: HOLD
    takes effect after the attempt (a DEFERRED result leaves them HELD), RELEASE
    makes them due when the lease runs out, REQUEUE skips them (they are being
    delivered right now).

SEE ALSO
    queue.store, queue.sqlite, cli
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Selector:
    """Which recipients an operator action applies to. Fields combine with AND.

    Addresses and domains compare ASCII case-insensitively (operators type them
    by hand); ``sender=""`` selects the null sender ``<>``. ``recipient_domain``
    matches the part after the last '@' exactly: a subdomain is another domain.
    """

    queue_id: str | None = None
    sender: str | None = None
    recipient: str | None = None
    recipient_domain: str | None = None
    all: bool = False

    @classmethod
    def everything(cls) -> Selector:
        return cls(all=True)

    def is_empty(self) -> bool:
        return not self.all and (
            self.queue_id is None
            and self.sender is None
            and self.recipient is None
            and self.recipient_domain is None
        )


class QueueAdmin(Protocol):
    async def hold(self, selector: Selector) -> int: ...

    async def release(self, selector: Selector) -> int: ...

    async def requeue(self, selector: Selector) -> int: ...

    async def delete(self, selector: Selector) -> int: ...
