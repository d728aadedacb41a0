"""queue — the durable store, the scheduler, the status log and qshape.

SYNOPSIS
    store = await open_store("sqlite:///var/spool/postgate/queue.db")

SEE ALSO
    queue.store (the Store protocol), queue.sqlite, queue.scheduler, queue.qshape
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from postgate.queue.store import QueueError

if TYPE_CHECKING:
    from postgate.queue.sqlite import SqliteStore


async def open_store(url: str) -> SqliteStore:
    """Open the queue named by ``url``: ``sqlite://<path>`` (so ``sqlite:///abs/q.db``
    is absolute) or a bare file path. MariaDB and PostgreSQL come later."""
    # Imported here so that importing postgate.queue.model stays free of sqlite3.
    from postgate.queue.sqlite import SqliteStore

    scheme, sep, rest = url.partition("://")
    if not sep:
        return await SqliteStore.open(Path(url))
    if scheme == "sqlite" and rest:
        return await SqliteStore.open(Path(rest))
    raise QueueError(f"unsupported queue url {url!r} (only sqlite://<path> so far)")


__all__ = ["QueueError", "open_store"]
