"""TtlCache: expiry by the injected clock, LRU bound."""

from __future__ import annotations

import pytest

from postgate.dns.cache import TtlCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entry_expires_after_ttl() -> None:
    clock = FakeClock()
    cache: TtlCache[str, int] = TtlCache(10, clock=clock)
    cache.put("a", 1, ttl=30)
    clock.now += 29.9
    assert cache.get("a") == 1
    clock.now += 0.1
    assert cache.get("a") is None
    assert len(cache) == 0


def test_zero_ttl_is_not_cached_and_replaces_old_value() -> None:
    cache: TtlCache[str, int] = TtlCache(10, clock=FakeClock())
    cache.put("a", 1, ttl=60)
    cache.put("a", 2, ttl=0)
    assert cache.get("a") is None


def test_least_recently_used_entry_is_evicted() -> None:
    cache: TtlCache[str, int] = TtlCache(2, clock=FakeClock())
    cache.put("a", 1, ttl=60)
    cache.put("b", 2, ttl=60)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3, ttl=60)
    assert len(cache) == 2
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (1, 3)


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TtlCache(0)
