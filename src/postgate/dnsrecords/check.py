"""dnsrecords.check — compare what a domain publishes in DNS with what this server needs.

SYNOPSIS
    report = await check_domain(
        "example.com", resolver,
        hostname="mx.example.com", sending_addresses=["192.0.2.25"],
        dkim_keys=store.keys("example.com"),
    )
    for result in report.results: print(result.check, result.status, result.detail)
    report.failed                     # any FAIL: `postgate dns check` exits 1

DESCRIPTION
    Each check looks records up through our resolver (so tests point it at a
    real NSD) and gives PASS, WARN or FAIL with one line of detail:

    mx       an MX names ``hostname``; WARN when it is not the most preferred.
    spf      exactly one SPF record (RFC 7208 4.5), valid syntax, at most 10
             DNS-lookup terms across include/redirect (4.6.4), no "+all", and our
             sending addresses authorised (WARN when exists/ptr/macros make that
             undecidable).
    dkim     for each pending, active and retiring selector, the TXT record
             carries our public key. A pending key not yet published is a WARN
             (that is what pending means); a missing or different active or
             retiring key is a FAIL: receivers would fail our signatures.
    dmarc    exactly one record at _dmarc (RFC 7489 6.6.3: several means none
             applies), starting with v=DMARC1, with a valid p= and tags.
    mta-sts  ``_mta-sts`` TXT with v=STSv1 and a valid id (RFC 8461 3.1); missing
             is a WARN (MTA-STS is optional).
    tls-rpt  ``_smtp._tls`` TXT with v=TLSRPTv1 and rua= (RFC 8460 3); missing is a WARN.
    ptr      per sending address: the PTR names the HELO name and that name
             resolves back to the address (forward-confirmed reverse DNS), which
             large receivers require of sending servers.

    DNS failures are reported as FAIL with the error, never raised.

SEE ALSO
    dnsrecords.records, dnsrecords.spf, dkim.keys
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from postgate.dkim.keys import DkimKey, KeyState
from postgate.dkim.txt import key_record_matches, parse_tags
from postgate.dns.resolver import DnsError, Resolver
from postgate.dnsrecords.spf import MAX_LOOKUPS, analyse_spf


class Status(enum.StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class CheckResult:
    check: str
    status: Status
    detail: str
    name: str = ""  # the DNS name looked at


@dataclass(frozen=True, slots=True)
class CheckReport:
    domain: str
    results: tuple[CheckResult, ...]

    @property
    def failed(self) -> bool:
        return any(r.status is Status.FAIL for r in self.results)


async def check_domain(
    domain: str,
    resolver: Resolver,
    *,
    hostname: str,
    sending_addresses: Sequence[str] = (),
    dkim_keys: Sequence[DkimKey] = (),
    helo_name: str | None = None,
) -> CheckReport:
    domain = domain.strip().rstrip(".").lower()
    hostname = hostname.strip().rstrip(".").lower()
    results: list[CheckResult] = []
    results.append(await check_mx(domain, resolver, hostname))
    results.append(await check_spf(domain, resolver, sending_addresses))
    results += await check_dkim(domain, resolver, dkim_keys)
    results.append(await check_dmarc(domain, resolver))
    results.append(await check_mta_sts(domain, resolver))
    results.append(await check_tls_rpt(domain, resolver))
    results += await check_ptr(resolver, sending_addresses, helo_name or hostname)
    return CheckReport(domain, tuple(results))


async def check_mx(domain: str, resolver: Resolver, hostname: str) -> CheckResult:
    try:
        records = await resolver.mx(domain)
    except DnsError as exc:
        return CheckResult("mx", Status.FAIL, f"lookup failed: {exc}", domain)
    if not records:
        return CheckResult("mx", Status.FAIL, f"no MX record; publish: 10 {hostname}.", domain)
    if any(r.exchange == "" for r in records):
        return CheckResult("mx", Status.FAIL, "null MX: the domain accepts no mail", domain)
    ours = [r for r in records if r.exchange == hostname]
    listed = ", ".join(f"{r.preference} {r.exchange}" for r in records)
    if not ours:
        return CheckResult("mx", Status.FAIL, f"MX points at {listed}, not at {hostname}", domain)
    best = min(r.preference for r in records)
    if min(r.preference for r in ours) > best:
        return CheckResult(
            "mx", Status.WARN, f"{hostname} is listed but not most preferred: {listed}", domain
        )
    return CheckResult("mx", Status.PASS, f"MX {listed}", domain)


async def check_spf(
    domain: str, resolver: Resolver, sending_addresses: Sequence[str]
) -> CheckResult:
    report = await analyse_spf(domain, resolver)
    counted = f"{report.lookups}/{MAX_LOOKUPS} DNS lookups"
    if report.problems:
        return CheckResult("spf", Status.FAIL, "; ".join(report.problems), domain)
    if report.all_qualifier == "+":
        return CheckResult("spf", Status.FAIL, "+all lets every host send as the domain", domain)
    missing = [a for a in sending_addresses if not report.authorizes(a)]
    if missing:
        status = Status.FAIL if report.complete else Status.WARN
        maybe = "" if report.complete else " (exists/ptr/macros not evaluated)"
        return CheckResult(
            "spf", status, f"does not authorise {', '.join(missing)}{maybe}; {counted}", domain
        )
    return CheckResult("spf", Status.PASS, f"{report.record} ({counted})", domain)


async def check_dkim(domain: str, resolver: Resolver, keys: Sequence[DkimKey]) -> list[CheckResult]:
    published = [k for k in keys if k.state.published]
    if not published:
        return [
            CheckResult(
                "dkim", Status.WARN, f"no DKIM keys: run `postgate dkim keygen {domain}`", domain
            )
        ]
    results = []
    for key in published:
        check = f"dkim {key.selector}"
        try:
            records = await resolver.txt(key.txt_name)
        except DnsError as exc:
            results.append(CheckResult(check, Status.FAIL, f"lookup failed: {exc}", key.txt_name))
            continue
        matches = any(key_record_matches(r, key.algorithm.value, key.public_key) for r in records)
        if matches:
            detail = f"{key.algorithm.signature_algorithm} key published ({key.state.value})"
            results.append(CheckResult(check, Status.PASS, detail, key.txt_name))
            continue
        problem = "a different key is published" if records else "not published"
        status = Status.WARN if key.state is KeyState.PENDING else Status.FAIL
        detail = f"{problem} ({key.state.value}); publish: {key.txt_value}"
        results.append(CheckResult(check, status, detail, key.txt_name))
    return results


DMARC_POLICIES = ("none", "quarantine", "reject")


def dmarc_problems(record: str) -> list[str]:
    """What is wrong with a DMARC record (RFC 7489 6.3, 6.4); [] when nothing."""
    try:
        tags = parse_tags(record)
    except ValueError as exc:
        return [str(exc)]
    problems = []
    if list(tags)[:1] != ["v"] or tags["v"] != "DMARC1":
        problems.append("v=DMARC1 must come first")
    if tags.get("p") not in DMARC_POLICIES:
        problems.append(f"p= must be one of {', '.join(DMARC_POLICIES)}")
    if "sp" in tags and tags["sp"] not in DMARC_POLICIES:
        problems.append("bad sp=")
    for tag in ("adkim", "aspf"):
        if tag in tags and tags[tag] not in ("r", "s"):
            problems.append(f"{tag}= must be r or s")
    if "pct" in tags and not (tags["pct"].isdigit() and 0 <= int(tags["pct"]) <= 100):
        problems.append("pct= must be 0-100")
    for tag in ("rua", "ruf"):
        for uri in filter(None, (u.strip() for u in tags.get(tag, "").split(","))):
            if ":" not in uri:
                problems.append(f"{tag}= entry {uri!r} is not a URI (mailto:...)")
    return problems


async def check_dmarc(domain: str, resolver: Resolver) -> CheckResult:
    name = f"_dmarc.{domain}"
    try:
        records = [r for r in await resolver.txt(name) if r.startswith("v=DMARC1")]
    except DnsError as exc:
        return CheckResult("dmarc", Status.FAIL, f"lookup failed: {exc}", name)
    if not records:
        return CheckResult("dmarc", Status.FAIL, "no DMARC record", name)
    if len(records) > 1:
        return CheckResult(
            "dmarc", Status.FAIL, f"{len(records)} DMARC records: receivers ignore all", name
        )
    problems = dmarc_problems(records[0])
    if problems:
        return CheckResult("dmarc", Status.FAIL, "; ".join(problems), name)
    return CheckResult("dmarc", Status.PASS, records[0], name)


async def _tagged_record(
    check: str, name: str, resolver: Resolver, version: str, required: str, valid: re.Pattern[str]
) -> CheckResult:
    try:
        records = [r for r in await resolver.txt(name) if r.startswith(f"v={version}")]
    except DnsError as exc:
        return CheckResult(check, Status.FAIL, f"lookup failed: {exc}", name)
    if not records:
        return CheckResult(check, Status.WARN, "not published (optional)", name)
    if len(records) > 1:
        return CheckResult(check, Status.FAIL, f"{len(records)} records; publish one", name)
    try:
        value = parse_tags(records[0]).get(required, "")
    except ValueError as exc:
        return CheckResult(check, Status.FAIL, str(exc), name)
    if not valid.fullmatch(value):
        return CheckResult(check, Status.FAIL, f"bad or missing {required}=", name)
    return CheckResult(check, Status.PASS, records[0], name)


async def check_mta_sts(domain: str, resolver: Resolver) -> CheckResult:
    return await _tagged_record(
        "mta-sts", f"_mta-sts.{domain}", resolver, "STSv1", "id", re.compile(r"[A-Za-z0-9]{1,32}")
    )


async def check_tls_rpt(domain: str, resolver: Resolver) -> CheckResult:
    return await _tagged_record(
        "tls-rpt", f"_smtp._tls.{domain}", resolver, "TLSRPTv1", "rua", re.compile(r"\S+:\S+")
    )


async def check_ptr(
    resolver: Resolver, sending_addresses: Sequence[str], helo_name: str
) -> list[CheckResult]:
    if not sending_addresses:
        return [CheckResult("ptr", Status.WARN, "no sending addresses given; not checked")]
    results = []
    for address in sending_addresses:
        check = f"ptr {address}"
        try:
            names = await resolver.ptr(address)
            if helo_name not in names:
                shown = ", ".join(names) or "no PTR record"
                results.append(
                    CheckResult(check, Status.FAIL, f"{shown}; should be {helo_name}", address)
                )
                continue
            forward = await resolver.addresses(helo_name)
        except DnsError as exc:
            results.append(CheckResult(check, Status.FAIL, f"lookup failed: {exc}", address))
            continue
        if not _same_address(address, forward):
            detail = f"PTR is {helo_name}, but {helo_name} does not resolve to {address}"
            results.append(CheckResult(check, Status.FAIL, detail, address))
            continue
        results.append(CheckResult(check, Status.PASS, f"{helo_name}, forward-confirmed", address))
    return results


def _same_address(address: str, candidates: Sequence[str]) -> bool:
    wanted = ipaddress.ip_address(address)
    return any(ipaddress.ip_address(c) == wanted for c in candidates)
