"""DMARC (RFC 9989): discovery by tree walk, alignment, sp/np, t=, errors — table-driven."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from postgate.mailauth.dmarc import check_dmarc, organizational_domain, tree_walk_targets
from postgate.mailauth.dmarc_record import PsdFlag, parse_dmarc_record
from postgate.mailauth.results import (
    DkimSignatureResult,
    DmarcPolicy,
    DmarcStatus,
    SpfResult,
    SpfScope,
    SpfStatus,
)
from tests.mailauth.zone_stub import ZoneResolver

ZONE: dict[str, list[tuple[str, Any]]] = {
    # example.com: reject, relaxed; subdomains quarantine; non-existent subdomains reject
    "_dmarc.example.com": [("TXT", "v=DMARC1; p=reject; sp=quarantine; np=reject")],
    "example.com": [("A", "192.0.2.10"), ("MX", [10, "mx.example.com"])],
    "mail.example.com": [("A", "192.0.2.11")],
    "news.example.com": [("MX", [10, "mx.example.com"])],
    "bounces.example.com": [("A", "192.0.2.12")],
    # strict alignment
    "_dmarc.strict.test": [("TXT", "v=DMARC1; p=reject; adkim=s; aspf=s")],
    "strict.test": [("A", "192.0.2.20")],
    "mail.strict.test": [("A", "192.0.2.21")],
    # testing flag lowers the policy one step
    "_dmarc.testing.test": [("TXT", "v=DMARC1; p=reject; t=y")],
    "testing.test": [("A", "192.0.2.30")],
    # no sp: subdomains get p; no np: non-existent get sp
    "_dmarc.plain.test": [("TXT", "v=DMARC1; p=quarantine")],
    "_dmarc.withsp.test": [("TXT", "v=DMARC1; p=none; sp=reject")],
    # two records: both discarded, walk goes on (to nothing here)
    "_dmarc.double.test": [("TXT", "v=DMARC1; p=reject"), ("TXT", "v=DMARC1; p=none")],
    # not a DMARC record at all
    "_dmarc.notdmarc.test": [("TXT", "v=spf1 -all"), ("TXT", "hello")],
    # a public suffix with psd=y and a registrant below it
    "_dmarc.co.uk": [("TXT", "v=DMARC1; p=none; psd=y")],
    "_dmarc.example.co.uk": [("TXT", "v=DMARC1; p=reject; sp=quarantine")],
    "b.example.co.uk": [("A", "192.0.2.40")],
    "a.b.example.co.uk": [("A", "192.0.2.41")],
    "other.co.uk": [("A", "192.0.2.42")],
    # the same without psd=y: the suffix's record makes it the org domain
    "_dmarc.nopsd.uk": [("TXT", "v=DMARC1; p=reject")],
    "one.nopsd.uk": [("A", "192.0.2.50")],
    "two.nopsd.uk": [("A", "192.0.2.51")],
    # DNS trouble
    "_dmarc.broken.test": [("TIMEOUT", None)],
}


def spf(domain: str, status: SpfStatus = SpfStatus.PASS) -> SpfResult:
    return SpfResult(status, SpfScope.MAILFROM, f"bounce@{domain}", domain)


def dkim(domain: str, result: str = "pass") -> DkimSignatureResult:
    return DkimSignatureResult(domain, "sel", "rsa-sha256", result)


@dataclass
class Case:
    from_domain: str
    spf: SpfResult | None
    dkim: list[DkimSignatureResult] = field(default_factory=list)
    status: DmarcStatus = DmarcStatus.PASS
    policy: DmarcPolicy = DmarcPolicy.NONE
    policy_domain: str = ""


CASES = {
    "spf-exact": Case("example.com", spf("example.com"), policy_domain="example.com"),
    "spf-relaxed-subdomain": Case("example.com", spf("bounces.example.com")),
    "dkim-relaxed-subdomain": Case("example.com", None, [dkim("mail.example.com")]),
    "dkim-second-signature-aligns": Case(
        "example.com", None, [dkim("other.test"), dkim("example.com")]
    ),
    "spf-strict-exact": Case("strict.test", spf("strict.test")),
    "spf-strict-subdomain-fails": Case(
        "strict.test", spf("mail.strict.test"), status=DmarcStatus.FAIL, policy=DmarcPolicy.REJECT
    ),
    "dkim-strict-subdomain-fails": Case(
        "strict.test",
        None,
        [dkim("mail.strict.test")],
        status=DmarcStatus.FAIL,
        policy=DmarcPolicy.REJECT,
    ),
    "unaligned-pass-is-fail": Case(
        "example.com",
        spf("other.test"),
        [dkim("other.test")],
        status=DmarcStatus.FAIL,
        policy=DmarcPolicy.REJECT,
    ),
    "dkim-fail-is-not-pass": Case(
        "example.com",
        spf("example.com", SpfStatus.SOFTFAIL),
        [dkim("example.com", "fail")],
        status=DmarcStatus.FAIL,
        policy=DmarcPolicy.REJECT,
    ),
    "existing-subdomain-gets-sp": Case(
        "mail.example.com",
        None,
        status=DmarcStatus.FAIL,
        policy=DmarcPolicy.QUARANTINE,
        policy_domain="example.com",
    ),
    "mx-only-subdomain-exists": Case(
        "news.example.com", None, status=DmarcStatus.FAIL, policy=DmarcPolicy.QUARANTINE
    ),
    "nonexistent-subdomain-gets-np": Case(
        "nothere.example.com", None, status=DmarcStatus.FAIL, policy=DmarcPolicy.REJECT
    ),
    "no-sp-subdomain-gets-p": Case(
        "x.plain.test", None, status=DmarcStatus.FAIL, policy=DmarcPolicy.QUARANTINE
    ),
    "no-np-nonexistent-gets-sp": Case(
        "gone.withsp.test", None, status=DmarcStatus.FAIL, policy=DmarcPolicy.REJECT
    ),
    "testing-lowers-reject": Case(
        "testing.test", None, status=DmarcStatus.FAIL, policy=DmarcPolicy.QUARANTINE
    ),
    "missing-record": Case("norecord.test", spf("norecord.test"), status=DmarcStatus.NONE),
    "multiple-records-discarded": Case("double.test", None, status=DmarcStatus.NONE),
    "non-dmarc-txt-ignored": Case("notdmarc.test", None, status=DmarcStatus.NONE),
    "psd-walk-finds-org-record": Case(
        "a.b.example.co.uk",
        None,
        status=DmarcStatus.FAIL,
        policy=DmarcPolicy.QUARANTINE,
        policy_domain="example.co.uk",
    ),
    "psd-relaxed-aligns-within-org": Case("a.b.example.co.uk", spf("b.example.co.uk")),
    "psd-boundary-stops-alignment": Case(
        "a.b.example.co.uk",
        spf("other.co.uk"),
        [dkim("co.uk")],
        status=DmarcStatus.FAIL,
        policy=DmarcPolicy.QUARANTINE,
    ),
    "no-psd-flag-suffix-is-org": Case("one.nopsd.uk", spf("two.nopsd.uk")),
    "dns-failure-is-temperror": Case(
        "broken.test", spf("broken.test"), status=DmarcStatus.TEMPERROR
    ),
    "spf-temperror-makes-temperror": Case(
        "example.com",
        spf("example.com", SpfStatus.TEMPERROR),
        status=DmarcStatus.TEMPERROR,
        policy=DmarcPolicy.REJECT,
    ),
    "not-a-domain": Case("localhost", None, status=DmarcStatus.NONE),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_dmarc(case: Case) -> None:
    result = await check_dmarc(case.from_domain, case.spf, case.dkim, ZoneResolver(ZONE))
    assert (result.status, result.policy) == (case.status, case.policy), result.reason
    if case.policy_domain:
        assert result.policy_domain == case.policy_domain


@pytest.mark.parametrize(
    ("domain", "organizational"),
    [
        ("a.b.example.co.uk", "example.co.uk"),
        ("other.co.uk", "other.co.uk"),
        ("co.uk", "co.uk"),
        ("mail.example.com", "example.com"),
        ("one.nopsd.uk", "nopsd.uk"),
        ("unknown.invalid", "unknown.invalid"),
    ],
)
async def test_organizational_domain(domain: str, organizational: str) -> None:
    assert await organizational_domain(domain, ZoneResolver(ZONE)) == organizational


def test_tree_walk_is_bounded_to_eight_queries() -> None:
    deep = ".".join(f"l{i}" for i in range(12)) + ".example.com"
    targets = tree_walk_targets(deep)
    assert len(targets) == 8
    assert targets[0] == deep
    assert targets[1] == ".".join(deep.split(".")[-7:])
    assert targets[-1] == "com"
    assert tree_walk_targets("a.example.com") == ["a.example.com", "example.com", "com"]


async def test_walk_queries_stop_at_first_policy_record() -> None:
    resolver = ZoneResolver(ZONE)
    await check_dmarc("example.com", spf("example.com"), [], resolver)
    txt_queries = [name for name, rtype in resolver.queries if rtype == "TXT"]
    assert txt_queries[0] == "_dmarc.example.com"
    assert "_dmarc.com" in txt_queries  # the org-domain walk goes on to the top


def test_record_parsing_tolerates_bad_tags() -> None:
    record = parse_dmarc_record("v=DMARC1; p=bogus; sp=reject; adkim=x; psd=y; pct=50; fo=1")
    assert record.policy is DmarcPolicy.NONE
    assert record.subdomain_policy is DmarcPolicy.REJECT
    assert record.psd is PsdFlag.YES
    assert not record.testing
