"""accounts — the local user store: addresses and argon2id password hashes in SQLite.

SYNOPSIS
    users = UserStore.open(Path("/var/lib/postgate/users.db"))
    users.add("Ann@Example.ORG", generate_password())   # Account("ann@example.org", ...)
    users.exists("ann@example.org")                     # Router's mailbox_exists
    await users.verify_async("ann@example.org", password)  # SMTP AUTH, off the event loop
    users.scram_secret("ann@example.org")               # ScramSecret for SCRAM-SHA-256
    users.cram_md5_secret("ann@example.org")            # only if added with cram_md5=True
    users.close()

DESCRIPTION
    The Dovecot-SASL-like store behind AUTH and local delivery. Addresses are stored
    canonical: local part and domain lower-cased, domain in IDNA A-label form. Local
    parts are case-insensitive because that is what users expect and RFC 5321 2.4
    leaves it to the owner of the domain, which we are.

SECURITY
    Never a password. Stored per user: an argon2id hash (argon2-cffi PasswordHasher,
    library defaults) for PLAIN and LOGIN; SCRAM-SHA-256's salt, iteration count,
    StoredKey and ServerKey (RFC 5802 3), in PostgreSQL's text form; and, only when the
    caller asks (``cram_md5=True``, i.e. the operator enabled CRAM-MD5), Dovecot's
    "{CRAM-MD5}" HMAC state, which is plaintext-equivalent for CRAM-MD5 (see
    sasl.cram_md5). Setting a password without ``cram_md5`` removes that value.
    The file is created mode 0600. A successful verify re-hashes
    when the hasher's parameters changed. Verifying an unknown or disabled user costs
    the same argon2 work as a known one (a dummy hash is checked), so response time
    does not reveal which users exist. For SCRAM an unknown user gets a decoy secret
    whose salt is stable per name (keyed by a random value kept in the file), so the
    server-first message does not reveal it either.

MIGRATION
    Schema version 1 (PRAGMA user_version) adds the SCRAM and CRAM-MD5 columns to
    files made before them. Users from then have no SCRAM secret: they cannot use
    SCRAM-SHA-256 until their password is set again, or until they log in once with
    PLAIN or LOGIN (a successful verify fills the secret in). A password that SASLprep
    refuses (RFC 4013: control characters, unassigned code points) gets no SCRAM
    secret at all; PLAIN and LOGIN still work for it.

CONCURRENCY
    The CLI and the server may open the same file at once: WAL mode, a busy timeout,
    and one short statement per change. Within a process one connection is shared
    under a lock; argon2 runs outside it. ``verify_async`` runs argon2 (~0.1-0.2 s of
    CPU and 64 MiB) in this store's bounded thread pool, never on the event loop, and
    the bound caps the memory a burst of AUTH attempts can take. A success is
    remembered for a minute (credential_cache), tied to the stored hash, so a client
    sending one message per connection pays argon2 once, not per message. ``exists`` is an
    indexed read and fine to call on the event loop.

DIAGNOSTICS
    AccountError with a one-line message fit for the CLI ("user a@b exists").

SEE ALSO
    routing (canonicalisation, mailbox_exists), sasl (Credentials to verify)
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from postgate.credential_cache import VerifiedCredentials
from postgate.routing import RoutingError, canonical_domain
from postgate.sasl.model import CramMd5Secret, ScramSecret
from postgate.sasl.scram import MINIMUM_ITERATIONS
from postgate.sasl.stored import (
    StoredForms,
    decoy_scram_secret,
    password_forms,
    read_cram_md5,
    read_scram,
)
from postgate.sqlite_file import open_private_database

# RFC 5321 4.5.3.1.1 and 4.5.3.1.3 (path of 256 octets minus the angle brackets).
MAX_LOCAL_PART_OCTETS = 64
MAX_ADDRESS_OCTETS = 254

# No 0/O/o, 1/l/I: passwords from `postgate init` are read off a screen and typed.
PASSWORD_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    address       TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    REAL NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""

# PRAGMA user_version -> the statements that bring a file to it, applied in order.
_MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        ALTER TABLE accounts ADD COLUMN scram_sha256 TEXT;
        ALTER TABLE accounts ADD COLUMN cram_md5 TEXT;
        CREATE TABLE IF NOT EXISTS store_secrets (
            name  TEXT PRIMARY KEY NOT NULL,
            value BLOB NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
)


class AccountError(Exception):
    """An expected failure; the message is fit for a CLI line."""


@dataclass(frozen=True)
class Account:
    address: str
    created_at: float
    disabled: bool = False


def generate_password(length: int = 20) -> str:
    """A random password without look-alike characters (~5.8 bits per character)."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))


def canonical_account_address(address: str) -> str:
    """Validate and canonicalise a user address; raises AccountError saying what is wrong."""
    if address.count("@") != 1:
        raise AccountError(f"address {address!r} must contain exactly one '@'")
    local, domain = address.split("@")
    if not local:
        raise AccountError(f"address {address!r} has an empty local part")
    if not domain:
        raise AccountError(f"address {address!r} has an empty domain")
    if any(c.isspace() or not c.isprintable() or c in '"\\' for c in local):
        raise AccountError(f"address {address!r}: local part has spaces, quotes or controls")
    if "/" in local or local.startswith(".") or ".." in local:
        # The local part names the mailbox directory: no path separators, no "..",
        # and no leading dot (Maildir++ folders such as .Junk start with one).
        raise AccountError(
            f"address {address!r}: local part may not contain '/' or '..' or start with '.'"
        )
    if domain.startswith("["):
        raise AccountError(f"address {address!r}: accounts need a domain name, not a literal")
    try:
        domain = canonical_domain(domain)
    except RoutingError as exc:
        raise AccountError(f"address {address!r}: {exc}") from exc
    local = local.lower()
    if len(local.encode("utf-8")) > MAX_LOCAL_PART_OCTETS:
        raise AccountError(f"address {address!r}: local part longer than 64 octets")
    canonical = f"{local}@{domain}"
    if len(canonical.encode("utf-8")) > MAX_ADDRESS_OCTETS:
        raise AccountError(f"address {address!r} longer than 254 octets")
    return canonical


class UserStore:
    """Accounts in one SQLite file. Build with ``UserStore.open``."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        path: Path,
        hasher: PasswordHasher,
        clock: Callable[[], float],
        max_parallel_verifications: int,
        scram_iterations: int = MINIMUM_ITERATIONS,
        credential_cache_ttl: float = 60.0,
    ) -> None:
        self._db = connection
        self._verified = VerifiedCredentials(ttl=credential_cache_ttl)
        self._path = path
        self._hasher = hasher
        self._clock = clock
        self._lock = threading.Lock()
        self._dummy_hash: str | None = None
        self._max_parallel = max_parallel_verifications
        self._executor: ThreadPoolExecutor | None = None
        self._scram_iterations = scram_iterations
        self._decoy_key: bytes | None = None

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], float] = time.time,
        max_parallel_verifications: int | None = None,
        scram_iterations: int = MINIMUM_ITERATIONS,
        credential_cache_ttl: float = 60.0,
    ) -> UserStore:
        """Open (creating if needed, mode 0600) the store at ``path``; the schema is created
        and migrated idempotently. ``hasher`` defaults to argon2id with the library's
        parameters; ``scram_iterations`` (RFC 7677 4: at least 4096) applies to SCRAM
        secrets derived from now on; ``credential_cache_ttl`` 0 turns the cache of
        verified passwords off."""
        if scram_iterations < MINIMUM_ITERATIONS:
            raise AccountError(f"SCRAM iteration count must be at least {MINIMUM_ITERATIONS}")
        try:
            connection = open_private_database(path, _SCHEMA)
        except OSError as exc:
            raise AccountError(f"user database {path}: {exc.strerror or exc}") from exc
        except sqlite3.Error as exc:
            raise AccountError(f"user database {path}: {exc}") from exc
        try:
            _migrate(connection)
        except sqlite3.Error as exc:
            connection.close()
            raise AccountError(f"user database {path}: {exc}") from exc
        parallel = max_parallel_verifications or max(1, min(4, os.cpu_count() or 1))
        return cls(
            connection,
            path,
            hasher or PasswordHasher(),
            clock,
            parallel,
            scram_iterations,
            credential_cache_ttl,
        )

    def __enter__(self) -> UserStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- changes --------------------------------------------------------------------------

    def add(self, address: str, password: str, *, cram_md5: bool = False) -> Account:
        """A new user. ``cram_md5`` also stores the CRAM-MD5 value: pass True only when
        the operator enabled that mechanism (the value is plaintext-equivalent for it)."""
        canonical = canonical_account_address(address)
        # Before the lock: argon2 and PBKDF2 are slow.
        password_hash = self._hash(password)
        forms = self._forms(password, cram_md5=cram_md5)
        created_at = self._clock()
        try:
            self._execute(
                "INSERT INTO accounts (address, password_hash, created_at, scram_sha256, cram_md5)"
                " VALUES (?, ?, ?, ?, ?)",
                (canonical, password_hash, created_at, forms.scram_sha256, forms.cram_md5),
            )
        except sqlite3.IntegrityError as exc:
            raise AccountError(f"user {canonical} exists") from exc
        return Account(canonical, created_at)

    def set_password(self, address: str, password: str, *, cram_md5: bool = False) -> None:
        """Replace every stored form of the password; without ``cram_md5`` the CRAM-MD5
        value is removed (it would no longer match anyway)."""
        canonical = canonical_account_address(address)
        password_hash = self._hash(password)
        forms = self._forms(password, cram_md5=cram_md5)
        changed = self._execute(
            "UPDATE accounts SET password_hash = ?, scram_sha256 = ?, cram_md5 = ?"
            " WHERE address = ?",
            (password_hash, forms.scram_sha256, forms.cram_md5, canonical),
        )
        if changed == 0:
            raise AccountError(f"no user {canonical}")

    def set_disabled(self, address: str, disabled: bool) -> None:
        """A disabled user cannot authenticate; mail to its mailbox is still accepted."""
        canonical = canonical_account_address(address)
        changed = self._execute(
            "UPDATE accounts SET disabled = ? WHERE address = ?", (int(disabled), canonical)
        )
        if changed == 0:
            raise AccountError(f"no user {canonical}")

    def delete(self, address: str) -> None:
        canonical = canonical_account_address(address)
        if self._execute("DELETE FROM accounts WHERE address = ?", (canonical,)) == 0:
            raise AccountError(f"no user {canonical}")

    # --- reads ----------------------------------------------------------------------------

    def list(self) -> list[Account]:
        rows = self._fetch(
            "SELECT address, created_at, disabled FROM accounts ORDER BY address", ()
        )
        return [Account(str(a), float(c), bool(d)) for a, c, d in rows]

    def exists(self, address: str) -> bool:
        """True for any account, disabled or not. Malformed addresses (as the Router may
        pass, e.g. a quoted local part holding "@") simply do not exist."""
        try:
            canonical = canonical_account_address(address)
        except AccountError:
            return False
        return bool(self._fetch("SELECT 1 FROM accounts WHERE address = ?", (canonical,)))

    def verify(self, address: str, password: str) -> bool:
        """Check a password with argon2id. Blocking (~0.1-0.2 s): use verify_async on the
        event loop. Unknown and disabled users cost the same work and return False."""
        return self._verified_hash(address, password) is not None

    def _verified_hash(self, address: str, password: str) -> str | None:
        """``verify``, returning the stored hash the password was found to match (the
        upgraded one when it was re-hashed), or None."""
        try:
            canonical: str | None = canonical_account_address(address)
        except AccountError:
            canonical = None
        rows = (
            self._fetch(
                "SELECT password_hash, disabled FROM accounts WHERE address = ?", (canonical,)
            )
            if canonical is not None
            else []
        )
        if not rows:
            self._check(self._dummy(), password)
            return None
        stored_hash, disabled = str(rows[0][0]), bool(rows[0][1])
        if not self._check(stored_hash, password) or disabled:
            return None
        if self._hasher.check_needs_rehash(stored_hash):
            stored_hash = self._rehash(canonical or "", stored_hash, password)
        self._fill_scram_secret(canonical or "", password)
        return stored_hash

    def scram_secret(self, address: str) -> ScramSecret | None:
        """The SCRAM-SHA-256 secret of an enabled user; None when the user is unknown,
        disabled, or has none yet (see MIGRATION). An indexed read: fine on the loop."""
        return read_scram(self._secret_column("scram_sha256", address))

    def scram_decoy(self, address: str) -> ScramSecret:
        """A secret for a name that has none: its salt is the same on every call for the
        same name, so a client cannot tell unknown users by a changing salt; no proof
        can match its keys."""
        key = self._decoy_secret_key()
        return decoy_scram_secret(key, address, iterations=self._scram_iterations)

    def cram_md5_secret(self, address: str) -> CramMd5Secret | None:
        """The CRAM-MD5 value of an enabled user who has one, else None."""
        return read_cram_md5(self._secret_column("cram_md5", address))

    def is_disabled(self, address: str) -> bool:
        """True only for an existing, disabled account (tokens name users the IdP knows;
        a local account the operator disabled must not log in with one either)."""
        try:
            canonical = canonical_account_address(address)
        except AccountError:
            return False
        rows = self._fetch("SELECT disabled FROM accounts WHERE address = ?", (canonical,))
        return bool(rows and rows[0][0])

    def missing_secret_reason(self, address: str, mechanism: str) -> str:
        """Why ``mechanism``'s secret lookup gave None, for the log line."""
        try:
            canonical = canonical_account_address(address)
        except AccountError as exc:
            return str(exc)
        rows = self._fetch("SELECT disabled FROM accounts WHERE address = ?", (canonical,))
        if not rows:
            return f"no user {canonical}"
        if rows[0][0]:
            return f"user {canonical} is disabled"
        return f"user {canonical} has no {mechanism} secret: set the password again"

    async def verify_async(self, address: str, password: str) -> bool:
        """``verify`` in this store's bounded thread pool, so argon2 never blocks the loop.

        A password verified in the last ``credential_cache_ttl`` seconds against the
        hash still stored is accepted without argon2 (see credential_cache)."""
        try:
            canonical = canonical_account_address(address)
        except AccountError:
            canonical = None
        key = self._verified.key(canonical, password) if canonical is not None else None
        if key is not None and canonical is not None:
            current = self._password_state(canonical)
            if current is not None and not current[1] and self._verified.holds(key, current[0]):
                return True
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self._max_parallel, thread_name_prefix="postgate-argon2"
            )
        loop = asyncio.get_running_loop()
        checked = await loop.run_in_executor(self._executor, self._verified_hash, address, password)
        if checked is not None and key is not None:
            # Remembered against the hash the password was checked against, never one
            # read afterwards: a `user passwd` in between must not inherit the entry.
            self._verified.remember(key, checked)
        return checked is not None

    def _password_state(self, canonical: str) -> tuple[str, bool] | None:
        """(stored hash, disabled) of an account, or None. An indexed read."""
        rows = self._fetch(
            "SELECT password_hash, disabled FROM accounts WHERE address = ?", (canonical,)
        )
        return (str(rows[0][0]), bool(rows[0][1])) if rows else None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        with self._lock:
            self._db.close()

    # --- internals ------------------------------------------------------------------------

    def _hash(self, password: str) -> str:
        if not password:
            raise AccountError("password must not be empty")
        return self._hasher.hash(password)

    def _check(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def _forms(self, password: str, *, cram_md5: bool) -> StoredForms:
        return password_forms(password, scram_iterations=self._scram_iterations, cram_md5=cram_md5)

    def _fill_scram_secret(self, canonical: str, password: str) -> None:
        # Users from before SCRAM support get their secret at their next good login; the
        # condition keeps a concurrent set_password's secret.
        if self._secret_column("scram_sha256", canonical) is not None:
            return
        scram = self._forms(password, cram_md5=False).scram_sha256
        if scram is not None:
            with contextlib.suppress(AccountError):
                self._execute(
                    "UPDATE accounts SET scram_sha256 = ? WHERE address = ?"
                    " AND scram_sha256 IS NULL",
                    (scram, canonical),
                )

    def _secret_column(self, column: str, address: str) -> str | None:
        try:
            canonical = canonical_account_address(address)
        except AccountError:
            return None
        rows = self._fetch(
            f"SELECT {column} FROM accounts WHERE address = ? AND disabled = 0",
            (canonical,),
        )
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def _decoy_secret_key(self) -> bytes:
        if self._decoy_key is None:
            candidate = secrets.token_bytes(32)
            # INSERT OR IGNORE then read: every process sharing the file uses one key.
            self._execute(
                "INSERT OR IGNORE INTO store_secrets (name, value) VALUES ('scram_decoy', ?)",
                (candidate,),
            )
            rows = self._fetch("SELECT value FROM store_secrets WHERE name = 'scram_decoy'", ())
            self._decoy_key = bytes(rows[0][0])
        return self._decoy_key

    def _dummy(self) -> str:
        # Made lazily with this store's hasher, so its cost matches real hashes; a race
        # computes it twice, which is harmless.
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(24))
        return self._dummy_hash

    def _rehash(self, canonical: str, old_hash: str, password: str) -> str:
        """Store a hash with today's parameters; the hash now stored for this password
        (the old one when the upgrade did not happen)."""
        new_hash = self._hasher.hash(password)
        # A failed upgrade is ignored: the login itself succeeded and the next one retries.
        with contextlib.suppress(AccountError):
            # Conditional on the old hash so a concurrent set_password is never undone.
            changed = self._execute(
                "UPDATE accounts SET password_hash = ? WHERE address = ? AND password_hash = ?",
                (new_hash, canonical, old_hash),
            )
            if changed:
                return new_hash
        return old_hash

    def _execute(self, sql: str, parameters: tuple[object, ...]) -> int:
        try:
            with self._lock:
                return self._db.execute(sql, parameters).rowcount
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise AccountError(f"user database {self._path}: {exc}") from exc

    def _fetch(
        self, sql: str, parameters: tuple[object, ...]
    ) -> builtins.list[tuple[Any, ...]]:  # sqlite3 rows are untyped
        try:
            with self._lock:
                return self._db.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise AccountError(f"user database {self._path}: {exc}") from exc


def _migrate(connection: sqlite3.Connection) -> None:
    """Bring the schema to the newest version. BEGIN IMMEDIATE takes the write lock
    first, so when the CLI and the server open an old file at once only one migrates
    and the other sees the new version."""
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    if version >= _MIGRATIONS[-1][0]:
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        for target, script in _MIGRATIONS:
            if version < target:
                for statement in script.split(";"):
                    if statement.strip():
                        connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {target:d}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
