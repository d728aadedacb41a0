"""The local user store on a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from argon2 import PasswordHasher, Type

from postgate.accounts import (
    PASSWORD_ALPHABET,
    Account,
    AccountError,
    UserStore,
    generate_password,
)
from postgate.routing import AliasTable, RecipientCheck, Router
from postgate.sasl.cram_md5 import derive_cram_md5_secret
from postgate.sasl.scram import derive_scram_secret

PASSWORD = "correct horse battery staple"


def cheap_hasher(time_cost: int = 1) -> PasswordHasher:
    # Real argon2id with tiny costs: the defaults take ~0.1 s per hash.
    return PasswordHasher(time_cost=time_cost, memory_cost=8, parallelism=1)


class RecordingHasher(PasswordHasher):
    """Counts verify calls and remembers the threads they ran on."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verify_threads: list[int] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verify_threads.append(threading.get_ident())
        return super().verify(hash, password)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "users.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[UserStore]:
    with UserStore.open(db_path, hasher=cheap_hasher(), clock=lambda: 1700000000.0) as users:
        yield users


def stored_hash(db_path: Path, address: str) -> str:
    with sqlite3.connect(db_path) as connection:
        row = connection.execute(
            "SELECT password_hash FROM accounts WHERE address = ?", (address,)
        ).fetchone()
    connection.close()
    return str(row[0])


def test_add_normalises_and_lists(store: UserStore) -> None:
    account = store.add("Ann@Example.ORG", PASSWORD)
    assert account == Account("ann@example.org", 1700000000.0, False)
    store.add("jürgen@Bücher.example", PASSWORD)
    assert [a.address for a in store.list()] == [
        "ann@example.org",
        "jürgen@xn--bcher-kva.example",
    ]
    assert store.exists("ANN@example.org")
    assert store.exists("JÜRGEN@bücher.EXAMPLE")
    assert not store.exists("bob@example.org")


def test_verify(store: UserStore) -> None:
    store.add("ann@example.org", PASSWORD)
    assert store.verify("ANN@Example.org", PASSWORD)
    assert not store.verify("ann@example.org", PASSWORD + "x")
    assert not store.verify("ann@example.org", "")
    assert not store.verify("bob@example.org", PASSWORD)
    assert not store.verify("not an address", PASSWORD)


def test_duplicate_add_is_refused_in_any_case(store: UserStore) -> None:
    store.add("ann@example.org", PASSWORD)
    with pytest.raises(AccountError, match=r"^user ann@example\.org exists$"):
        store.add("ANN@EXAMPLE.org", "other")


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("ann", "exactly one '@'"),
        ("a@b@example.org", "exactly one '@'"),
        ("@example.org", "empty local part"),
        ("ann@", "empty domain"),
        ("a nn@example.org", "spaces, quotes or controls"),
        ('"ann"@example.org', "spaces, quotes or controls"),
        ("ann\x00@example.org", "spaces, quotes or controls"),
        ("ann@[192.0.2.1]", "not a literal"),
        ("ann@ex..ä", "invalid internationalised domain"),
        ("a" * 65 + "@example.org", "longer than 64 octets"),
        ("a@" + "b" * 260 + ".org", "longer than 254 octets"),
    ],
)
def test_invalid_addresses(store: UserStore, address: str, message: str) -> None:
    with pytest.raises(AccountError, match=message):
        store.add(address, PASSWORD)
    assert not store.exists(address)  # exists never raises: the Router passes anything


def test_empty_password_is_refused(store: UserStore) -> None:
    with pytest.raises(AccountError, match="password must not be empty"):
        store.add("ann@example.org", "")
    assert store.list() == []


def test_set_password(store: UserStore) -> None:
    store.add("ann@example.org", PASSWORD)
    store.set_password("Ann@example.org", "new secret")
    assert store.verify("ann@example.org", "new secret")
    assert not store.verify("ann@example.org", PASSWORD)
    with pytest.raises(AccountError, match=r"^no user bob@example\.org$"):
        store.set_password("bob@example.org", "x")


def test_delete(store: UserStore) -> None:
    store.add("ann@example.org", PASSWORD)
    store.delete("ANN@example.org")
    assert not store.exists("ann@example.org")
    assert not store.verify("ann@example.org", PASSWORD)
    with pytest.raises(AccountError, match=r"no user ann@example\.org"):
        store.delete("ann@example.org")


def test_disabled_user_keeps_mailbox_but_cannot_log_in(store: UserStore) -> None:
    store.add("ann@example.org", PASSWORD)
    store.set_disabled("ann@example.org", True)
    assert store.exists("ann@example.org")
    assert not store.verify("ann@example.org", PASSWORD)
    assert store.list()[0].disabled
    store.set_disabled("ann@example.org", False)
    assert store.verify("ann@example.org", PASSWORD)
    with pytest.raises(AccountError, match="no user"):
        store.set_disabled("bob@example.org", True)


def test_unknown_and_disabled_users_cost_an_argon2_verify(db_path: Path) -> None:
    hasher = RecordingHasher()
    with UserStore.open(db_path, hasher=hasher) as users:
        users.add("ann@example.org", PASSWORD)
        users.set_disabled("ann@example.org", True)
        assert not users.verify("nobody@example.org", PASSWORD)
        assert not users.verify("malformed", PASSWORD)
        assert not users.verify("ann@example.org", PASSWORD)
    assert len(hasher.verify_threads) == 3


def test_only_argon2id_hashes_are_stored(db_path: Path, store: UserStore) -> None:
    store.add("ann@example.org", PASSWORD)
    store.set_password("ann@example.org", PASSWORD + "2")
    assert stored_hash(db_path, "ann@example.org").startswith("$argon2id$")
    raw = b"".join(p.read_bytes() for p in db_path.parent.iterdir() if p.is_file())
    assert PASSWORD.encode() not in raw


def test_default_hasher_is_argon2id() -> None:
    assert PasswordHasher().type is Type.ID


def test_rehash_when_parameters_change(db_path: Path) -> None:
    with UserStore.open(db_path, hasher=cheap_hasher(time_cost=1)) as users:
        users.add("ann@example.org", PASSWORD)
        assert users.verify("ann@example.org", PASSWORD)
    assert ",t=1," in stored_hash(db_path, "ann@example.org")
    with UserStore.open(db_path, hasher=cheap_hasher(time_cost=2)) as users:
        assert not users.verify("ann@example.org", "wrong")
        assert ",t=1," in stored_hash(db_path, "ann@example.org")  # no upgrade on failure
        assert users.verify("ann@example.org", PASSWORD)
        assert ",t=2," in stored_hash(db_path, "ann@example.org")
        assert users.verify("ann@example.org", PASSWORD)


def test_corrupt_hash_fails_closed(db_path: Path, store: UserStore) -> None:
    store.add("ann@example.org", PASSWORD)
    with sqlite3.connect(db_path) as connection:
        connection.execute("UPDATE accounts SET password_hash = 'garbage'")
    connection.close()
    assert not store.verify("ann@example.org", PASSWORD)


def test_file_is_private_wal_and_reopenable(db_path: Path) -> None:
    with UserStore.open(db_path, hasher=cheap_hasher()) as users:
        users.add("ann@example.org", PASSWORD)
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    with UserStore.open(db_path, hasher=cheap_hasher()) as users:  # schema is idempotent
        assert users.verify("ann@example.org", PASSWORD)
    with sqlite3.connect(db_path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    connection.close()


def test_open_in_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(AccountError, match="user database"):
        UserStore.open(tmp_path / "missing" / "users.db")


def test_cli_process_and_server_share_the_file(db_path: Path, store: UserStore) -> None:
    store.add("ann@example.org", PASSWORD)
    script = (
        "import sys; from pathlib import Path; from argon2 import PasswordHasher;"
        "from postgate.accounts import UserStore;"
        "s = UserStore.open(Path(sys.argv[1]),"
        " hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1));"
        "assert s.verify('ann@example.org', sys.argv[2]);"
        "s.add('bob@example.org', 'bob-secret'); s.close()"
    )
    subprocess.run([sys.executable, "-c", script, str(db_path), PASSWORD], check=True, timeout=60)
    assert store.verify("bob@example.org", "bob-secret")
    assert [a.address for a in store.list()] == ["ann@example.org", "bob@example.org"]


async def test_verify_async_runs_off_the_event_loop(db_path: Path) -> None:
    hasher = RecordingHasher()
    with UserStore.open(db_path, hasher=hasher, max_parallel_verifications=2) as users:
        users.add("ann@example.org", PASSWORD)
        results = await asyncio.gather(
            *(users.verify_async("ann@example.org", PASSWORD) for _ in range(4)),
            users.verify_async("ann@example.org", "wrong"),
            users.verify_async("nobody@example.org", PASSWORD),
        )
    assert results == [True, True, True, True, False, False]
    assert len(hasher.verify_threads) == 6
    assert threading.get_ident() not in hasher.verify_threads


async def test_verify_async_with_default_argon2_costs(db_path: Path) -> None:
    with UserStore.open(db_path) as users:
        users.add("ann@example.org", PASSWORD)
        assert await users.verify_async("ann@example.org", PASSWORD)
        assert not await users.verify_async("ann@example.org", "wrong")


def test_router_uses_exists_as_mailbox_lookup(store: UserStore) -> None:
    store.add("ann@example.org", PASSWORD)
    router = Router(
        local_domains=["example.org"],
        aliases=AliasTable({}),
        catch_all={},
        postmaster=None,
        mailbox_exists=store.exists,
    )
    assert router.check_recipient("Ann@Example.org", relay_allowed=False) is RecipientCheck.ACCEPT
    assert router.check_recipient('"a@b"@example.org', relay_allowed=False) is (
        RecipientCheck.UNKNOWN_USER
    )


def test_generate_password() -> None:
    passwords = {generate_password() for _ in range(20)}
    assert len(passwords) == 20
    for password in passwords:
        assert len(password) == 20
        assert set(password) <= set(PASSWORD_ALPHABET)
    assert not set("0Oo1lI") & set(PASSWORD_ALPHABET)
    assert len(generate_password(32)) == 32


# --- per-mechanism secrets: SCRAM-SHA-256 and CRAM-MD5 --------------------------------


def column(db_path: Path, name: str, address: str) -> str | None:
    connection = sqlite3.connect(db_path)
    try:
        row = connection.execute(
            f"SELECT {name} FROM accounts WHERE address = ?", (address,)
        ).fetchone()
    finally:
        connection.close()
    return None if row[0] is None else str(row[0])


def test_scram_secret_is_derived_from_the_password(db_path: Path, store: UserStore) -> None:
    store.add("ann@example.org", PASSWORD)
    secret = store.scram_secret("ANN@example.org")
    assert secret is not None
    assert secret == derive_scram_secret(PASSWORD, salt=secret.salt, iterations=4096)
    assert len(secret.salt) == 16
    stored = column(db_path, "scram_sha256", "ann@example.org")
    assert stored is not None and stored.startswith("SCRAM-SHA-256$4096:")
    store.set_password("ann@example.org", "new secret")
    renewed = store.scram_secret("ann@example.org")
    assert renewed is not None and renewed.salt != secret.salt
    assert renewed == derive_scram_secret("new secret", salt=renewed.salt, iterations=4096)


def test_scram_iteration_count_is_configurable_but_not_below_the_rfc(db_path: Path) -> None:
    with UserStore.open(db_path, hasher=cheap_hasher(), scram_iterations=8192) as users:
        users.add("ann@example.org", PASSWORD)
        secret = users.scram_secret("ann@example.org")
        assert secret is not None and secret.iterations == 8192
        assert users.scram_decoy("nobody@example.org").iterations == 8192
    with pytest.raises(AccountError, match="at least 4096"):
        UserStore.open(db_path, scram_iterations=1000)


def test_cram_md5_value_is_stored_only_when_asked(db_path: Path, store: UserStore) -> None:
    store.add("ann@example.org", PASSWORD)
    assert store.cram_md5_secret("ann@example.org") is None
    assert column(db_path, "cram_md5", "ann@example.org") is None
    store.set_password("ann@example.org", PASSWORD, cram_md5=True)
    assert store.cram_md5_secret("ann@example.org") == derive_cram_md5_secret(PASSWORD)
    assert str(column(db_path, "cram_md5", "ann@example.org")).startswith("{CRAM-MD5}")
    store.set_password("ann@example.org", PASSWORD)  # the operator turned CRAM-MD5 off
    assert store.cram_md5_secret("ann@example.org") is None
    store.add("bob@example.org", "bob-pw", cram_md5=True)
    assert store.cram_md5_secret("bob@example.org") == derive_cram_md5_secret("bob-pw")


def test_disabled_and_unknown_users_have_no_secrets(store: UserStore) -> None:
    store.add("ann@example.org", PASSWORD, cram_md5=True)
    store.set_disabled("ann@example.org", True)
    assert store.scram_secret("ann@example.org") is None
    assert store.cram_md5_secret("ann@example.org") is None
    assert store.is_disabled("ann@example.org")
    assert not store.is_disabled("nobody@example.org")
    assert store.scram_secret("nobody@example.org") is None
    assert store.scram_secret("not an address") is None
    assert store.missing_secret_reason("ann@example.org", "SCRAM-SHA-256") == (
        "user ann@example.org is disabled"
    )
    assert store.missing_secret_reason("Nobody@example.org", "CRAM-MD5") == (
        "no user nobody@example.org"
    )
    assert "one '@'" in store.missing_secret_reason("nobody", "CRAM-MD5")


def test_password_saslprep_refuses_gets_no_scram_secret(store: UserStore) -> None:
    store.add("ann@example.org", "bell\x07char")
    assert store.scram_secret("ann@example.org") is None
    assert store.verify("ann@example.org", "bell\x07char")  # PLAIN and LOGIN still work
    assert "no SCRAM-SHA-256 secret" in store.missing_secret_reason(
        "ann@example.org", "SCRAM-SHA-256"
    )


def test_scram_decoy_salt_is_stable_per_name_across_opens(db_path: Path) -> None:
    with UserStore.open(db_path, hasher=cheap_hasher()) as users:
        first = users.scram_decoy("nobody@example.org")
        again = users.scram_decoy("Nobody@Example.org")
        other = users.scram_decoy("someone@example.org")
    with UserStore.open(db_path, hasher=cheap_hasher()) as users:
        reopened = users.scram_decoy("nobody@example.org")
    assert first.salt == again.salt == reopened.salt != other.salt
    assert first.stored_key != again.stored_key  # random: no proof can ever match


def make_version_0_file(path: Path) -> None:
    """A users.db as written before SCRAM support (schema without user_version)."""
    connection = sqlite3.connect(path)
    connection.executescript(
        """
        CREATE TABLE accounts (
            address TEXT PRIMARY KEY NOT NULL, password_hash TEXT NOT NULL,
            created_at REAL NOT NULL, disabled INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID;
        """
    )
    connection.execute(
        "INSERT INTO accounts VALUES (?, ?, 1.0, 0)",
        ("old@example.org", cheap_hasher().hash(PASSWORD)),
    )
    connection.commit()
    connection.close()


def test_old_file_is_migrated_and_old_users_get_scram_at_next_login(db_path: Path) -> None:
    make_version_0_file(db_path)
    with UserStore.open(db_path, hasher=cheap_hasher()) as users:
        assert users.scram_secret("old@example.org") is None
        reason = users.missing_secret_reason("old@example.org", "SCRAM-SHA-256")
        assert reason == "user old@example.org has no SCRAM-SHA-256 secret: set the password again"
        assert not users.verify("old@example.org", "wrong")
        assert users.scram_secret("old@example.org") is None
        assert users.verify("old@example.org", PASSWORD)
        secret = users.scram_secret("old@example.org")
        assert secret is not None
        assert secret == derive_scram_secret(PASSWORD, salt=secret.salt, iterations=4096)
    connection = sqlite3.connect(db_path)
    try:
        assert connection.execute("PRAGMA user_version").fetchone() == (1,)
    finally:
        connection.close()


def test_two_processes_migrating_one_old_file_at_once(db_path: Path) -> None:
    make_version_0_file(db_path)
    script = (
        "import sys; from pathlib import Path; from postgate.accounts import UserStore;"
        "s = UserStore.open(Path(sys.argv[1])); assert s.exists('old@example.org'); s.close()"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(db_path)], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    errors = [process.communicate(timeout=60)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], errors
    with UserStore.open(db_path, hasher=cheap_hasher()) as users:
        users.set_password("old@example.org", PASSWORD, cram_md5=True)
        assert users.cram_md5_secret("old@example.org") is not None


@pytest.mark.parametrize(
    "address",
    [
        "../../../../tmp/pwned@example.com",
        "x/y@example.com",
        ".hidden@example.com",
        "a..b@example.com",
    ],
)
def test_local_parts_that_could_escape_the_mailbox_root_are_refused(
    tmp_path: Path, address: str
) -> None:
    with UserStore.open(tmp_path / "users.db") as users, pytest.raises(AccountError):
        users.add(address, "a-long-password")
