"""policy.lockout against real counters (SQLite file; Redis on loopback), with a fake clock."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from postgate.counters import Ban, Counters, CountersError, RedisCounters, SqliteCounters
from postgate.policy.lockout import (
    BANNED_TEXT,
    Lockout,
    LockoutSettings,
    account_ban_key,
    address_ban_key,
    address_key,
)
from postgate.policy.verdict import Action
from tests.test_counters import FakeClock, delete_prefix, redis_client_or_skip

ALICE = "alice@example.test"
RIGHT = "right-password"
CLIENT = "127.0.0.1"  # loopback is not exempt


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def counters(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Counters]:
    if request.param == "sqlite":
        sqlite_counters = await SqliteCounters.open(tmp_path / "counters.db", clock=clock)
        try:
            yield sqlite_counters
        finally:
            await sqlite_counters.close()
        return
    client = await redis_client_or_skip()
    prefix = f"postgate-test:{uuid.uuid4().hex}:"
    # Ban deadlines follow the injected clock; Redis TTLs need it near real time.
    clock.now = FakeClock().now
    redis_counters = RedisCounters(client, prefix=prefix, clock=clock)
    try:
        yield redis_counters
    finally:
        await delete_prefix(client, prefix)
        await redis_counters.close()


async def attempt(lockout: Lockout, client: str, account: str, password: str) -> tuple[int, str]:
    """What the session does around one AUTH: check, verify, then failed or succeeded."""
    verdict = await lockout.check(client, None)  # at the AUTH command
    if verdict.action is Action.CONTINUE:
        verdict = await lockout.check(client, account)  # credentials known, not yet verified
    if verdict.action is not Action.CONTINUE:
        return verdict.code, f"{verdict.enhanced} {verdict.text}"
    if password == RIGHT:
        await lockout.succeeded(client, account)
        return 235, "2.7.0 Authentication successful"
    penalty = await lockout.failed(client, account)
    return penalty.verdict.code, f"{penalty.verdict.enhanced} {penalty.verdict.text}"


async def test_four_wrong_then_banned_then_free_after_ban_time(
    counters: Counters, clock: FakeClock
) -> None:
    settings = LockoutSettings(max_failures=3, window=900.0, ban_time=900.0)
    lockout = Lockout(counters, settings, clock=clock)
    with capture_logs() as logs:
        replies = [await attempt(lockout, CLIENT, ALICE, "wrong") for _ in range(4)]
    assert [code for code, _ in replies] == [535, 535, 535, 454]
    assert replies[0][1] == "5.7.8 Authentication credentials invalid"
    assert replies[3][1] == f"4.7.0 {BANNED_TEXT}"
    # The right password during the ban is refused before it is looked at.
    assert await attempt(lockout, CLIENT, ALICE, RIGHT) == (454, f"4.7.0 {BANNED_TEXT}")
    banned = [e for e in logs if e["event"] == "auth banned" and e["key"].startswith("addr:")]
    assert len(banned) == 1
    assert banned[0]["client"] == CLIENT
    assert banned[0]["account"] == ALICE
    assert banned[0]["until"] == clock() + 900.0
    clock.advance(899.0)
    assert (await attempt(lockout, CLIENT, ALICE, RIGHT))[0] == 454
    clock.advance(1.0)
    assert (await attempt(lockout, CLIENT, ALICE, RIGHT))[0] == 235


async def test_penalty_delay_grows_and_is_capped(counters: Counters, clock: FakeClock) -> None:
    settings = LockoutSettings(max_failures=10, penalty_delay=1.0, max_penalty_delay=2.5)
    lockout = Lockout(counters, settings, clock=clock)
    delays = [(await lockout.failed(CLIENT, ALICE)).delay for _ in range(4)]
    assert delays == [1.0, 2.0, 2.5, 2.5]


async def test_the_failure_that_bans_says_so(counters: Counters, clock: FakeClock) -> None:
    lockout = Lockout(counters, LockoutSettings(max_failures=2), clock=clock)
    first = await lockout.failed(CLIENT, ALICE)
    second = await lockout.failed(CLIENT, ALICE)
    assert first.banned_until is None
    assert second.banned_until == clock() + 900.0
    assert second.verdict.code == 535  # the credentials were wrong; the ban shows next time
    ban = await counters.ban(address_ban_key(CLIENT))
    assert ban is not None and "2 failed AUTH attempts" in ban.reason


async def test_address_ban_covers_every_account(counters: Counters, clock: FakeClock) -> None:
    lockout = Lockout(counters, LockoutSettings(), clock=clock)
    for account in ("a@example.test", "b@example.test", "c@example.test"):
        await lockout.failed("192.0.2.10", account)
    assert (await lockout.check("192.0.2.10", None)).code == 454
    assert (await lockout.check("192.0.2.10", "d@example.test")).code == 454
    assert (await lockout.check("192.0.2.11", "a@example.test")).action is Action.CONTINUE


async def test_account_ban_only_blocks_addresses_that_failed_for_it(
    counters: Counters, clock: FakeClock
) -> None:
    """A botnet spreading guesses over addresses trips the account limit, but the owner
    logging in from a clean address is not locked out (the DoS trade-off)."""
    lockout = Lockout(counters, LockoutSettings(), clock=clock)
    bots = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    for bot in bots:
        await lockout.failed(bot, ALICE)
    assert await counters.ban(account_ban_key(ALICE)) is not None
    for bot in bots:
        assert (await lockout.check(bot, None)).action is Action.CONTINUE  # no address ban
        verdict = await lockout.check(bot, "ALICE@example.test")
        assert (verdict.code, verdict.enhanced) == (454, "4.7.0")
        assert (await lockout.check(bot, "bob@example.test")).action is Action.CONTINUE
    assert await attempt(lockout, "203.0.113.5", ALICE, RIGHT) == (
        235,
        "2.7.0 Authentication successful",
    )


async def test_accounts_compare_case_insensitively(counters: Counters, clock: FakeClock) -> None:
    lockout = Lockout(counters, LockoutSettings(), clock=clock)
    for account, client in (
        ("Alice@Example.Test", "192.0.2.1"),
        ("alice@example.test", "192.0.2.2"),
        ("ALICE@EXAMPLE.TEST", "192.0.2.3"),
    ):
        await lockout.failed(client, account)
    assert await counters.ban(account_ban_key(ALICE)) is not None


async def test_success_clears_the_counts(counters: Counters, clock: FakeClock) -> None:
    lockout = Lockout(counters, LockoutSettings(max_failures=3), clock=clock)
    for _ in range(2):
        assert (await attempt(lockout, CLIENT, ALICE, "typo"))[0] == 535
    assert (await attempt(lockout, CLIENT, ALICE, RIGHT))[0] == 235
    for _ in range(2):
        assert (await attempt(lockout, CLIENT, ALICE, "typo"))[0] == 535
    assert (await attempt(lockout, CLIENT, ALICE, RIGHT))[0] == 235
    assert await counters.bans() == []


async def test_ipv6_counts_per_64(counters: Counters, clock: FakeClock) -> None:
    lockout = Lockout(counters, LockoutSettings(), clock=clock)
    for host in ("2001:db8::1", "2001:db8::2", "2001:db8::3"):
        await lockout.failed(host, None)
    assert (await lockout.check("2001:db8::ffff:1", None)).code == 454
    assert (await lockout.check("2001:db8:0:1::1", None)).action is Action.CONTINUE
    assert [b.key for b in await counters.bans()] == ["addr:2001:db8::/64"]


async def test_lifting_the_ban_by_key_lets_the_client_in(
    counters: Counters, clock: FakeClock
) -> None:
    lockout = Lockout(counters, LockoutSettings(), clock=clock)
    for _ in range(3):
        await lockout.failed(CLIENT, ALICE)
    assert (await lockout.check(CLIENT, ALICE)).code == 454
    assert await counters.unban(address_ban_key(CLIENT))
    assert await counters.unban(account_ban_key(ALICE))
    assert (await attempt(lockout, CLIENT, ALICE, RIGHT))[0] == 235


@pytest.mark.parametrize(
    ("client", "prefix", "expected"),
    [
        ("192.0.2.1", 64, "192.0.2.1"),
        ("::ffff:192.0.2.1", 64, "192.0.2.1"),
        ("2001:db8::1", 64, "2001:db8::/64"),
        ("2001:DB8:0:0:1::1", 48, "2001:db8::/48"),
        ("2001:db8::1", 128, "2001:db8::1"),
        ("[2001:db8::1]", 64, "2001:db8::/64"),
        ("::1", 64, "::/64"),
        ("local-socket", 64, "local-socket"),
    ],
)
def test_address_key(client: str, prefix: int, expected: str) -> None:
    assert address_key(client, prefix) == expected


@pytest.mark.parametrize(
    "settings",
    [
        {"max_failures": 0},
        {"window": 0},
        {"ban_time": -1},
        {"penalty_delay": -0.1},
        {"ipv6_prefix_length": 0},
        {"ipv6_prefix_length": 129},
    ],
)
def test_settings_are_validated(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LockoutSettings(**settings)  # type: ignore[arg-type]


class BrokenCounters:
    """A backend that is down: every call fails as an unreachable Redis would."""

    async def incr(self, key: str, window: float) -> int:
        raise CountersError("redis: connection refused")

    async def get(self, key: str) -> int:
        raise CountersError("redis: connection refused")

    async def reset(self, *keys: str) -> None:
        raise CountersError("redis: connection refused")

    async def set_ban(self, key: str, until: float, reason: str) -> None:
        raise CountersError("redis: connection refused")

    async def ban(self, key: str) -> Ban | None:
        raise CountersError("redis: connection refused")

    async def bans(self) -> list[Ban]:
        raise CountersError("redis: connection refused")

    async def unban(self, key: str) -> bool:
        raise CountersError("redis: connection refused")

    async def close(self) -> None:
        return None


async def test_backend_down_fails_closed_for_check_and_still_answers_535() -> None:
    lockout = Lockout(BrokenCounters(), LockoutSettings(penalty_delay=2.0))
    verdict = await lockout.check(CLIENT, ALICE)
    assert (verdict.action, verdict.code, verdict.enhanced) == (Action.TEMPFAIL, 454, "4.7.0")
    assert "connection refused" in verdict.reason
    penalty = await lockout.failed(CLIENT, ALICE)
    assert (penalty.verdict.code, penalty.delay) == (535, 2.0)
    await lockout.succeeded(CLIENT, ALICE)  # logged, not raised
