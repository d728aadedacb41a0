"""counters — shared counters and bans for lockout and rate limits: SQLite or Redis.

SYNOPSIS
    counters = await open_counters("/var/lib/postgate/counters.db")   # or "redis://host/0"
    failures = await counters.incr("auth:fail:addr:192.0.2.7", window=900.0)
    await counters.set_ban("addr:192.0.2.7", until=now + 900.0, reason="3 failed AUTH")
    ban = await counters.ban("addr:192.0.2.7")        # Ban(...) while live, else None
    await counters.unban("addr:192.0.2.7")            # `postgate ban del` does this
    await counters.close()

DESCRIPTION
    One interface (``Counters``) with two implementations. ``SqliteCounters`` is the
    one-node default: a small SQLite file in WAL mode, so ``postgate ban list|del`` in
    another process reads and changes the same bans the server checks. ``RedisCounters``
    lets several nodes share counters and bans.

WINDOWS
    ``incr`` counts in a FIXED window that opens at the first hit: the first increment
    sets count 1 and an expiry ``window`` seconds later; later increments add 1 without
    moving the expiry; once it has passed the next increment starts again at 1. That is
    what INCR + EXPIRE gives in Redis, and the SQLite file does the same. A fixed window
    may let through up to 2x the limit across a window boundary; for AUTH lockout that
    slack is harmless (the ban then lasts ban_time regardless).

    Clocks: SQLite windows and all ban deadlines use the injected ``clock``. Redis
    windows use the Redis server's clock (PEXPIRE), so nodes with skewed clocks still
    share one window; ban deadlines are absolute times chosen by the caller, compared
    with the caller's clock, and also given to Redis as a TTL so they clean themselves up.

EXPIRY
    Expired counters and bans are ignored by every read and pruned on writes (SQLite)
    or by their TTL (Redis; the listing set is pruned by ``bans()``).

CONCURRENCY
    SQLite calls block, so they run in a single worker thread owning the connection,
    never on the event loop. They are tiny writes on the AUTH failure path and one
    indexed read per AUTH attempt, not per message, so one thread is plenty and keeps
    the connection single-threaded. ``incr`` is one UPSERT statement, atomic across
    processes sharing the file.

DIAGNOSTICS
    CountersError for an unreachable Redis or an unusable SQLite file; the lockout turns
    it into a 454 4.7.0 temporary failure.

SEE ALSO
    policy.lockout (AUTH lockout), cli.ban_cmd (`postgate ban list|del`)
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from postgate.sqlite_file import open_private_database

Clock = Callable[[], float]
_T = TypeVar("_T")


class CountersError(Exception):
    """The counters backend is unreachable or unusable; the message names it."""


@dataclass(frozen=True)
class Ban:
    """A live ban: ``key`` is refused until ``until`` (Unix time) for ``reason``."""

    key: str
    until: float
    reason: str
    created_at: float


class Counters(Protocol):
    async def incr(self, key: str, window: float) -> int:
        """Count one hit in the fixed window described in the module docstring; returns
        the count including this hit."""
        ...

    async def get(self, key: str) -> int:
        """The count in the current window (0 when absent or expired)."""
        ...

    async def reset(self, *keys: str) -> None:
        """Forget these counters (absent ones are fine)."""
        ...

    async def set_ban(self, key: str, until: float, reason: str) -> None:
        """Ban ``key`` until ``until``; replaces an existing ban on the same key."""
        ...

    async def ban(self, key: str) -> Ban | None:
        """The live ban on ``key``, or None."""
        ...

    async def bans(self) -> list[Ban]:
        """All live bans, soonest-ending first."""
        ...

    async def unban(self, key: str) -> bool:
        """Lift a ban; False when there was no live ban on ``key``."""
        ...

    async def close(self) -> None: ...


async def open_counters(location: str | Path, *, clock: Clock = time.time) -> Counters:
    """A Redis URL (``redis://`` / ``rediss://`` / ``unix://``) opens RedisCounters;
    anything else is the path of a SQLite file."""
    text = str(location)
    if text.startswith(("redis://", "rediss://", "unix://")):
        return await RedisCounters.open(text, clock=clock)
    return await SqliteCounters.open(Path(text), clock=clock)


# ---------------------------------------------------------------------------------------------
# SQLite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    key        TEXT PRIMARY KEY NOT NULL,
    count      INTEGER NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS counters_expiry ON counters (expires_at);
CREATE TABLE IF NOT EXISTS bans (
    key        TEXT PRIMARY KEY NOT NULL,
    until      REAL NOT NULL,
    reason     TEXT NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;
"""

# One statement, so two processes incrementing the same key cannot lose a hit.
_INCR = """
INSERT INTO counters (key, count, expires_at) VALUES (:key, 1, :expires)
ON CONFLICT (key) DO UPDATE SET
    count = CASE WHEN counters.expires_at <= :now THEN 1 ELSE counters.count + 1 END,
    expires_at = CASE WHEN counters.expires_at <= :now
                      THEN excluded.expires_at ELSE counters.expires_at END
RETURNING count
"""


class SqliteCounters:
    """Counters and bans in one SQLite file. Build with ``SqliteCounters.open``."""

    def __init__(
        self, connection: sqlite3.Connection, executor: ThreadPoolExecutor, path: Path, clock: Clock
    ) -> None:
        self._db = connection
        self._executor = executor
        self._path = path
        self._clock = clock

    @classmethod
    async def open(cls, path: Path, *, clock: Clock = time.time) -> SqliteCounters:
        """Open (creating mode 0600: it names client addresses and accounts) the file."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postgate-counters")
        loop = asyncio.get_running_loop()
        try:
            connection = await loop.run_in_executor(executor, _connect, path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(connection, executor, path, clock)

    async def incr(self, key: str, window: float) -> int:
        now = self._clock()

        def work() -> int:
            self._db.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))
            row = self._db.execute(
                _INCR, {"key": key, "now": now, "expires": now + window}
            ).fetchone()
            return int(row[0])

        return await self._run(work)

    async def get(self, key: str) -> int:
        now = self._clock()

        def work() -> int:
            row = self._db.execute(
                "SELECT count FROM counters WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
            return int(row[0]) if row else 0

        return await self._run(work)

    async def reset(self, *keys: str) -> None:
        marks = ",".join("?" * len(keys))

        def work() -> None:
            # Read first: every successful AUTH resets, nearly always nothing, and a
            # read takes no write lock, which several server processes would queue for.
            if self._db.execute(
                f"SELECT 1 FROM counters WHERE key IN ({marks}) LIMIT 1", keys
            ).fetchone():
                self._db.execute(f"DELETE FROM counters WHERE key IN ({marks})", keys)

        if keys:
            await self._run(work)

    async def set_ban(self, key: str, until: float, reason: str) -> None:
        now = self._clock()

        def work() -> None:
            self._db.execute("DELETE FROM bans WHERE until <= ?", (now,))
            self._db.execute(
                "INSERT INTO bans (key, until, reason, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET until = excluded.until, "
                "reason = excluded.reason, created_at = excluded.created_at",
                (key, until, reason, now),
            )

        await self._run(work)

    async def ban(self, key: str) -> Ban | None:
        now = self._clock()

        def work() -> Ban | None:
            row = self._db.execute(
                "SELECT key, until, reason, created_at FROM bans WHERE key = ? AND until > ?",
                (key, now),
            ).fetchone()
            return Ban(row[0], row[1], row[2], row[3]) if row else None

        return await self._run(work)

    async def bans(self) -> list[Ban]:
        now = self._clock()

        def work() -> list[Ban]:
            rows = self._db.execute(
                "SELECT key, until, reason, created_at FROM bans WHERE until > ? "
                "ORDER BY until, key",
                (now,),
            ).fetchall()
            return [Ban(*row) for row in rows]

        return await self._run(work)

    async def unban(self, key: str) -> bool:
        now = self._clock()

        def work() -> bool:
            cursor = self._db.execute("DELETE FROM bans WHERE key = ? AND until > ?", (key, now))
            self._db.execute("DELETE FROM bans WHERE until <= ?", (now,))
            return cursor.rowcount > 0

        return await self._run(work)

    async def close(self) -> None:
        try:
            await self._run(self._db.close)
        finally:
            self._executor.shutdown(wait=True)

    async def _run(self, work: Callable[[], _T]) -> _T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, work)
        except sqlite3.Error as exc:
            raise CountersError(f"counters database {self._path}: {exc}") from exc


def _connect(path: Path) -> sqlite3.Connection:
    try:
        connection = open_private_database(path, _SCHEMA)
    except OSError as exc:
        raise CountersError(f"counters database {path}: {exc.strerror or exc}") from exc
    except sqlite3.Error as exc:
        raise CountersError(f"counters database {path}: {exc}") from exc
    # Counters are not mail: losing the last few increments in a power cut is fine,
    # so skip the fsync per write that FULL would cost.
    connection.execute("PRAGMA synchronous = NORMAL")
    return connection


# ---------------------------------------------------------------------------------------------
# Redis


class RedisCounters:
    """Counters and bans in Redis, all keys under ``prefix``.

    Counters are plain keys (INCR + PEXPIRE NX in one MULTI, so the expiry is set exactly
    once, by the first hit; PEXPIRE NX needs Redis 7). A ban is a key holding JSON with a
    TTL to its deadline; its name is also kept in a set so ``bans()`` can list bans
    without SCAN."""

    def __init__(
        self, client: aioredis.Redis, *, prefix: str = "postgate:", clock: Clock = time.time
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._ban_set = f"{prefix}bans"
        self._clock = clock

    @classmethod
    async def open(
        cls, url: str, *, prefix: str = "postgate:", clock: Clock = time.time
    ) -> RedisCounters:
        """Connect and PING, so a wrong URL fails at start-up rather than at the first AUTH."""
        client = aioredis.Redis.from_url(
            url, decode_responses=True, socket_timeout=5.0, socket_connect_timeout=5.0
        )
        try:
            await client.ping()
        except RedisError as exc:
            await client.aclose()
            raise CountersError(f"redis {_safe_url(url)}: {exc}") from exc
        return cls(client, prefix=prefix, clock=clock)

    def _counter(self, key: str) -> str:
        return f"{self._prefix}c:{key}"

    def _ban(self, key: str) -> str:
        return f"{self._prefix}b:{key}"

    async def incr(self, key: str, window: float) -> int:
        name = self._counter(key)
        milliseconds = max(1, math.ceil(window * 1000))

        async def work() -> int:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.pexpire(name, milliseconds, nx=True)
                count, _ = await pipe.execute()
            return int(count)

        return await self._call(work())

    async def get(self, key: str) -> int:
        value = await self._call(self._redis.get(self._counter(key)))
        return int(value) if value is not None else 0

    async def reset(self, *keys: str) -> None:
        if keys:
            await self._call(self._redis.delete(*(self._counter(key) for key in keys)))

    async def set_ban(self, key: str, until: float, reason: str) -> None:
        now = self._clock()
        milliseconds = math.ceil((until - now) * 1000)
        if milliseconds <= 0:
            await self.unban(key)
            return
        record = json.dumps({"until": until, "reason": reason, "created_at": now})

        async def work() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._ban(key), record, px=milliseconds)
                pipe.sadd(self._ban_set, key)
                await pipe.execute()

        await self._call(work())

    async def ban(self, key: str) -> Ban | None:
        raw = await self._call(self._redis.get(self._ban(key)))
        return self._live(key, _text(raw))

    async def bans(self) -> list[Ban]:
        members = await self._call(self._redis.smembers(self._ban_set))
        keys = sorted(t for t in (_text(m) for m in members) if t is not None)
        if not keys:
            return []
        raws = await self._call(self._redis.mget([self._ban(k) for k in keys]))
        live: list[Ban] = []
        gone: list[str] = []
        for key, raw in zip(keys, raws, strict=True):
            found = self._live(key, _text(raw))
            if found is None:
                gone.append(key)
            else:
                live.append(found)
        if gone:
            await self._call(self._redis.srem(self._ban_set, *gone))
        return sorted(live, key=lambda b: (b.until, b.key))

    async def unban(self, key: str) -> bool:
        was_live = await self.ban(key) is not None

        async def work() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._ban(key))
                pipe.srem(self._ban_set, key)
                await pipe.execute()

        await self._call(work())
        return was_live

    async def close(self) -> None:
        await self._redis.aclose()

    def _live(self, key: str, raw: str | None) -> Ban | None:
        if raw is None:
            return None
        try:
            record: dict[str, Any] = json.loads(raw)
            found = Ban(
                key, float(record["until"]), str(record["reason"]), float(record["created_at"])
            )
        except (ValueError, KeyError, TypeError):
            return None  # not ours or damaged: treat as no ban rather than crash AUTH
        # The TTL uses Redis's clock; the deadline is compared with ours as well.
        return found if found.until > self._clock() else None

    async def _call(self, operation: Awaitable[_T]) -> _T:
        try:
            return await operation
        except RedisError as exc:
            raise CountersError(f"redis: {exc}") from exc


def _text(value: bytes | str | None) -> str | None:
    """Responses are decoded (decode_responses=True); the client's types do not know it."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _safe_url(url: str) -> str:
    """The URL without a password, for error messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return f"{scheme}{sep}{rest}"
