"""dkim.verify against a real NSD: RFC 8463 Appendix A, and every result kind."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import dkim
import pytest

from postgate.dkim.verify import DkimOutcome, DkimResult, auth_results_dkim, verify_dkim
from postgate.dns.resolver import Resolver
from tests.dkim.helpers import DATA, zone_txt
from tests.fixtures.nsd import NsdServer, running_nsd

pytestmark = pytest.mark.nsd

# RFC 8463 Appendix A.2: the Ed25519 key of selector "brisbane".
BRISBANE = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
RSA_TEST_KEY = (DATA / "test.txt").read_text().strip()
SIGNED = (DATA / "rfc6376.signed.msg").read_bytes()
UNSIGNED = (DATA / "rfc6376.msg").read_bytes()
RSA_PRIVATE = (DATA / "test.private").read_bytes()


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NsdServer]:
    zones = {
        "football.example.com": [
            ("brisbane._domainkey", "TXT", zone_txt(BRISBANE)),
            ("test._domainkey", "TXT", zone_txt(RSA_TEST_KEY)),
            ("revoked._domainkey", "TXT", zone_txt("v=DKIM1; k=rsa; p=")),
            ("garbled._domainkey", "TXT", zone_txt("v=DKIM1; k=rsa; p=bm90IGEga2V5")),
            ("edkey._domainkey", "TXT", zone_txt(BRISBANE)),
        ]
    }
    with running_nsd(tmp_path_factory.mktemp("nsd"), zones) as server:
        yield server


@pytest.fixture
def resolver(dns_server: NsdServer) -> Resolver:
    return Resolver([dns_server.nameserver], timeout=1.0, lifetime=2.0)


def sign_with_test_key(selector: bytes, **options: object) -> bytes:
    signature = dkim.sign(
        UNSIGNED,
        selector,
        b"football.example.com",
        RSA_PRIVATE,
        **options,
    )
    return bytes(signature) + UNSIGNED


async def test_rfc8463_appendix_a_ed25519_and_rsa_both_pass(resolver: Resolver) -> None:
    results = await verify_dkim(SIGNED, resolver)
    assert [(r.result, r.algorithm, r.selector, r.domain) for r in results] == [
        (DkimOutcome.PASS, "ed25519-sha256", "brisbane", "football.example.com"),
        (DkimOutcome.PASS, "rsa-sha256", "test", "football.example.com"),
    ]
    assert results[0].key_bits == 256 and results[1].key_bits == 1024
    clause = results[0].auth_results()
    assert clause.startswith("dkim=pass (256-bit key) header.d=football.example.com")
    assert "header.s=brisbane" in clause and "header.b=9/dsDChY" in clause


async def test_altered_body_fails_each_signature(resolver: Resolver) -> None:
    altered = SIGNED.replace(b"We lost the game.", b"We won the game.")
    results = await verify_dkim(altered, resolver)
    assert [r.result for r in results] == [DkimOutcome.FAIL, DkimOutcome.FAIL]
    assert all("body hash" in r.reason for r in results)


async def test_altered_signed_header_fails(resolver: Resolver) -> None:
    altered = SIGNED.replace(b"Subject: Is dinner ready?", b"Subject: Is lunch ready?")
    results = await verify_dkim(altered, resolver)
    assert [r.result for r in results] == [DkimOutcome.FAIL, DkimOutcome.FAIL]
    assert results[0].reason == "signature did not verify"


async def test_unsigned_mail_has_no_results_and_auth_results_says_none(
    resolver: Resolver,
) -> None:
    assert await verify_dkim(UNSIGNED, resolver) == []
    assert auth_results_dkim([]) == ["dkim=none"]


async def test_missing_key_is_permerror(resolver: Resolver) -> None:
    results = await verify_dkim(sign_with_test_key(b"nokey"), resolver)
    assert [(r.result, r.reason) for r in results] == [
        (DkimOutcome.PERMERROR, "no key for signature")
    ]


@pytest.mark.parametrize(
    ("selector", "reason"),
    [
        (b"revoked", "key revoked"),
        (b"garbled", "bad key record"),
        (b"edkey", "does not match a="),
    ],
)
async def test_bad_key_records_are_permerror(
    resolver: Resolver, selector: bytes, reason: str
) -> None:
    results = await verify_dkim(sign_with_test_key(selector), resolver)
    assert results[0].result is DkimOutcome.PERMERROR
    assert reason in results[0].reason


async def test_rsa_sha1_is_refused_by_policy(resolver: Resolver) -> None:
    message = sign_with_test_key(b"test", signature_algorithm=b"rsa-sha1")
    results = await verify_dkim(message, resolver)
    assert results[0].result is DkimOutcome.POLICY
    assert "RFC 8301" in results[0].reason


async def test_malformed_signature_is_neutral_and_others_still_verified(
    resolver: Resolver,
) -> None:
    message = b"DKIM-Signature: v=1; a=rsa-sha256; this is not a tag list\r\n" + SIGNED
    results = await verify_dkim(message, resolver)
    assert [r.result for r in results] == [
        DkimOutcome.NEUTRAL,
        DkimOutcome.PASS,
        DkimOutcome.PASS,
    ]


async def test_dns_timeout_is_temperror_not_a_crash() -> None:
    # A UDP socket that never answers: every key lookup times out.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        dead = Resolver([f"127.0.0.1:{port}"], timeout=0.2, lifetime=0.4)
        results = await verify_dkim(SIGNED, dead)
    assert [r.result for r in results] == [DkimOutcome.TEMPERROR, DkimOutcome.TEMPERROR]
    assert isinstance(results[0], DkimResult) and "DNS timeout" in results[0].reason
