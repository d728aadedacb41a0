"""mailauth.dmarc — DMARC evaluation with the DMARCbis DNS tree walk (RFC 9989).

SYNOPSIS
    result = await check_dmarc(from_domain, spf_result, dkim_results, resolver)
    result.status, result.policy          # DmarcStatus.FAIL, DmarcPolicy.REJECT
    org = await organizational_domain("a.b.example.co.uk", resolver)

DESCRIPTION
    Policy discovery and the organisational domain both come from the DNS tree
    walk of RFC 9989 (which replaced RFC 7489's public suffix list): query
    _dmarc.<domain>; then, if the domain has more labels than the walk allows,
    jump to its last 7 labels, and go on removing one label at a time up to the
    top-level domain. That is at most 8 queries per walk. Records that do not start
    with v=DMARC1 are ignored, and when a name has more than one DMARC record all
    of them are discarded and the walk continues.

    Policy: the first record found walking up from the From domain. If it is the
    From domain's own record, p applies; otherwise sp (else p) applies, and for a
    From domain that does not exist (no A, AAAA or MX: NXDOMAIN or NODATA for all)
    np (else sp, else p).

    Organisational domain: walking up from the name, a record with psd=n marks the
    organisational domain; a record with psd=y marks a public suffix domain, whose
    child on the path is the organisational domain; otherwise it is the name with
    the fewest labels that has a record, and the name itself when none has one.
    Relaxed alignment means equal organisational domains; strict means equal names.

    DMARC passes when SPF passed for an aligned domain or any DKIM signature
    passed for an aligned d=. A record with t=y lowers the requested policy one
    step (reject → quarantine → none), the DMARCbis successor of pct.

DIAGNOSTICS
    A DNS failure during discovery or alignment gives temperror. A message that
    fails while SPF or a DKIM check had a temporary error is also temperror, with
    the policy it would have had, so the caller can defer instead of rejecting
    mail over a DNS hiccup. The check never raises.

SEE ALSO
    mailauth.dmarc_record, mailauth.results, RFC 9989
"""

from __future__ import annotations

from collections.abc import Sequence

from postgate.dns import DnsError
from postgate.mailauth.dmarc_record import (
    Alignment,
    DmarcRecord,
    PsdFlag,
    is_dmarc_record,
    parse_dmarc_record,
)
from postgate.mailauth.lookup import MailauthResolver, bounded
from postgate.mailauth.results import (
    DkimLike,
    DmarcPolicy,
    DmarcResult,
    DmarcStatus,
    SpfResult,
    SpfStatus,
    dkim_status,
)
from postgate.mailauth.verdict_cache import VerdictCache

MAX_WALK_QUERIES = 8
_LOWER = {
    DmarcPolicy.REJECT: DmarcPolicy.QUARANTINE,
    DmarcPolicy.QUARANTINE: DmarcPolicy.NONE,
    DmarcPolicy.NONE: DmarcPolicy.NONE,
}


def tree_walk_targets(domain: str) -> list[str]:
    """The names a tree walk queries, in order (at most MAX_WALK_QUERIES)."""
    labels = domain.split(".")
    targets = [domain]
    for count in range(min(len(labels) - 1, MAX_WALK_QUERIES - 1), 0, -1):
        targets.append(".".join(labels[-count:]))
    return targets


def _normalise(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


class DmarcWalker:
    """Tree walks for one message; remembers each _dmarc answer so the policy walk
    and the alignment walks do not ask twice."""

    def __init__(self, resolver: MailauthResolver, *, lookup_timeout: float = 5.0) -> None:
        self._resolver = resolver
        self._lookup_timeout = lookup_timeout
        self._records: dict[str, DmarcRecord | None] = {}

    async def record_at(self, domain: str) -> DmarcRecord | None:
        """The one DMARC record at _dmarc.<domain>, or None (none, or several).
        Raises DnsError(temporary=True) when the lookup failed."""
        if domain in self._records:
            return self._records[domain]
        name = f"_dmarc.{domain}"
        try:
            texts = await bounded(self._resolver.txt(name), self._lookup_timeout, name)
        except DnsError as exc:
            if exc.temporary:
                raise
            texts = []
        candidates = [t for t in texts if is_dmarc_record(t)]
        record = parse_dmarc_record(candidates[0]) if len(candidates) == 1 else None
        self._records[domain] = record
        return record

    async def policy_record(self, domain: str) -> tuple[str, DmarcRecord] | None:
        for target in tree_walk_targets(domain):
            record = await self.record_at(target)
            if record is not None:
                return target, record
        return None

    async def organizational_domain(self, domain: str) -> str:
        fewest_labels = ""
        for target in tree_walk_targets(domain):
            record = await self.record_at(target)
            if record is None:
                continue
            if record.psd is PsdFlag.NO or (record.psd is PsdFlag.YES and target == domain):
                return target
            if record.psd is PsdFlag.YES:
                keep = target.count(".") + 2  # the PSD's labels plus one
                return ".".join(domain.split(".")[-keep:])
            fewest_labels = target
        return fewest_labels or domain

    async def aligned(self, domain: str, from_domain: str, mode: Alignment) -> bool:
        domain = _normalise(domain)
        if domain == from_domain:
            return True
        if mode is Alignment.STRICT or not domain:
            return False
        return await self.organizational_domain(domain) == await self.organizational_domain(
            from_domain
        )

    async def exists(self, domain: str) -> bool:
        """RFC 9989 np: non-existent means NXDOMAIN or NODATA for A, AAAA and MX.
        A temporary failure counts as existing (the milder sp/p then applies)."""
        try:
            if await bounded(self._resolver.mx(domain), self._lookup_timeout, domain):
                return True
        except DnsError as exc:
            return exc.temporary
        try:
            return bool(
                await bounded(self._resolver.addresses(domain), self._lookup_timeout, domain)
            )
        except DnsError:
            return True


async def organizational_domain(
    domain: str, resolver: MailauthResolver, *, lookup_timeout: float = 5.0
) -> str:
    """The organisational domain of ``domain`` by tree walk (raises DnsError on a
    temporary failure)."""
    walker = DmarcWalker(resolver, lookup_timeout=lookup_timeout)
    return await walker.organizational_domain(_normalise(domain))


async def check_dmarc(
    from_domain: str,
    spf: SpfResult | None,
    dkim: Sequence[DkimLike],
    resolver: MailauthResolver,
    *,
    lookup_timeout: float = 5.0,
) -> DmarcResult:
    """Evaluate DMARC for the RFC5322.From domain. Never raises."""
    domain = _normalise(from_domain)
    if "." not in domain or any(not label for label in domain.split(".")):
        return DmarcResult(DmarcStatus.NONE, domain, reason=f"{from_domain!r} is not a domain")
    walker = DmarcWalker(resolver, lookup_timeout=lookup_timeout)
    try:
        found = await walker.policy_record(domain)
        if found is None:
            return DmarcResult(DmarcStatus.NONE, domain, reason="no DMARC record")
        policy_domain, record = found
        spf_aligned = (
            spf is not None
            and spf.status is SpfStatus.PASS
            and await walker.aligned(spf.domain, domain, record.aspf)
        )
        dkim_aligned = False
        for signature in dkim:
            if dkim_status(signature) == "pass" and await walker.aligned(
                signature.domain, domain, record.adkim
            ):
                dkim_aligned = True
                break
        if spf_aligned or dkim_aligned:
            via = "SPF" if spf_aligned else "DKIM"
            organizational = await _reported_organizational_domain(walker, domain)
            return DmarcResult(
                DmarcStatus.PASS,
                domain,
                policy_domain=policy_domain,
                organizational_domain=organizational,
                testing=record.testing,
                spf_aligned=spf_aligned,
                dkim_aligned=dkim_aligned,
                reason=f"aligned {via} pass",
            )
        published = await _published_policy(walker, record, domain, policy_domain)
    except DnsError as exc:
        return DmarcResult(DmarcStatus.TEMPERROR, domain, reason=f"DNS failure: {exc}")
    organizational = await _reported_organizational_domain(walker, domain)
    policy = _LOWER[published] if record.testing else published
    temporary = (spf is not None and spf.status is SpfStatus.TEMPERROR) or any(
        dkim_status(s) == "temperror" for s in dkim
    )
    status = DmarcStatus.TEMPERROR if temporary else DmarcStatus.FAIL
    reason = "no aligned SPF or DKIM pass"
    if temporary:
        reason += " (SPF or DKIM had a temporary error)"
    return DmarcResult(
        status,
        domain,
        policy=policy,
        published_policy=published,
        policy_domain=policy_domain,
        organizational_domain=organizational,
        testing=record.testing,
        reason=reason,
    )


async def _reported_organizational_domain(walker: DmarcWalker, domain: str) -> str:
    """The organisational domain for the result, when the walk can tell; it is
    informational here, so a DNS failure on the way up must not change a verdict
    that exact alignment already decided."""
    try:
        return await walker.organizational_domain(domain)
    except DnsError:
        return ""


async def _published_policy(
    walker: DmarcWalker, record: DmarcRecord, domain: str, policy_domain: str
) -> DmarcPolicy:
    if policy_domain == domain:
        return record.policy
    subdomain = record.subdomain_policy or record.policy
    if record.nonexistent_policy is not None and not await walker.exists(domain):
        return record.nonexistent_policy
    return subdomain


DmarcVerdictKey = tuple[str, tuple[SpfStatus, str] | None, tuple[tuple[str, str], ...]]


class DmarcVerdictCache(VerdictCache[DmarcVerdictKey, DmarcResult]):
    """Recent DMARC results by (From domain, SPF result, DKIM results): check_dmarc
    reads nothing else of a message but DNS (each evaluation walks the _dmarc tree
    through the resolver again, every call under its own timeout: 8 % of the event
    loop at 100 KB per message). A temperror is never kept. See mailauth.verdict_cache."""

    def keeps(self, verdict: DmarcResult) -> bool:
        return verdict.status is not DmarcStatus.TEMPERROR

    @staticmethod
    def key(from_domain: str, spf: SpfResult | None, dkim: Sequence[DkimLike]) -> DmarcVerdictKey:
        return (
            _normalise(from_domain),
            None if spf is None else (spf.status, spf.domain),
            tuple((dkim_status(signature), signature.domain) for signature in dkim),
        )
