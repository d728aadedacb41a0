"""The cache of verified passwords: argon2 once per login burst, never for a stale hash."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from postgate.accounts import UserStore
from postgate.credential_cache import VerifiedCredentials
from tests.test_accounts import PASSWORD, RecordingHasher

ANN = "ann@example.org"


@pytest.fixture
def hasher() -> RecordingHasher:
    return RecordingHasher()


@pytest.fixture
def users(tmp_path: Path, hasher: RecordingHasher) -> Iterator[UserStore]:
    with UserStore.open(tmp_path / "users.db", hasher=hasher) as store:
        store.add(ANN, PASSWORD)
        yield store


async def test_a_repeated_login_skips_argon2(users: UserStore, hasher: RecordingHasher) -> None:
    assert await users.verify_async(ANN, PASSWORD)
    assert await users.verify_async("Ann@Example.ORG", PASSWORD)  # same canonical user
    assert await users.verify_async(ANN, PASSWORD)
    assert len(hasher.verify_threads) == 1


async def test_wrong_passwords_always_cost_argon2(
    users: UserStore, hasher: RecordingHasher
) -> None:
    assert await users.verify_async(ANN, PASSWORD)
    for _ in range(3):
        assert not await users.verify_async(ANN, "wrong")
    assert len(hasher.verify_threads) == 4


async def test_a_password_change_takes_effect_at_once(users: UserStore) -> None:
    assert await users.verify_async(ANN, PASSWORD)
    users.set_password(ANN, "a new one")
    assert not await users.verify_async(ANN, PASSWORD)
    assert await users.verify_async(ANN, "a new one")


class PasswdDuringCheck(RecordingHasher):
    """While a login's password is being checked, the admin runs `user passwd`."""

    def __init__(self, database: Path) -> None:
        super().__init__()
        self.database = database
        self.armed = False

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        result = super().verify(hash, password)  # the old password matches the old hash
        if self.armed:
            self.armed = False
            with UserStore.open(self.database, hasher=RecordingHasher()) as cli:
                cli.set_password(ANN, "changed meanwhile")
        return result


async def test_a_password_changed_during_the_check_is_not_cached(tmp_path: Path) -> None:
    database = tmp_path / "users.db"
    hasher = PasswdDuringCheck(database)
    with UserStore.open(database, hasher=hasher) as users:
        users.add(ANN, PASSWORD)
        hasher.armed = True
        # The check itself was right when it started: this login goes through...
        assert await users.verify_async(ANN, PASSWORD)
        # ...but the old password must not outlive the change through the cache.
        assert not await users.verify_async(ANN, PASSWORD)
        assert await users.verify_async(ANN, "changed meanwhile")


async def test_a_disabled_account_is_refused_at_once(users: UserStore) -> None:
    assert await users.verify_async(ANN, PASSWORD)
    users.set_disabled(ANN, True)
    assert not await users.verify_async(ANN, PASSWORD)


async def test_ttl_zero_turns_the_cache_off(tmp_path: Path, hasher: RecordingHasher) -> None:
    with UserStore.open(tmp_path / "u.db", hasher=hasher, credential_cache_ttl=0) as users:
        users.add(ANN, PASSWORD)
        assert await users.verify_async(ANN, PASSWORD)
        assert await users.verify_async(ANN, PASSWORD)
    assert len(hasher.verify_threads) == 2


def test_entries_expire_and_the_oldest_make_room() -> None:
    now = [100.0]
    cache = VerifiedCredentials(ttl=60.0, capacity=2, clock=lambda: now[0])
    first, second, third = (cache.key(ANN, p) for p in ("one", "two", "three"))
    assert first != cache.key("bob@example.org", "one")  # the address is part of the key
    cache.remember(first, "$h1")
    assert cache.holds(first, "$h1")
    assert not cache.holds(first, "$other")  # tied to the hash it was checked against
    cache.remember(first, "$h1")
    now[0] += 59.0
    assert cache.holds(first, "$h1")
    now[0] += 1.0
    assert not cache.holds(first, "$h1")
    cache.remember(first, "$h1")
    cache.remember(second, "$h1")
    cache.remember(third, "$h1")
    assert len(cache) == 2
    assert not cache.holds(first, "$h1")
    assert cache.holds(third, "$h1")
