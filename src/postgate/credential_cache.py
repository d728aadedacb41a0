"""credential_cache — recently verified passwords, so AUTH does not pay argon2 every time.

SYNOPSIS
    cache = VerifiedCredentials(ttl=60.0, capacity=10_000)
    key = cache.key("ann@example.org", password)
    cache.holds(key, stored_hash)           # True: this password matched this hash lately
    cache.remember(key, stored_hash)        # after a real argon2 verification succeeded

DESCRIPTION
    A busy submission port sees the same client log in for every message it sends
    (one message per connection is the common pattern of MUAs and apps); argon2 at
    ~0.1 s of CPU per login would make the password hash the bottleneck. Like
    Dovecot's auth_cache, a successful verification is remembered for a short time.

    An entry is tied to the stored hash it was checked against: the caller passes the
    hash it reads now, so a password change (new hash) or a disabled account (the
    caller checks that) takes effect at once, not after the TTL. Failures are never
    remembered, so every wrong guess still costs argon2 and counts for the lockout.

SECURITY
    Entries are keyed by HMAC-SHA-256 of the address and password under a random key
    made at start and kept only in memory: the cache holds no password and nothing
    that can be tested offline against guesses once the process is gone. The
    comparison of keys is a dict lookup (not constant time), which leaks at most
    whether a given guess was recently right, as the 235 reply itself would.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable


class VerifiedCredentials:
    def __init__(
        self,
        *,
        ttl: float = 60.0,
        capacity: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._clock = clock
        self._secret = secrets.token_bytes(32)
        # key -> (stored hash it matched, expiry); insertion order = age order
        self._entries: dict[bytes, tuple[str, float]] = {}

    def key(self, address: str, password: str) -> bytes:
        material = address.encode("utf-8") + b"\0" + password.encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, material, hashlib.sha256).digest()

    def holds(self, key: bytes, stored_hash: str) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            return False
        matched_hash, expires = entry
        if expires <= self._clock() or not hmac.compare_digest(matched_hash, stored_hash):
            del self._entries[key]
            return False
        return True

    def remember(self, key: bytes, stored_hash: str) -> None:
        if self._ttl <= 0:
            return
        self._entries.pop(key, None)
        while len(self._entries) >= self._capacity:
            del self._entries[next(iter(self._entries))]  # the oldest
        self._entries[key] = (stored_hash, self._clock() + self._ttl)

    def __len__(self) -> int:
        return len(self._entries)
