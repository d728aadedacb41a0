"""delivery.mx — where to deliver mail for a domain.

SYNOPSIS
    hosts = await resolve_mx(resolver, "example.org", local_names={"mail.ours.test"},
                             local_addresses={"192.0.2.25"})
    for host in hosts: ... try host.addresses in order ...

DESCRIPTION
    Turns a recipient domain into the ordered list of SMTP servers to try, as RFC
    5321 5.1 describes, or into an ``MxError`` carrying the enhanced status code
    and text for the recipient's DSN. No connection is made here.

    1. An address literal ("[192.0.2.1]", "[IPv6:2001:db8::1]") is its own host.
    2. MX records are sorted by preference; hosts of equal preference are
       shuffled to spread the load (RFC 5321 5.1), with an injectable
       ``random.Random`` so tests are repeatable.
    3. No MX records: the domain's own A/AAAA is the implicit MX (``implicit=True``).
       RFC 5321 5.1 does not allow falling back to the domain's address when MX
       records exist but none is usable.
    4. Null MX (RFC 7505: the only MX is "." with preference 0): permanent
       failure 5.1.10. A lone "." with another preference is treated the same
       (the intent is the same; "." can never be resolved). A "." mixed with real
       MX records is a broken zone; the "." is ignored and the rest used.
    5. Loop detection (RFC 5321 5.1, last paragraphs): if an MX is one of our own
       names, or resolves to one of our addresses, we are one of the domain's
       MX hosts, so we may only hand the mail to a host of strictly better
       preference: that MX and every MX of equal or worse preference are dropped.
       If nothing remains: permanent failure 5.4.6 "loops back to myself".
    6. MX targets are looked up as host names (A/AAAA), following CNAMEs as the
       resolver does. RFC 5321 5.1 says the data of an MX "MUST contain a domain
       name", so an IP address written as an MX target is looked up as a name
       too (and normally yields nothing) instead of being used as an address.
       Hosts without any address are dropped.

DIAGNOSTICS
    MxError(temporary=True, "4.4.3")  a DNS lookup failed temporarily (SERVFAIL,
                                      timeout) and no usable host is left.
    MxError(temporary=False, "5.1.2") the domain does not exist, or has no MX
                                      and no address.
    MxError(temporary=False, "5.4.4") MX records exist but none has an address.
    MxError(temporary=False, "5.4.6") mail for the domain would loop back to us.
    NullMxError (permanent, "5.1.10") the domain publishes a null MX.

CONFIGURATION
    max_hosts (16)   MX hosts whose addresses are looked up, best first; a bound
                     against zones that publish hundreds of MX records.

SEE ALSO
    dns.resolver, delivery.smtp, RFC 5321 5.1, RFC 7505, RFC 3463
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from itertools import groupby

from postgate.dns.resolver import DnsError, MxRecord, Resolver, canonical_name


@dataclass(frozen=True, slots=True)
class MxHost:
    """One SMTP server to try. ``implicit`` is True when there were no MX records
    and the domain's own addresses are used (or the domain is an address literal)."""

    name: str
    preference: int
    addresses: tuple[str, ...]
    implicit: bool


class MxError(Exception):
    """The domain cannot be routed now (``temporary``) or ever. ``enhanced`` is the
    RFC 3463 code for the recipient's status, ``text`` the reason for the DSN."""

    def __init__(self, *, temporary: bool, enhanced: str, text: str) -> None:
        super().__init__(f"{enhanced} {text}")
        self.temporary = temporary
        self.enhanced = enhanced
        self.text = text


class NullMxError(MxError):
    """RFC 7505 3: the domain says it accepts no mail at all."""

    def __init__(self, domain: str) -> None:
        super().__init__(
            temporary=False,
            enhanced="5.1.10",
            text=f"domain {domain} does not accept mail (null MX)",
        )


async def resolve_mx(
    resolver: Resolver,
    domain: str,
    *,
    local_names: Collection[str],
    local_addresses: Collection[str] = (),
    rng: random.Random | None = None,
    max_hosts: int = 16,
) -> list[MxHost]:
    """The hosts to try for ``domain``, best first; see the module docstring."""
    ours = _LocalIdentity(local_names, local_addresses)
    literal = _address_literal(domain)
    if literal is not None:
        if ours.has_address(literal):
            raise _loop_error(domain)
        return [MxHost(name=domain, preference=0, addresses=(literal,), implicit=True)]

    try:
        domain = canonical_name(domain)
        records = await resolver.mx(domain)
    except DnsError as exc:
        raise _dns_error(domain, exc) from exc
    if not records:
        return await _implicit_mx(resolver, domain, ours)
    if all(record.exchange == "" for record in records):
        raise NullMxError(domain)

    ordered = _order(
        [record for record in records if record.exchange != ""], rng or random.Random()
    )
    ordered = ours.cut_at_name(ordered)
    if not ordered:
        raise _loop_error(domain)
    ordered = ordered[:max_hosts]

    lookups = await asyncio.gather(
        *(resolver.addresses(record.exchange) for record in ordered), return_exceptions=True
    )
    hosts: list[MxHost] = []
    temporary: list[tuple[int, DnsError]] = []
    cut: int | None = None
    for record, lookup in zip(ordered, lookups, strict=True):
        if isinstance(lookup, BaseException):
            if not isinstance(lookup, DnsError):
                raise lookup
            if lookup.temporary:
                temporary.append((record.preference, lookup))
            continue
        if any(ours.has_address(address) for address in lookup):
            # RFC 5321 5.1: a host that is us by address counts as us by name.
            cut = record.preference
            break
        if lookup:
            hosts.append(MxHost(record.exchange, record.preference, tuple(lookup), False))
    if cut is not None:
        hosts = [host for host in hosts if host.preference < cut]
        temporary = [(preference, exc) for preference, exc in temporary if preference < cut]
    if hosts:
        return hosts
    if temporary:
        # A better host may come back; deferring beats bouncing or looping.
        raise _dns_error(domain, temporary[0][1])
    if cut is not None:
        raise _loop_error(domain)
    raise MxError(
        temporary=False,
        enhanced="5.4.4",
        text=f"no MX host for {domain} has an address",
    )


class _LocalIdentity:
    """Our own names and addresses, normalised for comparison."""

    def __init__(self, names: Collection[str], addresses: Collection[str]) -> None:
        self._names = {_normalised_name(name) for name in names}
        self._addresses = {_normalised_address(address) for address in addresses}

    def is_us(self, name: str) -> bool:
        return _normalised_name(name) in self._names

    def has_address(self, address: str) -> bool:
        return _normalised_address(address) in self._addresses

    def cut_at_name(self, ordered: Sequence[MxRecord]) -> list[MxRecord]:
        """Drop our own MX and every MX of equal or worse preference."""
        ours = [record.preference for record in ordered if self.is_us(record.exchange)]
        if not ours:
            return list(ordered)
        return [record for record in ordered if record.preference < min(ours)]


async def _implicit_mx(resolver: Resolver, domain: str, ours: _LocalIdentity) -> list[MxHost]:
    # RFC 5321 5.1: "If an empty list of MXs is returned, the address is treated
    # as if it was associated with an implicit MX RR, with a preference of 0,
    # pointing to that host."
    if ours.is_us(domain):
        raise _loop_error(domain)
    try:
        addresses = await resolver.addresses(domain)
    except DnsError as exc:
        raise _dns_error(domain, exc) from exc
    if not addresses:
        raise MxError(
            temporary=False,
            enhanced="5.1.2",
            text=f"domain {domain} has no MX and no address record",
        )
    if any(ours.has_address(address) for address in addresses):
        raise _loop_error(domain)
    return [MxHost(name=domain, preference=0, addresses=tuple(addresses), implicit=True)]


def _order(records: Sequence[MxRecord], rng: random.Random) -> list[MxRecord]:
    """Sort by preference, shuffling each group of equal preference (RFC 5321 5.1)."""
    ordered: list[MxRecord] = []
    by_preference = sorted(records, key=lambda record: record.preference)
    for _, group in groupby(by_preference, key=lambda record: record.preference):
        same = list(group)
        rng.shuffle(same)
        ordered.extend(same)
    return ordered


def _address_literal(domain: str) -> str | None:
    """The address inside an RFC 5321 4.1.3 address literal, else None."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError as exc:
        raise MxError(
            temporary=False, enhanced="5.1.2", text=f"bad address literal {domain}"
        ) from exc


def _normalised_name(name: str) -> str:
    try:
        return canonical_name(name)
    except DnsError:
        return name.strip().rstrip(".").lower()


def _normalised_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.strip().strip("[]")))
    except ValueError:
        return address.strip().lower()


def _loop_error(domain: str) -> MxError:
    return MxError(
        temporary=False, enhanced="5.4.6", text=f"mail for {domain} loops back to myself"
    )


def _dns_error(domain: str, exc: DnsError) -> MxError:
    if exc.temporary:
        return MxError(
            temporary=True,
            enhanced="4.4.3",
            text=f"DNS lookup for {domain} failed temporarily: {exc}",
        )
    return MxError(temporary=False, enhanced="5.1.2", text=f"domain {domain} not found")
