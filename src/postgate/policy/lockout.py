"""policy.lockout — AUTH lockout: fail2ban built in.

SYNOPSIS
    lockout = Lockout(counters, LockoutSettings(max_failures=3, window=900, ban_time=900))
    verdict = await lockout.check(client_address, None)       # at the AUTH command
    verdict = await lockout.check(client_address, authcid)    # before verifying the password
    penalty = await lockout.failed(client_address, authcid)   # after a wrong password
    await asyncio.sleep(penalty.delay); reply with penalty.verdict
    await lockout.succeeded(client_address, user)             # after a right one

DESCRIPTION
    Counts failed AUTH attempts per client address and per account (lower-cased) in a
    fixed window (see counters). The failure that brings a count to ``max_failures``
    bans, for ``ban_time``:

    * the client ADDRESS: every AUTH attempt from it is refused, whatever the account;
    * the ACCOUNT, but only for addresses that have themselves failed against that
      account (within window + ban_time).

    While a ban applies, ``check`` answers ``454 4.7.0 Too many failed authentication
    attempts, try again later`` BEFORE the password is looked at, so a right password
    is refused too and the ban cannot be used as a password oracle. 454 4.7.0 is RFC
    4954 6's "temporary authentication failure": a well-behaved client retries later
    instead of asking the user for a new password.

    Every wrong password is answered ``535 5.7.8`` after ``penalty_delay`` x the
    address's failure count (capped by ``max_penalty_delay``). The caller sleeps
    (``await asyncio.sleep(penalty.delay)``), which holds only that session.

WHY ACCOUNT BANS ARE NARROW
    A plain account ban is a denial-of-service tool: anyone who knows an address can
    lock its owner out by failing three times. Not banning accounts at all lets a
    botnet guess from many addresses, each staying under the per-address limit. The
    middle way chosen here: once an account has collected ``max_failures`` failures
    from anywhere, addresses that have failed for it are refused for it, while the
    owner, logging in from an address with no failure for that account, is not. A
    botnet is held to about one guess per address per ban_time; the owner is not
    locked out by strangers.

    A successful login clears the counters of that address and account: it proves the
    password is known to the client, and keeps an owner's earlier typos from adding up
    to a ban. Bans already set stay until they expire (or ``postgate ban del``).

ADDRESSES
    IPv4 addresses (also IPv4-mapped IPv6) count alone. IPv6 addresses count per
    ``ipv6_prefix_length`` network (default /64), since one host usually holds a whole
    /64 and could otherwise rotate addresses for free. Loopback is NOT exempt.

DIAGNOSTICS
    "auth banned" is logged with client, account, until and failures. When the counters
    backend fails, ``check`` answers 454 4.7.0 (fail closed: a lockout that cannot
    count must not allow unlimited guessing) and ``failed`` still answers 535 with the
    base delay.

CONFIGURATION
    auth.lockout.max_failures (3), window (900 s), ban_time (900 s), penalty_delay
    (1 s), max_penalty_delay (10 s), ipv6_prefix_length (64).

SEE ALSO
    counters, cli.ban_cmd, RFC 4954 6 (AUTH reply codes)
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from postgate.counters import Counters, CountersError
from postgate.policy.verdict import Verdict

log = structlog.get_logger("postgate.lockout")

BANNED_TEXT = "Too many failed authentication attempts, try again later"
INVALID_TEXT = "Authentication credentials invalid"

# Counter keys; ban keys are "addr:<address key>" and "acct:<account key>".
_ADDRESS_COUNTER = "auth:fail:addr:"
_ACCOUNT_COUNTER = "auth:fail:acct:"


@dataclass(frozen=True)
class LockoutSettings:
    max_failures: int = 3
    window: float = 900.0
    ban_time: float = 900.0
    penalty_delay: float = 1.0
    max_penalty_delay: float = 10.0  # stays well below clients' 5-minute reply timeouts
    ipv6_prefix_length: int = 64

    def __post_init__(self) -> None:
        if self.max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        if self.window <= 0 or self.ban_time <= 0:
            raise ValueError("window and ban_time must be positive")
        if self.penalty_delay < 0 or self.max_penalty_delay < 0:
            raise ValueError("penalty delays must not be negative")
        if not 1 <= self.ipv6_prefix_length <= 128:
            raise ValueError("ipv6_prefix_length must be between 1 and 128")


@dataclass(frozen=True)
class Penalty:
    """The reply to a failed AUTH and how long to wait before sending it."""

    verdict: Verdict
    delay: float
    banned_until: float | None = None  # set when this failure started a ban on the address


def address_key(client_address: str, ipv6_prefix_length: int = 64) -> str:
    """The counting unit of a client address: the IPv4 address or the IPv6 network."""
    try:
        ip = ipaddress.ip_address(client_address.strip().strip("[]"))
    except ValueError:
        return client_address.strip().lower()  # not an IP (e.g. a Unix socket peer)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        network = ipaddress.IPv6Network((ip, ipv6_prefix_length), strict=False)
        return str(network) if ipv6_prefix_length < 128 else str(ip)
    return str(ip)


def account_key(account: str) -> str:
    return account.strip().lower()


def address_ban_key(client_address: str, ipv6_prefix_length: int = 64) -> str:
    return f"addr:{address_key(client_address, ipv6_prefix_length)}"


def account_ban_key(account: str) -> str:
    return f"acct:{account_key(account)}"


def pair_counter_key(address: str, account: str) -> str:
    """The mark that ``address`` (an address_key) failed for ``account``: it is what lets
    an account ban apply to that address."""
    return f"auth:fail:pair:{account_key(account)}|{address}"


def counters_for_ban(ban_key: str) -> tuple[str, ...]:
    """The failure counters behind a ban key, cleared when an operator lifts the ban so
    that the next single failure does not ban again at once."""
    kind, _, subject = ban_key.partition(":")
    if kind == "addr":
        return (_ADDRESS_COUNTER + subject,)
    if kind == "acct":
        return (_ACCOUNT_COUNTER + subject,)
    return ()


class Lockout:
    def __init__(
        self,
        counters: Counters,
        settings: LockoutSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._counters = counters
        self._settings = settings
        self._clock = clock

    async def check(self, client_address: str, account: str | None) -> Verdict:
        """CONTINUE, or 454 4.7.0 while the address (or, for an address that failed
        against it, the account) is banned. Call before verifying the password."""
        address = address_key(client_address, self._settings.ipv6_prefix_length)
        try:
            ban = await self._counters.ban(f"addr:{address}")
            if ban is None and account:
                account_ban = await self._counters.ban(account_ban_key(account))
                if account_ban is not None and await self._counters.get(
                    pair_counter_key(address, account)
                ):
                    ban = account_ban
        except CountersError as exc:
            return Verdict.tempfail(
                454, "4.7.0", "Temporary authentication failure", reason=f"lockout: {exc}"
            )
        if ban is None:
            return Verdict.cont()
        return Verdict.tempfail(
            454,
            "4.7.0",
            BANNED_TEXT,
            reason=f"AUTH refused: {ban.key} banned until {ban.until:.0f} ({ban.reason})",
        )

    async def failed(self, client_address: str, account: str | None) -> Penalty:
        """Count a failed AUTH; ban what reached the limit; return the delayed 535."""
        settings = self._settings
        address = address_key(client_address, settings.ipv6_prefix_length)
        try:
            address_failures = await self._counters.incr(
                _ADDRESS_COUNTER + address, settings.window
            )
            account_failures = 0
            if account:
                account_failures = await self._counters.incr(
                    _ACCOUNT_COUNTER + account_key(account), settings.window
                )
                # The mark that lets an account ban apply to this address; it must outlive
                # any account ban it can trigger.
                await self._counters.incr(
                    pair_counter_key(address, account), settings.window + settings.ban_time
                )
            until = self._clock() + settings.ban_time
            banned_until = None
            if address_failures >= settings.max_failures:
                reason = f"{address_failures} failed AUTH attempts from {address}"
                await self._counters.set_ban(f"addr:{address}", until, reason)
                banned_until = until
                log.warning(
                    "auth banned",
                    client=client_address,
                    key=f"addr:{address}",
                    account=account,
                    until=until,
                    failures=address_failures,
                )
            if account and account_failures >= settings.max_failures:
                reason = f"{account_failures} failed AUTH attempts for {account_key(account)}"
                await self._counters.set_ban(account_ban_key(account), until, reason)
                log.warning(
                    "auth banned",
                    client=client_address,
                    key=account_ban_key(account),
                    account=account,
                    until=until,
                    failures=account_failures,
                )
        except CountersError as exc:
            log.error("lockout counters failed", client=client_address, reason=str(exc))
            return Penalty(self._invalid(), min(settings.penalty_delay, settings.max_penalty_delay))
        delay = min(settings.penalty_delay * address_failures, settings.max_penalty_delay)
        return Penalty(self._invalid(), delay, banned_until)

    async def succeeded(self, client_address: str, account: str) -> None:
        """Clear the counters of this address and account (bans stay)."""
        address = address_key(client_address, self._settings.ipv6_prefix_length)
        try:
            await self._counters.reset(
                _ADDRESS_COUNTER + address,
                _ACCOUNT_COUNTER + account_key(account),
                pair_counter_key(address, account),
            )
        except CountersError as exc:
            # The login already succeeded; stale counters only make a later ban sooner.
            log.error("lockout counters failed", client=client_address, reason=str(exc))

    @staticmethod
    def _invalid() -> Verdict:
        # RFC 4954 6: 535 5.7.8 for credentials that do not verify.
        return Verdict.reject(535, "5.7.8", INVALID_TEXT, reason="bad credentials")
