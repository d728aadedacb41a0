"""dnsrecords.spf — SPF record syntax and the DNS-lookup budget, for `postgate dns check`.

SYNOPSIS
    terms = parse_spf("v=spf1 ip4:192.0.2.0/24 include:_spf.example.net ~all")
    report = await analyse_spf("example.com", resolver)
    report.lookups, report.problems, report.authorizes("192.0.2.25")

DESCRIPTION
    Not an SPF evaluator (the policy package verifies incoming mail): this checks
    what a domain publishes. ``parse_spf`` follows the ABNF of RFC 7208 12.
    ``analyse_spf`` finds the one SPF record (4.5: more than one is a permerror),
    follows include: and redirect= and counts the terms that cost a DNS lookup —
    include, a, mx, ptr, exists and redirect — which must stay at or below 10
    across the whole tree (4.6.4). On the way it collects the networks that
    ip4/ip6/a/mx terms authorise with a pass, so the checker can tell whether our
    sending addresses are covered; terms it cannot judge without a message
    (exists, ptr, macros) make ``complete`` False.

SEE ALSO
    dnsrecords.check, RFC 7208
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from postgate.dns.resolver import DnsError, Resolver

MAX_LOOKUPS = 10  # RFC 7208 4.6.4
MAX_DEPTH = 10
LOOKUP_TERMS = frozenset({"include", "a", "mx", "ptr", "exists", "redirect"})
MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.-]*)=(.*)")
_MECHANISM = re.compile(r"([+?~-]?)([A-Za-z0-9]+)(?::([^/]*))?((?:/\d+)?(?://\d+)?)")
_DOMAIN_SPEC = re.compile(r"[\x21-\x7e]+")


class SpfSyntaxError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SpfTerm:
    name: str  # lower-case mechanism or modifier name
    qualifier: str  # "+", "-", "~", "?"; "" for modifiers
    value: str  # domain-spec / network / modifier value; "" when absent
    cidr: str = ""  # "/24", "//64", "/24//64"

    @property
    def is_modifier(self) -> bool:
        return self.qualifier == ""


@dataclass(slots=True)
class SpfReport:
    record: str | None = None
    lookups: int = 0
    problems: list[str] = field(default_factory=list)
    networks: list[IPNetwork] = field(default_factory=list)
    complete: bool = True
    all_qualifier: str | None = None

    def authorizes(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip.version == n.version and ip in n for n in self.networks)


def parse_spf(text: str) -> list[SpfTerm]:
    """Terms of an SPF record; raises SpfSyntaxError naming the bad term."""
    words = text.split(" ")
    if words[0].lower() != "v=spf1":
        raise SpfSyntaxError("does not start with v=spf1")
    terms: list[SpfTerm] = []
    for word in words[1:]:
        if not word:
            continue  # RFC 7208 12 allows extra spaces between terms
        terms.append(_parse_term(word))
    modifiers = [t.name for t in terms if t.is_modifier]
    for name in ("redirect", "exp"):
        if modifiers.count(name) > 1:
            raise SpfSyntaxError(f"{name}= given more than once (RFC 7208 6)")
    return terms


def _parse_term(word: str) -> SpfTerm:
    modifier = _MODIFIER.fullmatch(word)
    if modifier and modifier.group(1).lower() not in MECHANISMS:
        name, value = modifier.group(1).lower(), modifier.group(2)
        if name in ("redirect", "exp") and not _DOMAIN_SPEC.fullmatch(value):
            raise SpfSyntaxError(f"bad {name}= value in {word!r}")
        return SpfTerm(name, "", value)
    mechanism = _MECHANISM.fullmatch(word)
    if not mechanism or mechanism.group(2).lower() not in MECHANISMS:
        raise SpfSyntaxError(f"unknown term {word!r}")
    qualifier, name, value, cidr = mechanism.groups()
    name = name.lower()
    value = value or ""
    term = SpfTerm(name, qualifier or "+", value, cidr or "")
    _check_mechanism(term, word, has_value=mechanism.group(3) is not None)
    return term


def _check_mechanism(term: SpfTerm, word: str, *, has_value: bool) -> None:
    if term.name in ("include", "exists", "ip4", "ip6") and not term.value:
        raise SpfSyntaxError(f"{term.name} needs a value in {word!r}")
    if term.name in ("all",) and (has_value or term.cidr):
        raise SpfSyntaxError(f"'all' takes no value in {word!r}")
    if term.name in ("include", "exists", "ptr") and term.cidr:
        raise SpfSyntaxError(f"{term.name} takes no prefix length in {word!r}")
    if term.name in ("ip4", "ip6"):
        if "//" in term.cidr:
            raise SpfSyntaxError(f"bad prefix length in {word!r}")
        try:
            network = ipaddress.ip_network(term.value + term.cidr, strict=False)
        except ValueError:
            raise SpfSyntaxError(f"bad network in {word!r}") from None
        if network.version != int(term.name[-1]):
            raise SpfSyntaxError(f"{term.name} with an IPv{network.version} network in {word!r}")
    if term.name in ("a", "mx") and term.cidr:
        v4, _, v6 = term.cidr.partition("//")
        if (v4 and int(v4[1:]) > 32) or (v6 and int(v6) > 128):
            raise SpfSyntaxError(f"prefix length out of range in {word!r}")
    if has_value and term.name not in ("ip4", "ip6") and not _DOMAIN_SPEC.fullmatch(term.value):
        raise SpfSyntaxError(f"bad domain in {word!r}")


async def spf_records(domain: str, resolver: Resolver) -> list[str]:
    """The TXT records of ``domain`` that are SPF records (RFC 7208 4.5)."""
    records = await resolver.txt(domain)
    return [r for r in records if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]


async def analyse_spf(domain: str, resolver: Resolver) -> SpfReport:
    """Syntax, lookup count and authorised networks of ``domain``'s SPF tree."""
    report = SpfReport()
    try:
        records = await spf_records(domain, resolver)
    except DnsError as exc:
        report.problems.append(f"lookup failed: {exc}")
        return report
    if not records:
        report.problems.append("no SPF record")
        return report
    if len(records) > 1:
        report.problems.append(f"{len(records)} SPF records (RFC 7208 4.5: permerror)")
        return report
    report.record = records[0]
    await _walk(domain, records[0], resolver, report, depth=0, seen={domain}, top=True)
    if report.lookups > MAX_LOOKUPS:
        report.problems.append(
            f"{report.lookups} DNS lookups, more than {MAX_LOOKUPS} (RFC 7208 4.6.4: permerror)"
        )
    return report


async def _walk(
    domain: str,
    record: str,
    resolver: Resolver,
    report: SpfReport,
    *,
    depth: int,
    seen: set[str],
    top: bool,
) -> None:
    try:
        terms = parse_spf(record)
    except SpfSyntaxError as exc:
        report.problems.append(f"{domain}: {exc}")
        return
    for term in terms:
        if term.name in LOOKUP_TERMS:
            report.lookups += 1
        if report.lookups > MAX_LOOKUPS:
            return  # the budget is spent; counting on only costs more queries
        if top and term.name == "all":
            report.all_qualifier = term.qualifier
        if "%" in term.value or term.name in ("ptr", "exists"):
            report.complete = False
            continue
        target = term.value or domain
        if term.name in ("include", "redirect"):
            if depth >= MAX_DEPTH or target.lower() in seen:
                report.problems.append(f"{domain}: include/redirect loop at {target}")
                continue
            await _follow(target, resolver, report, depth=depth, seen=seen | {target.lower()})
        elif term.qualifier == "+":
            await _collect(term, target, resolver, report)


async def _follow(
    target: str, resolver: Resolver, report: SpfReport, *, depth: int, seen: set[str]
) -> None:
    try:
        records = await spf_records(target, resolver)
    except DnsError as exc:
        report.problems.append(f"{target}: lookup failed: {exc}")
        return
    if len(records) != 1:
        report.problems.append(f"{target}: {len(records)} SPF records (permerror)")
        return
    await _walk(target, records[0], resolver, report, depth=depth + 1, seen=seen, top=False)


async def _collect(term: SpfTerm, target: str, resolver: Resolver, report: SpfReport) -> None:
    """Networks a pass-qualified ip4/ip6/a/mx term authorises."""
    if term.name in ("ip4", "ip6"):
        report.networks.append(ipaddress.ip_network(term.value + term.cidr, strict=False))
        return
    if term.name not in ("a", "mx"):
        return
    v4_text, _, v6_text = term.cidr.partition("//")
    v4_len = int(v4_text[1:]) if v4_text else 32
    v6_len = int(v6_text) if v6_text else 128
    try:
        if term.name == "a":
            hosts = [target]
        else:
            hosts = [r.exchange for r in (await resolver.mx(target) or []) if r.exchange][:10]
        for host in hosts:
            for address in await resolver.addresses(host):
                ip = ipaddress.ip_address(address)
                length = v4_len if ip.version == 4 else v6_len
                report.networks.append(ipaddress.ip_network(f"{ip}/{length}", strict=False))
    except DnsError as exc:
        report.problems.append(f"{term.name}:{target}: lookup failed: {exc}")
