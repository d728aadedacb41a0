"""dns.resolver — asynchronous DNS lookups for the mail system.

SYNOPSIS
    resolver = Resolver(["127.0.0.1:5353"], timeout=5.0, lifetime=10.0)
    records = await resolver.mx("example.org")        # list[MxRecord] | None
    addresses = await resolver.addresses("mx.example.org")
    strings = await resolver.txt("_dmarc.example.org")
    names = await resolver.ptr("192.0.2.1")

DESCRIPTION
    A thin wrapper around dnspython's asyncio stub resolver that answers in mail
    terms and sorts failures into the two kinds a mail system cares about:
    permanent (the name does not exist: NXDOMAIN, a malformed name) and temporary
    (SERVFAIL, REFUSED, timeouts, no usable nameserver). Every failure is a
    ``DnsError`` whose ``temporary`` flag says which; callers map it to a 4xx or 5xx.

    "No such record" is not an error: ``mx`` returns None when the name exists but
    has no MX records (RFC 5321 5.1 then asks for the implicit MX), and
    ``addresses``, ``txt`` and ``ptr`` return an empty list for NXDOMAIN and for an
    empty answer alike. Only ``mx`` raises on NXDOMAIN, because there the
    difference decides between "domain not found" and "try the implicit MX".

    Names are looked up as absolute names with no search list, so a mail domain
    never picks up the local resolv.conf search suffix. Internationalised names
    are IDNA-encoded by dnspython. Names in results are lower-case A-labels
    without the trailing dot.

CACHE
    Each Resolver keeps its own bounded LRU cache (``cache_size`` entries).
    Positive answers live for the answer's minimum TTL along a CNAME chain;
    negative answers for the SOA negative TTL (RFC 2308 5). Both are capped
    (``max_ttl``, ``max_negative_ttl``) so a stale answer does not outlive an
    operator's fix by hours. Temporary failures are never cached.

CONFIGURATION
    nameservers (system resolv.conf)   "127.0.0.1:5353", "[::1]:53", "::1", "192.0.2.1"
    timeout (5.0)                      seconds to wait for one server's reply
    lifetime (10.0)                    seconds for the whole lookup, retries included
    prefer_ipv4 (False)                order of ``addresses``: IPv6 first by default

SEE ALSO
    dns.cache, delivery.mx, RFC 1035, RFC 2308, RFC 5321 5.1
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdata
import dns.rdatatype
import dns.resolver
import dns.reversename
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from postgate.dns.cache import TtlCache


class DnsError(Exception):
    """A lookup that gave no usable answer. ``temporary`` is True for SERVFAIL,
    timeouts and unreachable servers (try again later) and False for NXDOMAIN and
    malformed names (retrying will not help)."""

    def __init__(self, message: str, *, temporary: bool, name: str = "", rdtype: str = "") -> None:
        super().__init__(message)
        self.temporary = temporary
        self.name = name
        self.rdtype = rdtype


@dataclass(frozen=True, slots=True)
class MxRecord:
    """One MX record. ``exchange`` is lower-case without the trailing dot, and ""
    for the null MX target "." (RFC 7505)."""

    preference: int
    exchange: str


@dataclass(frozen=True, slots=True)
class _Answer:
    """What the cache stores for one (name, type): the records, or NXDOMAIN."""

    records: tuple[dns.rdata.Rdata, ...]
    nxdomain: bool


@functools.lru_cache(maxsize=8192)
def canonical_name(name: str) -> str:
    """The form used to compare host names: lower-case A-labels, no trailing dot.

    Raises DnsError(temporary=False) for a name that cannot be a domain name.
    Remembered (a pure function of its text): every cached lookup starts here, and
    parsing with dnspython costs more than the cache hit it leads to. A raised error
    is not remembered.
    """
    try:
        parsed = dns.name.from_text(name.strip())
    except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
        raise DnsError(f"invalid domain name {name!r}: {exc}", temporary=False, name=name) from exc
    return _name_text(parsed)


def _name_text(name: dns.name.Name) -> str:
    """Lower-case text of an absolute name without the final dot; "" for the root."""
    if name == dns.name.root:
        return ""
    text: str = name.to_text(omit_final_dot=True)
    return text.lower()


def parse_nameserver(spec: str) -> tuple[str, int]:
    """Split "127.0.0.1:5353", "[::1]:5353", "::1" or "192.0.2.1" into (address, port).

    A bare IPv6 address has colons of its own, so a port needs the bracket form.
    """
    spec = spec.strip()
    if spec.startswith("["):
        address, bracket, rest = spec[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"bad nameserver: {spec!r}")
        port = int(rest[1:]) if rest else 53
    elif spec.count(":") == 1:
        address, _, port_text = spec.partition(":")
        port = int(port_text)
    else:
        address, port = spec, 53
    ipaddress.ip_address(address)  # raises ValueError for a host name or garbage
    if not 0 < port < 65536:
        raise ValueError(f"nameserver port out of range: {spec!r}")
    return address, port


class Resolver:
    """Async DNS lookups with a per-instance cache; see the module docstring."""

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        *,
        timeout: float = 5.0,
        lifetime: float = 10.0,
        prefer_ipv4: bool = False,
        cache_size: int = 4096,
        max_ttl: float = 3600.0,
        max_negative_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(address, port)
                for address, port in map(parse_nameserver, nameservers)
            ]
        else:
            try:
                resolver = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration as exc:
                raise DnsError(f"no resolver configuration: {exc}", temporary=True) from exc
        resolver.timeout = timeout
        resolver.lifetime = lifetime
        self._resolver = resolver
        self._prefer_ipv4 = prefer_ipv4
        self._max_ttl = max_ttl
        self._max_negative_ttl = max_negative_ttl
        self._cache: TtlCache[tuple[str, int], _Answer] = TtlCache(cache_size, clock=clock)

    async def mx(self, domain: str) -> list[MxRecord] | None:
        """MX records of ``domain`` in DNS order (sorting is the caller's job).

        None when the domain exists but has no MX; DnsError(temporary=False) when
        it does not exist (NXDOMAIN).
        """
        answer = await self._lookup(domain, dns.rdatatype.MX)
        if answer.nxdomain:
            raise DnsError(f"{domain}: domain not found", temporary=False, name=domain, rdtype="MX")
        records = [
            MxRecord(
                preference=int(rdata.preference),
                # The root name "." becomes "", the null MX marker of RFC 7505.
                exchange=_name_text(rdata.exchange),
            )
            for rdata in answer.records
            if isinstance(rdata, MX)
        ]
        return records or None

    async def addresses(self, host: str, *, prefer_ipv4: bool | None = None) -> list[str]:
        """IPv6 and IPv4 addresses of ``host`` (CNAMEs followed), [] when none.

        Both lookups run concurrently. If one family fails temporarily while the
        other answers, the answer is used; only when neither gives an address and
        at least one failed temporarily is DnsError(temporary=True) raised.
        """
        results = await asyncio.gather(
            self._lookup(host, dns.rdatatype.AAAA),
            self._lookup(host, dns.rdatatype.A),
            return_exceptions=True,
        )
        by_family: list[list[str]] = []
        failure: BaseException | None = None
        for result in results:
            if isinstance(result, DnsError):
                failure = result
                by_family.append([])
            elif isinstance(result, BaseException):
                raise result
            else:
                by_family.append([r.address for r in result.records if isinstance(r, A | AAAA)])
        ipv6, ipv4 = by_family
        if failure is not None and not ipv6 and not ipv4:
            raise failure
        first_ipv4 = self._prefer_ipv4 if prefer_ipv4 is None else prefer_ipv4
        return ipv4 + ipv6 if first_ipv4 else ipv6 + ipv4

    async def txt(self, name: str) -> list[str]:
        """TXT records of ``name``, each record's strings joined (RFC 7208 3.3,
        RFC 6376 3.6.2.2), decoded as UTF-8 with replacement; [] when none."""
        answer = await self._lookup(name, dns.rdatatype.TXT)
        return [
            b"".join(rdata.strings).decode("utf-8", "replace")
            for rdata in answer.records
            if isinstance(rdata, TXT)
        ]

    async def ptr(self, address: str) -> list[str]:
        """Reverse names of an IPv4 or IPv6 address, lower-case, no trailing dot."""
        try:
            reverse = dns.reversename.from_address(address)
        except (ValueError, dns.exception.DNSException) as exc:
            raise DnsError(
                f"not an IP address: {address!r}", temporary=False, name=address, rdtype="PTR"
            ) from exc
        answer = await self._lookup(reverse.to_text(), dns.rdatatype.PTR)
        return [_name_text(rdata.target) for rdata in answer.records if isinstance(rdata, PTR)]

    async def _lookup(self, name: str, rdtype: dns.rdatatype.RdataType) -> _Answer:
        type_text = dns.rdatatype.to_text(rdtype)
        key = (canonical_name(name), int(rdtype))
        if not key[0]:
            raise DnsError("cannot look up the root name", temporary=False, name=name)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        qname = dns.name.from_text(key[0])
        try:
            result = await self._resolver.resolve(
                qname, rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN as exc:
            answer = _Answer(records=(), nxdomain=True)
            self._cache.put(key, answer, min(_nxdomain_ttl(exc), self._max_negative_ttl))
            return answer
        except dns.resolver.YXDOMAIN as exc:
            raise DnsError(
                f"{name}/{type_text}: name too long after DNAME substitution",
                temporary=False,
                name=name,
                rdtype=type_text,
            ) from exc
        except dns.exception.Timeout as exc:
            raise DnsError(
                f"{name}/{type_text}: DNS timeout", temporary=True, name=name, rdtype=type_text
            ) from exc
        except dns.exception.DNSException as exc:
            # NoNameservers (SERVFAIL/REFUSED from every server), malformed
            # replies, CNAME chains that are too long: all may heal, so retry later.
            raise DnsError(
                f"{name}/{type_text}: {exc}", temporary=True, name=name, rdtype=type_text
            ) from exc
        records = tuple(result.rrset) if result.rrset is not None else ()
        answer = _Answer(records=records, nxdomain=False)
        ttl_cap = self._max_ttl if records else self._max_negative_ttl
        self._cache.put(key, answer, min(float(result.chaining_result.minimum_ttl), ttl_cap))
        return answer


def _nxdomain_ttl(exc: dns.resolver.NXDOMAIN) -> float:
    """RFC 2308 5: the negative TTL is min(SOA TTL, SOA MINIMUM) from the authority
    section; dnspython's chaining computes exactly that."""
    try:
        responses = exc.responses()  # type: ignore[no-untyped-call]
    except (AttributeError, KeyError):
        return 0.0
    ttls = []
    for response in responses.values():
        try:
            ttls.append(float(response.resolve_chaining().minimum_ttl))
        except dns.exception.DNSException:
            continue
    return min(ttls, default=0.0)
