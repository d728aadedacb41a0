"""counters: the same behaviour from SqliteCounters and RedisCounters (real Redis on loopback)."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import stat
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from postgate.counters import (
    Counters,
    CountersError,
    RedisCounters,
    SqliteCounters,
    open_counters,
)

REDIS_URL = os.environ.get("POSTGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class FakeClock:
    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def redis_client_or_skip() -> aioredis.Redis:
    """A connected client; in CI an unreachable Redis fails the test, elsewhere it skips."""
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2.0)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        message = f"Redis unreachable at {REDIS_URL} ({exc}): apt-get install redis-server"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return client


async def delete_prefix(client: aioredis.Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
    if keys:
        await client.delete(*keys)


@dataclass
class Backend:
    counters: Counters
    clock: FakeClock
    name: str


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    clock = FakeClock()
    if request.param == "sqlite":
        counters: Counters = await SqliteCounters.open(tmp_path / "counters.db", clock=clock)
        try:
            yield Backend(counters, clock, "sqlite")
        finally:
            await counters.close()
        return
    client = await redis_client_or_skip()
    prefix = f"postgate-test:{uuid.uuid4().hex}:"  # parallel runs never share keys
    counters = RedisCounters(client, prefix=prefix, clock=clock)
    try:
        yield Backend(counters, clock, "redis")
    finally:
        await delete_prefix(client, prefix)
        await counters.close()


async def wait_until_count(counters: Counters, key: str, expected: int) -> int:
    """Poll (bounded) until the count drops to ``expected``; Redis expires on its own clock."""
    deadline = time.monotonic() + 5.0
    count = await counters.get(key)
    while count != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        count = await counters.get(key)
    return count


async def test_incr_counts_per_key(backend: Backend) -> None:
    counters = backend.counters
    assert [await counters.incr("a", 60.0) for _ in range(3)] == [1, 2, 3]
    assert await counters.incr("b", 60.0) == 1
    assert await counters.get("a") == 3
    assert await counters.get("b") == 1
    assert await counters.get("never") == 0


async def test_reset_clears_one_key(backend: Backend) -> None:
    counters = backend.counters
    await counters.incr("a", 60.0)
    await counters.incr("b", 60.0)
    await counters.reset("a")
    await counters.reset("absent")  # no error
    assert await counters.get("a") == 0
    assert await counters.get("b") == 1
    assert await counters.incr("a", 60.0) == 1


async def test_reset_clears_several_keys_at_once(backend: Backend) -> None:
    counters = backend.counters
    for key in ("x", "y", "z"):
        await counters.incr(key, 60.0)
    await counters.reset("x", "z", "absent")
    await counters.reset()  # nothing to do
    assert [await counters.get(key) for key in ("x", "y", "z")] == [0, 1, 0]


async def test_window_expiry_starts_over(backend: Backend) -> None:
    counters = backend.counters
    window = 0.05
    assert await counters.incr("k", window) == 1
    assert await counters.incr("k", window) == 2
    backend.clock.advance(window * 2)
    assert await wait_until_count(counters, "k", 0) == 0
    assert await counters.incr("k", window) == 1


async def test_window_is_fixed_from_first_hit(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    counters = await SqliteCounters.open(tmp_path / "c.db", clock=clock)
    try:
        await counters.incr("k", 10.0)  # window 1000..1010
        clock.advance(6.0)
        assert await counters.incr("k", 10.0) == 2  # does not move the expiry
        clock.advance(4.0)  # t=1010: the window has closed
        assert await counters.get("k") == 0
        assert await counters.incr("k", 10.0) == 1
    finally:
        await counters.close()


@pytest.mark.redis
async def test_redis_second_hit_keeps_first_expiry() -> None:
    client = await redis_client_or_skip()
    prefix = f"postgate-test:{uuid.uuid4().hex}:"
    counters = RedisCounters(client, prefix=prefix)
    try:
        await counters.incr("k", 100.0)
        await client.pexpire(f"{prefix}c:k", 50_000)  # as if 50 s had passed
        assert await counters.incr("k", 100.0) == 2
        remaining = await client.pttl(f"{prefix}c:k")
        assert 0 < remaining <= 50_000
    finally:
        await delete_prefix(client, prefix)
        await counters.close()


async def test_ban_lifecycle(backend: Backend) -> None:
    counters, clock = backend.counters, backend.clock
    now = clock()
    assert await counters.ban("addr:192.0.2.1") is None
    await counters.set_ban("addr:192.0.2.1", now + 100.0, "3 failed AUTH")
    ban = await counters.ban("addr:192.0.2.1")
    assert ban is not None
    assert (ban.key, ban.until, ban.reason) == ("addr:192.0.2.1", now + 100.0, "3 failed AUTH")
    assert ban.created_at == pytest.approx(now)
    assert [b.key for b in await counters.bans()] == ["addr:192.0.2.1"]
    assert await counters.unban("addr:192.0.2.1") is True
    assert await counters.unban("addr:192.0.2.1") is False
    assert await counters.ban("addr:192.0.2.1") is None
    assert await counters.bans() == []


async def test_ban_expires_and_leaves_the_listing(backend: Backend) -> None:
    counters, clock = backend.counters, backend.clock
    now = clock()
    await counters.set_ban("short", now + 10.0, "r1")
    await counters.set_ban("long", now + 1000.0, "r2")
    assert [b.key for b in await counters.bans()] == ["short", "long"]  # soonest first
    clock.advance(10.0)
    assert await counters.ban("short") is None
    assert [b.key for b in await counters.bans()] == ["long"]
    assert await counters.unban("short") is False  # an expired ban is no ban


async def test_set_ban_replaces(backend: Backend) -> None:
    counters, clock = backend.counters, backend.clock
    now = clock()
    await counters.set_ban("k", now + 10.0, "first")
    await counters.set_ban("k", now + 20.0, "second")
    ban = await counters.ban("k")
    assert ban is not None and (ban.until, ban.reason) == (now + 20.0, "second")
    assert len(await counters.bans()) == 1


async def test_ban_in_the_past_is_no_ban(backend: Backend) -> None:
    counters, clock = backend.counters, backend.clock
    await counters.set_ban("k", clock() - 1.0, "already over")
    assert await counters.ban("k") is None
    assert await counters.bans() == []


async def test_sqlite_file_is_shared_between_instances(tmp_path: Path) -> None:
    """What `postgate ban del` relies on: another opener of the file sees and changes bans."""
    path = tmp_path / "counters.db"
    server = await SqliteCounters.open(path)
    cli = await SqliteCounters.open(path)
    try:
        await server.set_ban("addr:192.0.2.9", time.time() + 60.0, "test")
        assert [b.key for b in await cli.bans()] == ["addr:192.0.2.9"]
        assert await cli.unban("addr:192.0.2.9") is True
        assert await server.ban("addr:192.0.2.9") is None
        results = await asyncio.gather(
            *(c.incr("shared", 60.0) for c in (server, cli) for _ in range(25))
        )
        assert sorted(results) == list(range(1, 51))  # no lost or duplicated hit
    finally:
        await server.close()
        await cli.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_sqlite_prunes_expired_rows(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    path = tmp_path / "counters.db"
    counters = await SqliteCounters.open(path, clock=clock)
    try:
        await counters.incr("old", 5.0)
        await counters.set_ban("old-ban", 1005.0, "r")
        clock.advance(10.0)
        await counters.incr("new", 5.0)
        await counters.set_ban("new-ban", 2000.0, "r")
    finally:
        await counters.close()
    with sqlite3.connect(path) as db:
        assert [r[0] for r in db.execute("SELECT key FROM counters")] == ["new"]
        assert [r[0] for r in db.execute("SELECT key FROM bans")] == ["new-ban"]


async def test_sqlite_unusable_path_is_counters_error(tmp_path: Path) -> None:
    with pytest.raises(CountersError, match="counters database"):
        await SqliteCounters.open(tmp_path / "missing-dir" / "counters.db")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_redis_unreachable_is_counters_error() -> None:
    url = f"redis://:secret@127.0.0.1:{_closed_port()}/0"
    with pytest.raises(CountersError) as raised:
        await RedisCounters.open(url)
    assert "secret" not in str(raised.value)  # no password in logs


async def test_open_counters_picks_the_backend(tmp_path: Path) -> None:
    sqlite_counters = await open_counters(tmp_path / "c.db")
    try:
        assert isinstance(sqlite_counters, SqliteCounters)
    finally:
        await sqlite_counters.close()
    with pytest.raises(CountersError):
        await open_counters(f"redis://127.0.0.1:{_closed_port()}/0")


@pytest.mark.redis
async def test_redis_prefixes_do_not_mix() -> None:
    client = await redis_client_or_skip()
    first_prefix, second_prefix = (f"postgate-test:{uuid.uuid4().hex}:" for _ in range(2))
    first = RedisCounters(client, prefix=first_prefix)
    second = RedisCounters(client, prefix=second_prefix)
    try:
        await first.set_ban("k", time.time() + 60.0, "r")
        await first.incr("c", 60.0)
        assert await second.ban("k") is None
        assert await second.bans() == []
        assert await second.get("c") == 0
    finally:
        await delete_prefix(client, first_prefix)
        await delete_prefix(client, second_prefix)
        await client.aclose()
