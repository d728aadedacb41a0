"""dnsrecords.records — every DNS record a mail domain needs for this server.

SYNOPSIS
    plan = required_records(
        "example.com",
        hostname="mx.example.com",
        sending_addresses=["192.0.2.25", "2001:db8::25"],
        dkim_keys=store.keys("example.com"),
        dmarc_rua="dmarc@example.com",
        tls_rpt_rua="tls-reports@example.com",
    )
    print(plan.zone_text())           # paste into the zone
    plan.mta_sts_policy               # serve at https://mta-sts.example.com/.well-known/mta-sts.txt

DESCRIPTION
    MX          the domain's mail goes to ``hostname`` (RFC 5321 5.1).
    SPF         ``v=spf1 ip4:… ip6:… mx ~all``: our sending addresses, then ``mx`` for
                a server that also sends from its MX address; ``~all`` (softfail)
                while the set-up is new (RFC 7208 5.1, 8.4).
    DKIM        one TXT per pending, active and retiring selector; retired ones are
                left out (their records may be deleted) (RFC 6376 3.6.2.1).
    DMARC       ``p=none`` with aggregate reports: watch the reports, then move to
                ``p=quarantine`` and ``p=reject`` (RFC 7489 6.3).
    MTA-STS     the ``_mta-sts`` TXT whose id changes with the policy, and the policy
                text, mode ``testing`` first (RFC 8461 3.1, 3.2).
    TLS-RPT     where senders report TLS failures (RFC 8460 3).

    Each record carries a comment saying why it is there; ``zone_text`` renders
    them as zone-file lines with long TXT values split into 255-octet strings.

SEE ALSO
    dnsrecords.check, dkim.keys, dkim.txt
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from postgate.dkim.keys import DkimKey, KeyState
from postgate.dkim.txt import TxtRecord

DEFAULT_MTA_STS_MAX_AGE = 7 * 86400  # RFC 8461 3.2 suggests weeks once in enforce mode


@dataclass(frozen=True, slots=True)
class DnsRecord:
    """One resource record to publish: absolute ``name`` without the trailing dot."""

    name: str
    rtype: str
    value: str
    comment: str = ""

    def zone_line(self) -> str:
        if self.rtype == "TXT":
            line = TxtRecord(self.name, self.value).zone_line()
        else:
            line = f"{self.name}. IN {self.rtype} {self.value}"
        return f"; {self.comment}\n{line}" if self.comment else line


@dataclass(frozen=True, slots=True)
class DomainRecords:
    domain: str
    records: tuple[DnsRecord, ...]
    mta_sts_policy: str
    notes: tuple[str, ...]

    def zone_text(self) -> str:
        lines = [f"; DNS records for {self.domain}"]
        for record in self.records:
            lines += ["", record.zone_line()]
        lines += [
            "",
            f"; MTA-STS policy, served at https://mta-sts.{self.domain}/.well-known/mta-sts.txt:",
        ]
        lines += [f";   {line}" for line in self.mta_sts_policy.splitlines()]
        lines += [""] + [f"; note: {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def spf_value(sending_addresses: Sequence[str]) -> str:
    """``v=spf1`` authorising our addresses, then our MX, softfail for the rest."""
    terms = ["v=spf1"]
    for text in sending_addresses:
        address = ipaddress.ip_address(text)
        terms.append(f"ip{address.version}:{address.compressed}")
    terms += ["mx", "~all"]
    return " ".join(terms)


def mta_sts_policy(
    hostname: str, *, mode: str = "testing", max_age: int = DEFAULT_MTA_STS_MAX_AGE
) -> str:
    """The policy file text; RFC 8461 3.2 wants CRLF line endings."""
    return f"version: STSv1\r\nmode: {mode}\r\nmx: {hostname}\r\nmax_age: {max_age}\r\n"


def mta_sts_id(policy: str) -> str:
    """RFC 8461 3.1: 1-32 alphanumerics that change whenever the policy changes,
    so derive it from the policy text itself."""
    return hashlib.sha256(policy.encode("ascii")).hexdigest()[:20]


def required_records(
    domain: str,
    *,
    hostname: str,
    sending_addresses: Sequence[str] = (),
    dkim_keys: Sequence[DkimKey] = (),
    dmarc_rua: str | None = None,
    tls_rpt_rua: str | None = None,
    mta_sts_mode: str = "testing",
    mta_sts_max_age: int = DEFAULT_MTA_STS_MAX_AGE,
) -> DomainRecords:
    """All records ``domain`` needs; report addresses default to postmaster@domain."""
    domain = domain.strip().rstrip(".").lower()
    hostname = hostname.strip().rstrip(".").lower()
    dmarc_rua = dmarc_rua or f"postmaster@{domain}"
    tls_rpt_rua = tls_rpt_rua or f"postmaster@{domain}"
    policy = mta_sts_policy(hostname, mode=mta_sts_mode, max_age=mta_sts_max_age)
    records = [
        DnsRecord(domain, "MX", f"10 {hostname}.", "mail for the domain goes to this server"),
        DnsRecord(
            domain,
            "TXT",
            spf_value(sending_addresses),
            "SPF: the addresses allowed to send as the domain (~all while new; -all later)",
        ),
    ]
    for key in dkim_keys:
        if key.state.published:
            records.append(
                DnsRecord(
                    key.txt_name,
                    "TXT",
                    key.txt_value,
                    f"DKIM {key.algorithm.signature_algorithm} key, {key.state.value}",
                )
            )
    records += [
        DnsRecord(
            f"_dmarc.{domain}",
            "TXT",
            f"v=DMARC1; p=none; rua=mailto:{dmarc_rua}",
            "DMARC: monitor first; move to p=quarantine, then p=reject, once reports are clean",
        ),
        DnsRecord(
            f"_mta-sts.{domain}",
            "TXT",
            f"v=STSv1; id={mta_sts_id(policy)}",
            "MTA-STS: the id changes whenever the policy file changes",
        ),
        DnsRecord(
            f"_smtp._tls.{domain}",
            "TXT",
            f"v=TLSRPTv1; rua=mailto:{tls_rpt_rua}",
            "TLS-RPT: where senders report TLS failures",
        ),
    ]
    notes: tuple[str, ...] = (
        f"MTA-STS needs https://mta-sts.{domain}/ with a valid certificate serving the policy",
        "move MTA-STS to mode: enforce (and a longer max_age) once TLS-RPT reports are clean",
        f"the PTR record of each sending address should name {hostname}, "
        f"and {hostname} should resolve back to it",
    )
    if not any(k.state is KeyState.ACTIVE for k in dkim_keys):
        notes += (
            "no active DKIM key: `postgate dkim keygen` makes one; publish its TXT record "
            "and run `postgate dkim advance` to start signing",
        )
    return DomainRecords(domain, tuple(records), policy, notes)
