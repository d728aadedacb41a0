"""mailauth.spf — Sender Policy Framework evaluation (RFC 7208) on our resolver.

SYNOPSIS
    result = await check_spf(ip, sender, helo, resolver)   # MAIL FROM (or HELO for <>)
    result = await check_helo(ip, helo, resolver)          # the HELO identity alone
    result.status                                          # SpfStatus.PASS ...

DESCRIPTION
    check_host() of RFC 7208 4, asynchronous, on ``postgate.dns.Resolver`` (or any
    ``MailauthResolver``). Every DNS failure becomes temperror and every broken
    record permerror; the checks never raise.

    Written here rather than wrapping pyspf because pyspf does its DNS through a
    module-level function (``spf.DNSLookup``): feeding it our resolver means either
    replacing that global for the whole process (racy between concurrent checks, and
    against our "no module-level mutable state" rule) or copying its CNAME and cache
    logic into a subclass, and in both cases one thread hop per query. The evaluator
    is small, and the OpenSPF RFC 7208 suite (tests/mailauth/test_spf_suite.py) is
    the judge of its correctness.

LIMITS (RFC 7208 4.6.4)
    10 DNS-querying terms (include, a, mx, ptr, exists, redirect) per evaluation,
    10 MX names per "mx", 10 PTR names per "ptr" (the rest ignored), 2 void
    lookups (empty answer or NXDOMAIN); exceeding one is permerror. Each lookup has
    ``lookup_timeout`` seconds and the whole evaluation ``time_budget`` seconds;
    running out is temperror.

CONFIGURATION
    lookup_timeout (5.0)   seconds for one DNS query
    time_budget (20.0)     seconds for one whole check_host(), RFC 7208 4.6.4 asks >= 20
    receiver ("unknown")   our host name, for %{r} in explanations

SEE ALSO
    mailauth.spf_record, mailauth.results, RFC 7208
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from postgate.dns import DnsError
from postgate.mailauth.lookup import MailauthResolver, bounded
from postgate.mailauth.results import SpfResult, SpfScope, SpfStatus
from postgate.mailauth.spf_record import (
    MacroContext,
    Mechanism,
    SpfPermError,
    check_domain_spec,
    check_macro_string,
    expand,
    is_spf_record,
    parse_record,
)
from postgate.mailauth.verdict_cache import VerdictCache

MAX_DNS_TERMS = 10
MAX_VOID_LOOKUPS = 2
MAX_MX_NAMES = 10
MAX_PTR_NAMES = 10
MAX_INCLUDE_DEPTH = 20  # loops are already cut by the 10-term limit; belt and braces

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_QUALIFIER_STATUS = {
    "+": SpfStatus.PASS,
    "-": SpfStatus.FAIL,
    "~": SpfStatus.SOFTFAIL,
    "?": SpfStatus.NEUTRAL,
}


class _TempError(Exception):
    """A DNS failure that may heal: the whole evaluation is temperror."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: SpfStatus
    explanation: str = ""
    reason: str = ""


class _Evaluation:
    """State of one check_host() run across include/redirect recursion."""

    def __init__(
        self,
        resolver: MailauthResolver,
        ip: IpAddress,
        context: MacroContext,
        lookup_timeout: float,
    ) -> None:
        self.resolver = resolver
        self.ip = ip
        self.context = context
        self.lookup_timeout = lookup_timeout
        self.dns_terms = 0
        self.void_lookups = 0

    # -- DNS, with the RFC 7208 4.6.4 accounting ------------------------------

    def count_term(self) -> None:
        self.dns_terms += 1
        if self.dns_terms > MAX_DNS_TERMS:
            raise SpfPermError(f"more than {MAX_DNS_TERMS} DNS-querying terms")

    def count_void(self, found: bool) -> None:
        if not found:
            self.void_lookups += 1
            if self.void_lookups > MAX_VOID_LOOKUPS:
                raise SpfPermError(f"more than {MAX_VOID_LOOKUPS} void lookups")

    async def txt(self, name: str) -> list[str]:
        try:
            return await bounded(self.resolver.txt(name), self.lookup_timeout, name)
        except DnsError as exc:
            if exc.temporary:
                raise _TempError(f"TXT lookup of {name} failed: {exc}") from exc
            return []

    async def addresses(self, host: str, version: int) -> list[IpAddress]:
        """Addresses of ``host`` of one family (A for IPv4 clients, AAAA for IPv6)."""
        try:
            found = await bounded(self.resolver.addresses(host), self.lookup_timeout, host)
        except DnsError as exc:
            if exc.temporary:
                raise _TempError(f"address lookup of {host} failed: {exc}") from exc
            return []
        parsed = (ipaddress.ip_address(a) for a in found)
        return [a for a in parsed if a.version == version]

    async def mx_hosts(self, domain: str) -> list[str]:
        try:
            records = await bounded(self.resolver.mx(domain), self.lookup_timeout, domain)
        except DnsError as exc:
            if exc.temporary:
                raise _TempError(f"MX lookup of {domain} failed: {exc}") from exc
            return []
        return [r.exchange for r in records or () if r.exchange]

    async def validated_names(self) -> list[str]:
        """RFC 7208 5.5: PTR names of the client whose addresses include it. DNS
        errors here make names drop out rather than fail the check."""
        try:
            names = await bounded(
                self.resolver.ptr(str(self.ip)), self.lookup_timeout, f"PTR {self.ip}"
            )
        except DnsError:
            return []
        validated = []
        for name in names[:MAX_PTR_NAMES]:
            try:
                if self.ip in await self.addresses(name, self.ip.version):
                    validated.append(name)
            except _TempError:
                continue
        return validated

    # -- check_host() ---------------------------------------------------------

    async def check_host(self, domain: str, depth: int = 0) -> _Outcome:
        if depth > MAX_INCLUDE_DEPTH:
            raise SpfPermError("include/redirect nesting too deep")
        context = replace(self.context, domain=domain)
        # RFC 7208 4.3: a malformed or single-label name gives none, not an error.
        if not _plausible_domain(domain):
            return _Outcome(SpfStatus.NONE, reason=f"{domain!r} is not a valid domain")
        records = [r for r in await self.txt(domain) if is_spf_record(r)]
        if not records:
            return _Outcome(SpfStatus.NONE, reason=f"no SPF record at {domain}")
        if len(records) > 1:
            raise SpfPermError(f"{len(records)} SPF records at {domain}")  # RFC 7208 4.5
        record = parse_record(records[0])
        for mechanism in record.mechanisms:
            if await self.matches(mechanism, context, depth):
                status = _QUALIFIER_STATUS[mechanism.qualifier]
                explanation = ""
                if status is SpfStatus.FAIL and record.explanation is not None:
                    explanation = await self.explain(record.explanation, context)
                return _Outcome(status, explanation, f"{domain}: matched {_describe(mechanism)}")
        # RFC 7208 6.1: redirect is ignored when the record has an "all" mechanism.
        if record.redirect is not None and not record.has_all:
            self.count_term()
            target = expand(record.redirect, context)
            outcome = await self.check_host(target, depth + 1)
            if outcome.status is SpfStatus.NONE:
                raise SpfPermError(f"redirect={target}: no SPF record there")
            return outcome
        return _Outcome(SpfStatus.NEUTRAL, reason=f"{domain}: no mechanism matched")

    async def matches(self, mechanism: Mechanism, context: MacroContext, depth: int) -> bool:
        name = mechanism.name
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            return mechanism.network is not None and self.ip in mechanism.network
        self.count_term()
        target = await self.target(mechanism, context)
        if name == "include":
            outcome = await self.check_host(target, depth + 1)
            if outcome.status is SpfStatus.TEMPERROR:
                raise _TempError(outcome.reason)
            if outcome.status in (SpfStatus.PERMERROR, SpfStatus.NONE):
                raise SpfPermError(f"include:{target} gave {outcome.status.value}")
            return outcome.status is SpfStatus.PASS
        if name == "exists":
            # RFC 7208 5.7: always an A query, whatever the client's family.
            found = await self.addresses(target, 4)
            self.count_void(bool(found))
            return bool(found)
        if name == "a":
            found = await self.addresses(target, self.ip.version)
            self.count_void(bool(found))
            return self.in_networks(found, mechanism)
        if name == "mx":
            hosts = await self.mx_hosts(target)
            self.count_void(bool(hosts))
            if len(hosts) > MAX_MX_NAMES:
                raise SpfPermError(f"mx:{target} has more than {MAX_MX_NAMES} MX names")
            for host in hosts:
                if self.in_networks(await self.addresses(host, self.ip.version), mechanism):
                    return True
            return False
        # ptr (RFC 7208 5.5; "SHOULD NOT be published" but must still be evaluated)
        return any(n == target or n.endswith("." + target) for n in await self.validated_names())

    async def target(self, mechanism: Mechanism, context: MacroContext) -> str:
        if mechanism.domain_spec is None:
            return context.domain
        return (await self.expand(mechanism.domain_spec, context)).rstrip(".").lower()

    async def expand(self, spec: str, context: MacroContext, *, explanation: bool = False) -> str:
        if "%{p" in spec.lower():
            names = await self.validated_names()
            exact = [n for n in names if n == context.domain]
            sub = [n for n in names if n.endswith("." + context.domain)]
            # RFC 7208 7.3: prefer the domain itself, then a subdomain of it.
            chosen = (exact or sub or names or ["unknown"])[0]
            context = replace(context, validated_name=chosen)
        return expand(spec, context, explanation=explanation)

    def in_networks(self, addresses: list[IpAddress], mechanism: Mechanism) -> bool:
        prefix = mechanism.cidr4 if self.ip.version == 4 else mechanism.cidr6
        return any(
            self.ip in ipaddress.ip_network(f"{a}/{prefix}", strict=False) for a in addresses
        )

    async def explain(self, exp_spec: str, context: MacroContext) -> str:
        """RFC 7208 6.2: any failure while building the explanation means no
        explanation (the default), never a different result."""
        try:
            target = await self.expand(exp_spec, context)
            check_domain_spec(target)
            texts = await self.txt(target)
            if len(texts) != 1 or not texts[0].isascii():
                return ""
            check_macro_string(texts[0], explanation=True)
            return await self.expand(texts[0], context, explanation=True)
        except (SpfPermError, _TempError):
            return ""


SpfVerdictKey = tuple[str, str, str, str]


class SpfVerdictCache(VerdictCache[SpfVerdictKey, SpfResult]):
    """Recent SPF results by (scope, client address, MAIL FROM, HELO): everything
    check_host() reads from the session (the local part too, for macros). A temperror
    is never kept. See mailauth.verdict_cache."""

    def keeps(self, verdict: SpfResult) -> bool:
        return verdict.status is not SpfStatus.TEMPERROR

    @staticmethod
    def mail_from_key(client_ip: str, mail_from: str, helo: str) -> SpfVerdictKey:
        return ("mailfrom", client_ip, mail_from, helo)

    @staticmethod
    def helo_key(client_ip: str, helo: str) -> SpfVerdictKey:
        return ("helo", client_ip, "", helo)


def _describe(mechanism: Mechanism) -> str:
    text = mechanism.qualifier + mechanism.name
    if mechanism.network is not None:
        return f"{text}:{mechanism.network}"
    if mechanism.domain_spec is not None:
        return f"{text}:{mechanism.domain_spec}"
    return text


def _plausible_domain(domain: str) -> bool:
    labels = domain.rstrip(".").split(".")
    return len(labels) >= 2 and all(0 < len(label) <= 63 for label in labels)


def split_sender(sender: str, helo: str) -> tuple[str, str, SpfScope]:
    """(local-part, domain, scope) of the identity to check (RFC 7208 2.4, 4.3)."""
    sender = sender.strip().strip("<>")
    if not sender:
        return "postmaster", helo, SpfScope.HELO
    local, at, domain = sender.rpartition("@")
    if not at:
        return "postmaster", sender, SpfScope.MAILFROM
    return local or "postmaster", domain, SpfScope.MAILFROM


async def check_spf(
    ip: str,
    sender: str,
    helo: str,
    resolver: MailauthResolver,
    *,
    lookup_timeout: float = 5.0,
    time_budget: float = 20.0,
    receiver: str = "unknown",
    clock: Callable[[], float] = time.time,
) -> SpfResult:
    """SPF for the MAIL FROM identity; for the null reverse-path ``<>`` (or "") the
    HELO identity is checked instead (RFC 7208 2.4). Never raises."""
    local, domain, scope = split_sender(sender, helo)
    return await _run(
        ip, local, domain, scope, helo, resolver, lookup_timeout, time_budget, receiver, clock
    )


async def check_helo(
    ip: str,
    helo: str,
    resolver: MailauthResolver,
    *,
    lookup_timeout: float = 5.0,
    time_budget: float = 20.0,
    receiver: str = "unknown",
    clock: Callable[[], float] = time.time,
) -> SpfResult:
    """SPF for the HELO identity alone (RFC 7208 2.3). Never raises."""
    return await _run(
        ip,
        "postmaster",
        helo,
        SpfScope.HELO,
        helo,
        resolver,
        lookup_timeout,
        time_budget,
        receiver,
        clock,
    )


async def _run(
    ip_text: str,
    local: str,
    domain: str,
    scope: SpfScope,
    helo: str,
    resolver: MailauthResolver,
    lookup_timeout: float,
    time_budget: float,
    receiver: str,
    clock: Callable[[], float],
) -> SpfResult:
    domain = domain.strip().rstrip(".")
    identity = f"{local}@{domain}"

    def result(status: SpfStatus, explanation: str = "", reason: str = "") -> SpfResult:
        return SpfResult(status, scope, identity, domain.lower(), explanation, reason)

    try:
        ip = ipaddress.ip_address(ip_text.strip().strip("[]"))
    except ValueError:
        return result(SpfStatus.PERMERROR, reason=f"client address {ip_text!r} is not an IP")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # RFC 7208 5: an IPv4-mapped client is an IPv4 client
    # RFC 7208 4.3: a domain literal or a non-FQDN identity gives none.
    if domain.startswith("[") or not _plausible_domain(domain):
        return result(SpfStatus.NONE, reason=f"{domain!r} is not a checkable domain")
    context = MacroContext(
        sender=identity,
        local_part=local,
        sender_domain=domain,
        domain=domain,
        ip=ip,
        helo=helo,
        receiver=receiver,
        timestamp=int(clock()),
    )
    evaluation = _Evaluation(resolver, ip, context, lookup_timeout)
    try:
        async with asyncio.timeout(time_budget):
            outcome = await evaluation.check_host(domain.lower())
    except SpfPermError as exc:
        return result(SpfStatus.PERMERROR, reason=str(exc))
    except _TempError as exc:
        return result(SpfStatus.TEMPERROR, reason=str(exc))
    except TimeoutError:
        return result(SpfStatus.TEMPERROR, reason=f"SPF evaluation exceeded {time_budget:g}s")
    except Exception as exc:  # a bug must cost a retry (4xx), never a crash or a pass
        return result(
            SpfStatus.TEMPERROR, reason=f"SPF internal error: {type(exc).__name__}: {exc}"
        )
    return result(outcome.status, outcome.explanation, outcome.reason)
