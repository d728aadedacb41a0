"""SPF, DMARC and ARC through the real postgate Resolver against a real NSD on loopback,
and against a DNS server that never answers (temperror, within the time bounds)."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from postgate.dns import Resolver
from postgate.mailauth.arc import arc_seal, verify_arc
from postgate.mailauth.authres import build_authentication_results
from postgate.mailauth.dmarc import check_dmarc
from postgate.mailauth.results import ArcResult, ArcStatus, DmarcPolicy, DmarcStatus, SpfStatus
from postgate.mailauth.spf import check_helo, check_spf
from tests.fixtures.nsd import NsdServer, running_nsd

KEY = rsa.generate_private_key(public_exponent=65537, key_size=1024)
PRIVATE_PEM = KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption(),
)
PUBLIC_B64 = base64.b64encode(
    KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


def quoted(text: str) -> str:
    """TXT rdata in zone-file syntax, split into strings of at most 200 octets."""
    return " ".join(f'"{text[i : i + 200]}"' for i in range(0, len(text), 200))


ZONES = {
    "example.test": [
        ("@", "TXT", quoted("v=spf1 a:mail.example.test include:_spf.partner.test -all")),
        ("@", "A", "127.0.0.2"),
        ("mail", "A", "127.0.0.2"),
        ("mail", "TXT", quoted("v=spf1 a -all")),
        ("_dmarc", "TXT", quoted("v=DMARC1; p=reject; sp=quarantine")),
        ("s1._domainkey", "TXT", quoted(f"v=DKIM1; k=rsa; p={PUBLIC_B64}")),
    ],
    # The parent zone, so the tree walk's last step gets an answer (NXDOMAIN) from
    # this authoritative-only server instead of REFUSED.
    "test": [],
    "partner.test": [
        ("_spf", "TXT", quoted("v=spf1 ip4:198.51.100.0/24 -all")),
    ],
}


@pytest.fixture(scope="module")
def nsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NsdServer]:
    with running_nsd(tmp_path_factory.mktemp("nsd"), ZONES) as server:
        yield server


@pytest.fixture
def resolver(nsd: NsdServer) -> Resolver:
    return Resolver([nsd.nameserver], timeout=2.0, lifetime=4.0)


@pytest.mark.parametrize(
    ("ip", "status"),
    [
        ("127.0.0.2", SpfStatus.PASS),  # a:mail.example.test
        ("198.51.100.7", SpfStatus.PASS),  # include:_spf.partner.test
        ("::ffff:198.51.100.7", SpfStatus.PASS),  # IPv4-mapped client
        ("203.0.113.1", SpfStatus.FAIL),
        ("2001:db8::1", SpfStatus.FAIL),
    ],
)
async def test_spf_on_nsd(resolver: Resolver, ip: str, status: SpfStatus) -> None:
    result = await check_spf(ip, "someone@example.test", "mail.example.test", resolver)
    assert result.status is status, result.reason
    assert result.domain == "example.test"


async def test_helo_identity_and_missing_record(resolver: Resolver) -> None:
    assert (await check_helo("127.0.0.2", "mail.example.test", resolver)).status is SpfStatus.PASS
    none = await check_spf("127.0.0.2", "a@partner.test", "mail.example.test", resolver)
    assert none.status is SpfStatus.NONE


async def test_dmarc_on_nsd(resolver: Resolver) -> None:
    spf = await check_spf("127.0.0.2", "bounce@example.test", "mail.example.test", resolver)
    passing = await check_dmarc("example.test", spf, [], resolver)
    assert passing.status is DmarcStatus.PASS
    assert passing.spf_aligned
    assert passing.organizational_domain == "example.test"
    relaxed_spf = await check_spf("127.0.0.2", "b@mail.example.test", "mail.example.test", resolver)
    relaxed = await check_dmarc("example.test", relaxed_spf, [], resolver)
    assert (relaxed_spf.status, relaxed.status) == (SpfStatus.PASS, DmarcStatus.PASS)
    failing = await check_dmarc("news.example.test", None, [], resolver)
    assert (failing.status, failing.policy) == (DmarcStatus.FAIL, DmarcPolicy.QUARANTINE)
    assert failing.policy_domain == "example.test"


MESSAGE = (
    b"From: Alice <alice@origin.test>\r\n"
    b"To: list@example.test\r\n"
    b"Subject: forwarded\r\n"
    b"Date: Tue, 1 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1@origin.test>\r\n"
    b"\r\n"
    b"Hello through the alias.\r\n"
)


async def test_arc_seal_then_validate_on_nsd(resolver: Resolver) -> None:
    ours = build_authentication_results(
        "mx.example.test", None, [], None, ArcResult(ArcStatus.NONE)
    )
    received = ours + MESSAGE
    seal = await arc_seal(
        received,
        selector="s1",
        domain="example.test",
        private_key=PRIVATE_PEM,
        authserv_id="mx.example.test",
    )
    assert seal.count(b"ARC-") == 3
    assert b"cv=none" in seal
    sealed = seal + received
    result = await verify_arc(sealed, resolver)
    assert (result.status, result.instances) == (ArcStatus.PASS, 1), result.reason
    tampered = sealed.replace(b"Hello through", b"Hullo through")
    assert (await verify_arc(tampered, resolver)).status is ArcStatus.FAIL
    assert (await verify_arc(MESSAGE, resolver)).status is ArcStatus.NONE


@pytest.fixture
def silent_nameserver() -> Iterator[str]:
    """A UDP socket that receives queries and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


async def test_unanswered_dns_is_temperror_within_lookup_timeout(silent_nameserver: str) -> None:
    resolver = Resolver([silent_nameserver], timeout=10.0, lifetime=30.0)
    started = time.monotonic()
    spf = await check_spf(
        "192.0.2.1", "a@example.test", "h.example.test", resolver, lookup_timeout=0.3
    )
    dmarc = await check_dmarc("example.test", spf, [], resolver, lookup_timeout=0.3)
    arc = await verify_arc(
        b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=example.test; s=s1; b=AAAA\r\n" + MESSAGE,
        resolver,
        lookup_timeout=0.3,
    )
    elapsed = time.monotonic() - started
    assert spf.status is SpfStatus.TEMPERROR
    assert dmarc.status is DmarcStatus.TEMPERROR
    assert arc.status is ArcStatus.FAIL and arc.temporary
    assert elapsed < 3.0


async def test_overall_spf_budget(silent_nameserver: str) -> None:
    resolver = Resolver([silent_nameserver], timeout=10.0, lifetime=30.0)
    started = time.monotonic()
    spf = await check_spf(
        "192.0.2.1", "a@example.test", "h", resolver, lookup_timeout=5.0, time_budget=0.3
    )
    assert spf.status is SpfStatus.TEMPERROR
    assert "exceeded" in spf.reason
    assert time.monotonic() - started < 3.0


def test_zone_helper_splits_long_strings() -> None:
    assert quoted("x" * 450).count('"') == 6
