"""mailauth.verdict_cache — recent verdicts of a check, by the question asked.

A busy MX asks the same questions many times a second (the same sender from the same
address, the same From domain with the same SPF and DKIM results), and evaluating
again costs more than the rest of accepting a small message, though every DNS answer
is in the resolver's cache. The key must hold everything the check reads besides
DNS, so a hit is the answer the evaluation would give with the same DNS. ``ttl``
bounds how long a changed record goes unnoticed beyond the resolver's own cache.
A temporary failure is never kept: the next
message asks again, as the resolver never caches a temporary failure. Subclasses
say which verdicts are worth keeping (``keeps``) and how a question becomes a key.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from postgate.dns.cache import TtlCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class VerdictCache(Generic[K, V]):
    def __init__(
        self,
        ttl: float = 30.0,
        max_entries: int = 4096,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._entries: TtlCache[K, V] = TtlCache(max_entries, clock=clock)

    def keeps(self, verdict: V) -> bool:
        """Whether ``verdict`` may be remembered (not a temporary failure)."""
        raise NotImplementedError

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def put(self, key: K, verdict: V) -> None:
        if self.keeps(verdict):
            self._entries.put(key, verdict, self._ttl)

    async def remembered(self, key: K, check: Callable[[], Awaitable[V]]) -> V:
        """The remembered verdict for ``key``, or ``check()``'s, remembered."""
        known = self.get(key)
        if known is None:
            known = await check()
            self.put(key, known)
        return known
