"""dns.cache — a small, bounded, TTL-respecting cache for DNS answers.

SYNOPSIS
    cache: TtlCache[K, V] = TtlCache(max_entries=4096, clock=time.monotonic)
    cache.put(key, value, ttl)
    value = cache.get(key)          # None when absent or expired

DESCRIPTION
    One cache belongs to one ``Resolver`` instance (no module-level state). Entries
    expire after their TTL as measured by the injected monotonic clock. When full,
    the least recently used entry is evicted, so memory stays bounded whatever a
    hostile zone returns.

SEE ALSO
    dns.resolver
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """LRU cache whose entries also expire after a per-entry TTL (seconds)."""

    def __init__(
        self, max_entries: int = 4096, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if self._clock() >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds; a TTL of zero or less is not cached
        (RFC 1035 3.2.1: TTL 0 means "use only for this transaction")."""
        if ttl <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
