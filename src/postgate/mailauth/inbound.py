"""mailauth.inbound — SPF, DKIM, DMARC and ARC for one inbound message, as one verdict.

SYNOPSIS
    options = InboundOptions(authserv_id="mx.example.org", dmarc_enforcement=Enforcement.REJECT)
    verdict = await evaluate_inbound(message, client_ip="192.0.2.1", helo="mail.example.com",
                                     mail_from="a@example.com", resolver=resolver,
                                     options=options, dkim_verifier=verify)
    verdict.verdict              # policy.Verdict: CONTINUE, REJECT 550 5.7.1, TEMPFAIL 451 4.4.3
    verdict.headers_to_prepend   # Authentication-Results (+ X-Postgate-Quarantine)
    verdict.message              # the message without forged A-R fields: queue this
    verdict.quarantine           # deliver to Junk

DESCRIPTION
    Runs at the end of DATA on the MX listener (port 25) only: submission mail is
    ours and is signed, not judged. The checks run concurrently: SPF for MAIL FROM
    (or reuse ``spf_result`` computed at MAIL FROM time), SPF for HELO, DKIM through
    the injected ``dkim_verifier`` (postgate.dkim.verify.verify_dkim), and ARC.
    DMARC then combines SPF and DKIM for every RFC5322.From domain; with several
    From domains the strictest outcome counts (RFC 7489 6.6.1 leaves that to the
    receiver; taking the strictest stops a second From from hiding a failing one).

    Checks run on the message as received (a signature may cover any field); the
    returned ``message`` has the Authentication-Results fields that claim our
    authserv-id removed (RFC 8601 5), and the new field goes on top.

ENFORCEMENT
    What a DMARC failure does, by ``dmarc_enforcement``:
      reject      p=reject → 550 5.7.1; p=quarantine → quarantine
      quarantine  p=reject or p=quarantine → quarantine (deliver to Junk)
      record      nothing but the header
    A DMARC temperror (DNS trouble) for a message whose policy would have been
    enforced, or whose policy could not be looked up at all, gives 451 4.4.3 when
    ``tempfail_on_dns_error`` is set (RFC 3463 3.5: X.4.3 "directory server
    failure"; architecture invariant 5: a check that cannot finish is a 4xx, never
    a 250), so the sender retries rather than us misfiling mail over a DNS hiccup.
    ``spf_reject_fail`` additionally rejects SPF fail with 550 5.7.23 (RFC 7208 8.4,
    RFC 7372 3.2); off by default because forwarding breaks SPF and DMARC already
    covers the aligned case.

DIAGNOSTICS
    Never raises: a crashing or slow DKIM verifier becomes dkim=temperror.

SEE ALSO
    mailauth.spf, mailauth.dmarc, mailauth.arc, mailauth.authres, policy.verdict
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from postgate.mailauth.arc import verify_arc
from postgate.mailauth.authres import build_authentication_results
from postgate.mailauth.dmarc import DmarcVerdictCache, check_dmarc
from postgate.mailauth.headers import (
    from_domains,
    header_section,
    remove_forged_authentication_results,
)
from postgate.mailauth.lookup import MailauthResolver
from postgate.mailauth.results import (
    ArcResult,
    DkimLike,
    DkimSignatureResult,
    DmarcPolicy,
    DmarcResult,
    DmarcStatus,
    SpfResult,
    SpfStatus,
)
from postgate.mailauth.spf import SpfVerdictCache, check_helo, check_spf
from postgate.policy.verdict import Verdict

DkimVerifier = Callable[[bytes], Awaitable[Sequence[DkimLike]]]
MAX_FROM_DOMAINS = 5


class Enforcement(enum.Enum):
    REJECT = "reject"
    QUARANTINE = "quarantine"
    RECORD = "record"


class Disposition(enum.Enum):
    ACCEPT = "accept"
    QUARANTINE = "quarantine"
    REJECT = "reject"
    TEMPFAIL = "tempfail"


@dataclass(frozen=True, slots=True)
class InboundOptions:
    """The knobs of evaluate_inbound (see the module docstring); one object per
    configuration generation."""

    authserv_id: str
    spf_enabled: bool = True
    helo_spf_enabled: bool = True
    dkim_enabled: bool = True
    dmarc_enabled: bool = True
    arc_enabled: bool = True
    dmarc_enforcement: Enforcement = Enforcement.QUARANTINE
    tempfail_on_dns_error: bool = True
    spf_reject_fail: bool = False
    lookup_timeout: float = 5.0
    spf_time_budget: float = 20.0
    dkim_timeout: float = 20.0


@dataclass(frozen=True, slots=True)
class InboundVerdict:
    disposition: Disposition
    verdict: Verdict
    headers_to_prepend: bytes
    message: bytes
    spf: SpfResult | None
    helo_spf: SpfResult | None
    dkim: tuple[DkimLike, ...]
    dmarc: DmarcResult | None
    arc: ArcResult | None
    reason: str = ""

    @property
    def quarantine(self) -> bool:
        return self.disposition is Disposition.QUARANTINE


async def _dkim(message: bytes, verifier: DkimVerifier, timeout: float) -> tuple[DkimLike, ...]:
    try:
        async with asyncio.timeout(timeout):
            return tuple(await verifier(message))
    except Exception as exc:  # includes TimeoutError; a verifier bug must not bounce mail
        error = f"DKIM verifier failed: {type(exc).__name__}: {exc}"
        return (DkimSignatureResult("", "", "", "temperror", error),)


def _severity(result: DmarcResult) -> tuple[int, int]:
    status_rank = {
        DmarcStatus.FAIL: 3,
        DmarcStatus.TEMPERROR: 2,
        DmarcStatus.PERMERROR: 1,
    }.get(result.status, 0)
    policy_rank = {DmarcPolicy.REJECT: 2, DmarcPolicy.QUARANTINE: 1}.get(result.policy, 0)
    return policy_rank, status_rank


async def _dmarc(
    message: bytes,
    spf: SpfResult | None,
    dkim: Sequence[DkimLike],
    resolver: MailauthResolver,
    timeout: float,
    cache: DmarcVerdictCache | None = None,
) -> DmarcResult:
    domains = list(dict.fromkeys(d for field in from_domains(message) for d in field))
    if not domains:
        return DmarcResult(DmarcStatus.NONE, "", reason="no RFC5322.From domain")
    if len(domains) > MAX_FROM_DOMAINS:
        return DmarcResult(DmarcStatus.PERMERROR, domains[0], reason=f"{len(domains)} From domains")

    async def checked(domain: str) -> DmarcResult:
        def check() -> Awaitable[DmarcResult]:
            return check_dmarc(domain, spf, dkim, resolver, lookup_timeout=timeout)

        if cache is None:
            return await check()
        return await cache.remembered(DmarcVerdictCache.key(domain, spf, dkim), check)

    results = [await checked(d) for d in domains]
    return max(results, key=_severity)


def _action(dmarc: DmarcResult | None, enforcement: Enforcement) -> Disposition:
    """What enforcement makes of the owner's requested policy."""
    if dmarc is None or enforcement is Enforcement.RECORD:
        return Disposition.ACCEPT
    if dmarc.policy is DmarcPolicy.REJECT and enforcement is Enforcement.REJECT:
        return Disposition.REJECT
    if dmarc.policy in (DmarcPolicy.REJECT, DmarcPolicy.QUARANTINE):
        return Disposition.QUARANTINE
    return Disposition.ACCEPT


def _decide(
    options: InboundOptions, spf: SpfResult | None, dmarc: DmarcResult | None
) -> tuple[Disposition, Verdict, str]:
    if options.spf_reject_fail and spf is not None and spf.status is SpfStatus.FAIL:
        text = f"SPF check failed for {spf.domain}"
        if spf.explanation:
            text += f": {spf.explanation}"
        verdict = Verdict.reject(550, "5.7.23", text, reason=f"spf=fail {spf.reason}")
        return Disposition.REJECT, verdict, verdict.reason
    action = _action(dmarc, options.dmarc_enforcement)
    if (
        dmarc is not None
        and dmarc.status is DmarcStatus.TEMPERROR
        and options.dmarc_enforcement is not Enforcement.RECORD
        # an unknown policy (the _dmarc lookup itself failed) might be reject
        and (action is not Disposition.ACCEPT or dmarc.published_policy is None)
    ):
        if not options.tempfail_on_dns_error:
            return Disposition.ACCEPT, Verdict.cont(), ""
        verdict = Verdict.tempfail(
            451,
            "4.4.3",
            f"Temporary DMARC evaluation failure for {dmarc.from_domain}, try again later",
            reason=f"dmarc=temperror {dmarc.reason}",
        )
        return Disposition.TEMPFAIL, verdict, verdict.reason
    if dmarc is None or action is Disposition.ACCEPT or dmarc.status is not DmarcStatus.FAIL:
        return Disposition.ACCEPT, Verdict.cont(), ""
    reason = f"dmarc=fail p={dmarc.policy.value} header.from={dmarc.from_domain}: {dmarc.reason}"
    if action is Disposition.REJECT:
        verdict = Verdict.reject(
            550,
            "5.7.1",
            f"Message rejected by the DMARC policy of {dmarc.from_domain}",
            reason=reason,
        )
        return Disposition.REJECT, verdict, reason
    return Disposition.QUARANTINE, Verdict.cont(), reason


def _may_wait(
    message: bytes,
    options: InboundOptions,
    spf_cache: SpfVerdictCache | None,
    spf_result: SpfResult | None,
    client_ip: str,
    mail_from: str,
    helo: str,
) -> bool:
    """Whether some check is likely to wait for DNS (a guess that only decides how the
    checks are scheduled, never what they find)."""
    if options.spf_enabled and spf_result is None:
        if (
            spf_cache is None
            or spf_cache.get(spf_cache.mail_from_key(client_ip, mail_from, helo)) is None
        ):
            return True
        if options.helo_spf_enabled and spf_cache.get(spf_cache.helo_key(client_ip, helo)) is None:
            return True
    head = header_section(message).lower()
    return b"dkim-signature" in head or b"arc-" in head


async def evaluate_inbound(
    message: bytes,
    *,
    client_ip: str,
    helo: str,
    mail_from: str,
    resolver: MailauthResolver,
    options: InboundOptions,
    dkim_verifier: DkimVerifier | None = None,
    spf_result: SpfResult | None = None,
    spf_cache: SpfVerdictCache | None = None,
    dmarc_cache: DmarcVerdictCache | None = None,
) -> InboundVerdict:
    """Authenticate one message received on the MX port; see the module docstring."""

    async def remembered(
        key: tuple[str, str, str, str], check: Callable[[], Awaitable[SpfResult]]
    ) -> SpfResult:
        return await check() if spf_cache is None else await spf_cache.remembered(key, check)

    async def spf_check() -> SpfResult | None:
        if not options.spf_enabled:
            return None
        if spf_result is not None:
            return spf_result
        return await remembered(
            SpfVerdictCache.mail_from_key(client_ip, mail_from, helo),
            lambda: check_spf(
                client_ip,
                mail_from,
                helo,
                resolver,
                lookup_timeout=options.lookup_timeout,
                time_budget=options.spf_time_budget,
                receiver=options.authserv_id,
            ),
        )

    async def helo_check() -> SpfResult | None:
        if not (options.spf_enabled and options.helo_spf_enabled):
            return None
        if not mail_from.strip().strip("<>"):
            return None  # the MAIL FROM check already used the HELO identity
        return await remembered(
            SpfVerdictCache.helo_key(client_ip, helo),
            lambda: check_helo(
                client_ip,
                helo,
                resolver,
                lookup_timeout=options.lookup_timeout,
                time_budget=options.spf_time_budget,
                receiver=options.authserv_id,
            ),
        )

    async def dkim_check() -> tuple[DkimLike, ...] | None:
        if not options.dkim_enabled or dkim_verifier is None:
            return None
        return await _dkim(message, dkim_verifier, options.dkim_timeout)

    async def arc_check() -> ArcResult | None:
        if not options.arc_enabled:
            return None
        return await verify_arc(message, resolver, lookup_timeout=options.lookup_timeout)

    if _may_wait(message, options, spf_cache, spf_result, client_ip, mail_from, helo):
        # Lookups ahead: let them overlap.
        spf, helo_spf, dkim, arc = await asyncio.gather(
            spf_check(), helo_check(), dkim_check(), arc_check()
        )
    else:
        # Nothing will wait on DNS (remembered SPF verdicts, no DKIM or ARC fields to
        # verify): in turn, without the four Tasks gather would make for them, which on
        # a busy MX cost more than the checks themselves.
        spf, helo_spf, dkim, arc = (
            await spf_check(),
            await helo_check(),
            await dkim_check(),
            await arc_check(),
        )
    dmarc = None
    if options.dmarc_enabled:
        dmarc = await _dmarc(
            message, spf, dkim or (), resolver, options.lookup_timeout, dmarc_cache
        )
    disposition, verdict, reason = _decide(options, spf, dmarc)
    headers = build_authentication_results(
        options.authserv_id, spf, dkim, dmarc, arc, helo_spf=helo_spf
    )
    if disposition is Disposition.QUARANTINE and dmarc is not None:
        headers += (
            f"X-Postgate-Quarantine: dmarc=fail policy={dmarc.policy.value}"
            f" header.from={dmarc.from_domain}\r\n"
        ).encode("ascii", "replace")
    return InboundVerdict(
        disposition=disposition,
        verdict=verdict,
        headers_to_prepend=headers,
        message=remove_forged_authentication_results(message, options.authserv_id),
        spf=spf,
        helo_spf=helo_spf,
        dkim=dkim or (),
        dmarc=dmarc,
        arc=arc,
        reason=reason,
    )
