"""evaluate_inbound: the verdict, the headers and the cleaned message, per enforcement mode."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest

from postgate.mailauth.dmarc import DmarcVerdictCache
from postgate.mailauth.inbound import (
    Disposition,
    Enforcement,
    InboundOptions,
    evaluate_inbound,
)
from postgate.mailauth.results import (
    DkimLike,
    DkimSignatureResult,
    DmarcStatus,
    SpfStatus,
)
from postgate.mailauth.spf import SpfVerdictCache
from postgate.policy.verdict import Action
from tests.mailauth.zone_stub import ZoneResolver

ZONE: dict[str, list[tuple[str, Any]]] = {
    "example.com": [("TXT", "v=spf1 ip4:192.0.2.0/24 -all"), ("A", "192.0.2.1")],
    "_dmarc.example.com": [("TXT", "v=DMARC1; p=reject")],
    "soft.test": [("TXT", "v=spf1 ip4:192.0.2.0/24 -all")],
    "_dmarc.soft.test": [("TXT", "v=DMARC1; p=quarantine")],
    "mail.example.com": [("TXT", "v=spf1 a -all"), ("A", "192.0.2.1")],
    "broken.test": [("TIMEOUT", None)],
    "_dmarc.broken.test": [("TIMEOUT", None)],
}


def message(from_domain: str, *extra: bytes) -> bytes:
    head = f"From: Someone <someone@{from_domain}>\r\n".encode()
    return b"".join(extra) + head + b"To: rcpt@mx.example.org\r\nSubject: test\r\n\r\nHello\r\n"


def options(**overrides: Any) -> InboundOptions:
    return InboundOptions(authserv_id="mx.example.org", **overrides)


def verifier(*results: DkimLike) -> Any:
    async def verify(message: bytes) -> Sequence[DkimLike]:
        return results

    return verify


async def run(
    msg: bytes,
    *,
    ip: str = "192.0.2.1",
    mail_from: str = "bounce@example.com",
    opts: InboundOptions | None = None,
    dkim: Any = None,
) -> Any:
    return await evaluate_inbound(
        msg,
        client_ip=ip,
        helo="mail.example.com",
        mail_from=mail_from,
        resolver=ZoneResolver(ZONE),
        options=opts or options(),
        dkim_verifier=dkim or verifier(),
    )


async def test_aligned_spf_pass_is_accepted_with_header() -> None:
    verdict = await run(message("example.com"))
    assert verdict.disposition is Disposition.ACCEPT
    assert verdict.verdict.action is Action.CONTINUE
    assert verdict.spf.status is SpfStatus.PASS
    assert verdict.helo_spf.status is SpfStatus.PASS
    assert verdict.dmarc.status is DmarcStatus.PASS
    header = verdict.headers_to_prepend
    assert header.startswith(b"Authentication-Results: mx.example.org;")
    assert b"spf=pass" in header and b"dkim=none" in header and b"dmarc=pass" in header
    assert b"arc=none" in header


@pytest.mark.parametrize(
    ("enforcement", "disposition", "code"),
    [
        (Enforcement.REJECT, Disposition.REJECT, 550),
        (Enforcement.QUARANTINE, Disposition.QUARANTINE, 250),
        (Enforcement.RECORD, Disposition.ACCEPT, 250),
    ],
)
async def test_dmarc_reject_policy_per_enforcement(
    enforcement: Enforcement, disposition: Disposition, code: int
) -> None:
    verdict = await run(
        message("example.com"), ip="203.0.113.9", opts=options(dmarc_enforcement=enforcement)
    )
    assert verdict.dmarc.status is DmarcStatus.FAIL
    assert verdict.disposition is disposition
    assert verdict.verdict.code == code
    if disposition is Disposition.REJECT:
        assert verdict.verdict.enhanced == "5.7.1"
        assert "example.com" in verdict.verdict.text
    assert (b"X-Postgate-Quarantine:" in verdict.headers_to_prepend) == verdict.quarantine
    assert b"policy.dmarc=reject" in verdict.headers_to_prepend


async def test_quarantine_policy_is_never_a_reject() -> None:
    verdict = await run(
        message("soft.test"),
        ip="203.0.113.9",
        mail_from="x@soft.test",
        opts=options(dmarc_enforcement=Enforcement.REJECT),
    )
    assert verdict.disposition is Disposition.QUARANTINE


async def test_aligned_dkim_rescues_forwarded_mail() -> None:
    verdict = await run(
        message("example.com"),
        ip="203.0.113.9",
        opts=options(dmarc_enforcement=Enforcement.REJECT),
        dkim=verifier(DkimSignatureResult("example.com", "s1", "rsa-sha256", "pass")),
    )
    assert verdict.dmarc.status is DmarcStatus.PASS
    assert verdict.disposition is Disposition.ACCEPT
    assert b"dkim=pass header.d=example.com header.s=s1" in verdict.headers_to_prepend


@pytest.mark.parametrize(
    ("enforcement", "disposition"),
    [(Enforcement.QUARANTINE, Disposition.TEMPFAIL), (Enforcement.RECORD, Disposition.ACCEPT)],
)
async def test_failed_policy_lookup_tempfails_unless_recording(
    enforcement: Enforcement, disposition: Disposition
) -> None:
    msg = message("broken.test")
    verdict = await run(msg, mail_from="a@broken.test", opts=options(dmarc_enforcement=enforcement))
    assert verdict.spf.status is SpfStatus.TEMPERROR
    assert verdict.dmarc.status is DmarcStatus.TEMPERROR
    assert verdict.dmarc.published_policy is None  # the _dmarc lookup itself failed
    assert verdict.disposition is disposition
    assert b"spf=temperror" in verdict.headers_to_prepend


async def test_spf_temperror_under_reject_policy_tempfails() -> None:
    zone_msg = message("example.com")
    verdict = await evaluate_inbound(
        zone_msg,
        client_ip="203.0.113.9",
        helo="mail.example.com",
        mail_from="a@broken.test",
        resolver=ZoneResolver(ZONE),
        options=options(dmarc_enforcement=Enforcement.REJECT),
        dkim_verifier=verifier(
            DkimSignatureResult("example.com", "s1", "rsa-sha256", "temperror", "key lookup")
        ),
    )
    assert verdict.dmarc.status is DmarcStatus.TEMPERROR
    assert verdict.disposition is Disposition.TEMPFAIL
    assert (verdict.verdict.code, verdict.verdict.enhanced) == (451, "4.4.3")


async def test_spf_temperror_not_tempfailed_when_switched_off() -> None:
    verdict = await evaluate_inbound(
        message("example.com"),
        client_ip="203.0.113.9",
        helo="mail.example.com",
        mail_from="a@example.com",
        resolver=ZoneResolver(ZONE),
        options=options(dmarc_enforcement=Enforcement.REJECT, tempfail_on_dns_error=False),
        dkim_verifier=verifier(DkimSignatureResult("example.com", "s", "rsa-sha256", "temperror")),
    )
    # SPF fail + DKIM temperror: DMARC cannot be sure, and without tempfail the
    # message is only recorded, never rejected on a guess.
    assert verdict.dmarc.status is DmarcStatus.TEMPERROR
    assert verdict.disposition is Disposition.ACCEPT
    assert b"dmarc=temperror" in verdict.headers_to_prepend


async def test_spf_reject_fail_option() -> None:
    verdict = await run(
        message("other.test"),
        ip="203.0.113.9",
        opts=options(spf_reject_fail=True, dmarc_enforcement=Enforcement.RECORD),
    )
    assert verdict.spf.status is SpfStatus.FAIL
    assert (verdict.verdict.code, verdict.verdict.enhanced) == (550, "5.7.23")


async def test_forged_results_removed_but_checked_message_is_original() -> None:
    forged = b"Authentication-Results: mx.example.org; dmarc=pass\r\n"
    seen: list[bytes] = []

    async def verify(msg: bytes) -> Sequence[DkimLike]:
        seen.append(msg)
        return ()

    msg = message("example.com", forged)
    verdict = await run(msg, dkim=verify)
    assert seen == [msg]
    assert forged not in verdict.message
    assert verdict.message == message("example.com")


async def test_crashing_dkim_verifier_is_temperror_not_a_crash() -> None:
    async def broken(msg: bytes) -> Sequence[DkimLike]:
        raise RuntimeError("boom")

    verdict = await run(message("example.com"), dkim=broken)
    assert b"dkim=temperror" in verdict.headers_to_prepend
    assert verdict.dmarc.status is DmarcStatus.PASS  # SPF still aligns


async def test_null_sender_uses_helo_identity_once() -> None:
    verdict = await run(message("example.com"), mail_from="<>")
    assert verdict.spf.scope.value == "helo"
    assert verdict.helo_spf is None
    assert verdict.headers_to_prepend.count(b"spf=") == 1


async def test_strictest_of_several_from_domains_wins() -> None:
    msg = b"From: a@other.test, b@example.com\r\nSubject: x\r\n\r\nbody\r\n"
    verdict = await run(msg, ip="203.0.113.9", opts=options(dmarc_enforcement=Enforcement.REJECT))
    assert verdict.dmarc.from_domain == "example.com"
    assert verdict.disposition is Disposition.REJECT


async def test_everything_disabled_gives_none_header() -> None:
    opts = options(spf_enabled=False, dkim_enabled=False, dmarc_enabled=False, arc_enabled=False)
    verdict = await run(message("example.com"), opts=opts)
    assert verdict.headers_to_prepend == b"Authentication-Results: mx.example.org; none\r\n"


async def test_joined_with_the_dkim_verifier() -> None:
    """The wiring the server uses: postgate.dkim.verify.verify_dkim as the verifier;
    its DkimResult fits DkimLike and an aligned signature passes DMARC."""
    verify_module = pytest.importorskip("postgate.dkim.verify")
    import base64

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    zone = dict(ZONE)
    zone["s1._domainkey.example.com"] = [("TXT", f"v=DKIM1; k=rsa; p={public}")]
    resolver = ZoneResolver(zone)
    msg = message("example.com")
    signature = dkim.sign(msg, b"s1", b"example.com", pem, include_headers=[b"from", b"subject"])
    verdict = await evaluate_inbound(
        signature + msg,
        client_ip="203.0.113.9",  # a forwarder: SPF fails, the signature survives
        helo="forwarder.test",
        mail_from="list@forwarder.test",
        resolver=resolver,
        options=options(dmarc_enforcement=Enforcement.REJECT),
        dkim_verifier=lambda m: verify_module.verify_dkim(m, resolver),
    )
    assert verdict.dmarc.status is DmarcStatus.PASS and verdict.dmarc.dkim_aligned
    assert re.search(
        rb"dkim=pass( \([^)]*\))? header\.d=example\.com header\.s=s1", verdict.headers_to_prepend
    )


async def test_spf_verdicts_are_remembered_but_temperror_is_asked_again() -> None:
    now = [1000.0]
    cache = SpfVerdictCache(ttl=30.0, clock=lambda: now[0])
    resolver = ZoneResolver(ZONE)

    async def check(mail_from: str, ip: str = "192.0.2.1") -> Any:
        return await evaluate_inbound(
            message("example.com"),
            client_ip=ip,
            helo="mail.example.com",
            mail_from=mail_from,
            resolver=resolver,
            options=options(),
            dkim_verifier=verifier(),
            spf_cache=cache,
        )

    def spf_queries() -> int:
        return sum(1 for name, rtype in resolver.queries if rtype == "TXT" and "_dmarc" not in name)

    first = await check("bounce@example.com")
    asked = spf_queries()
    assert asked >= 2  # MAIL FROM and HELO identities
    second = await check("bounce@example.com")
    assert spf_queries() == asked  # both verdicts came from the cache
    assert (second.spf, second.helo_spf) == (first.spf, first.helo_spf)
    # Another client address is another question, with its own answer.
    other = await check("bounce@example.com", ip="203.0.113.9")
    assert other.spf.status is SpfStatus.FAIL and spf_queries() > asked
    # After the TTL the record is evaluated again.
    asked = spf_queries()
    now[0] += 31
    await check("bounce@example.com")
    assert spf_queries() > asked
    # A temporary DNS failure is never remembered.
    for _ in range(2):
        asked = spf_queries()
        failed = await check("a@broken.test")
        assert failed.spf.status is SpfStatus.TEMPERROR and spf_queries() > asked


async def test_dmarc_verdicts_are_remembered_per_question_but_temperror_is_asked_again() -> None:
    now = [1000.0]
    cache = DmarcVerdictCache(ttl=30.0, clock=lambda: now[0])
    resolver = ZoneResolver(ZONE)

    async def check(from_domain: str, ip: str = "192.0.2.1", dkim: Sequence[DkimLike] = ()) -> Any:
        return await evaluate_inbound(
            message(from_domain),
            client_ip=ip,
            helo="mail.example.com",
            mail_from=f"bounce@{from_domain}",
            resolver=resolver,
            options=options(),
            dkim_verifier=verifier(*dkim),
            dmarc_cache=cache,
        )

    def dmarc_queries() -> int:
        return sum(1 for name, rtype in resolver.queries if rtype == "TXT" and "_dmarc" in name)

    first = await check("example.com")
    asked = dmarc_queries()
    assert first.dmarc.status is DmarcStatus.PASS and asked >= 1
    second = await check("example.com")
    assert dmarc_queries() == asked  # the verdict came from the cache
    assert second.dmarc == first.dmarc
    # An SPF fail from another address is another question, with its own answer.
    other = await check("example.com", ip="203.0.113.9")
    assert other.spf.status is SpfStatus.FAIL
    assert other.dmarc.status is DmarcStatus.FAIL and dmarc_queries() > asked
    # So is a passing DKIM signature: it aligns where SPF did not.
    asked = dmarc_queries()
    signed = await check(
        "example.com",
        ip="203.0.113.9",
        dkim=(DkimSignatureResult("example.com", "s1", "rsa-sha256", "pass"),),
    )
    assert signed.dmarc.status is DmarcStatus.PASS and signed.dmarc.dkim_aligned
    assert dmarc_queries() > asked
    # After the TTL the record is looked up again.
    asked = dmarc_queries()
    now[0] += 31
    assert (await check("example.com")).dmarc == first.dmarc
    assert dmarc_queries() > asked
    # A temporary DNS failure is never remembered.
    for _ in range(2):
        asked = dmarc_queries()
        failed = await check("broken.test")
        assert failed.dmarc.status is DmarcStatus.TEMPERROR and dmarc_queries() > asked
