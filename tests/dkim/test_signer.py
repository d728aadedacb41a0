"""dkim.signer: what we sign, and that it verifies (our verifier, keys served by NSD)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import dkim.util
import pytest

from postgate.dkim.keys import DkimKey, KeyStore
from postgate.dkim.manager import KeyManager
from postgate.dkim.signer import DkimSigner, header_list, parse_headers
from postgate.dkim.verify import DkimOutcome, verify_dkim
from postgate.dns.resolver import Resolver
from tests.dkim.helpers import MESSAGE, fresh_resolver, zone_txt
from tests.fixtures.nsd import NsdServer, running_nsd

pytestmark = pytest.mark.nsd


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyStore, list[DkimKey]]:
    store = KeyStore(tmp_path_factory.mktemp("keys") / "dkim")
    made = KeyManager(store).keygen("example.test", activate_now=True)
    return store, made


@pytest.fixture(scope="module")
def dns_server(
    tmp_path_factory: pytest.TempPathFactory, keys: tuple[KeyStore, list[DkimKey]]
) -> Iterator[NsdServer]:
    _store, made = keys
    records = [(f"{k.selector}._domainkey", "TXT", zone_txt(k.txt_value)) for k in made]
    with running_nsd(tmp_path_factory.mktemp("nsd"), {"example.test": records}) as server:
        yield server


@pytest.fixture
def signer(keys: tuple[KeyStore, list[DkimKey]]) -> DkimSigner:
    return DkimSigner(keys[0])


@pytest.fixture
def resolver(dns_server: NsdServer) -> Resolver:
    return fresh_resolver(dns_server)


def signature_tags(headers: bytes) -> list[dict[bytes, bytes]]:
    fields = [f for f in headers.split(b"DKIM-Signature:") if f.strip()]
    return [dkim.util.parse_tag_value(f) for f in fields]


async def test_signs_with_rsa_and_ed25519_and_both_verify(
    signer: DkimSigner, resolver: Resolver
) -> None:
    headers = await signer.sign_async(MESSAGE)
    tags = signature_tags(headers)
    assert [t[b"a"] for t in tags] == [b"rsa-sha256", b"ed25519-sha256"]
    for tag in tags:
        assert tag[b"c"] == b"relaxed/relaxed"
        assert tag[b"d"] == b"example.test"
        assert b"l" not in tag
        assert abs(int(tag[b"t"]) - time.time()) < 60
    results = await verify_dkim(headers + MESSAGE, resolver)
    assert [r.result for r in results] == [DkimOutcome.PASS, DkimOutcome.PASS]


def test_header_list_oversigns_present_fields_and_names_absent_ones_once() -> None:
    names = header_list(parse_headers(MESSAGE))
    counts = {n.decode(): names.count(n) for n in set(names)}
    assert counts == {
        "from": 2,
        "to": 2,
        "subject": 2,
        "date": 2,
        "message-id": 2,
        "list-unsubscribe": 1,
        "list-unsubscribe-post": 1,
        "mime-version": 2,
        "content-type": 2,
    }  # Cc, Reply-To, References... are absent, so not named


@pytest.mark.parametrize(
    "added",
    [
        b"From: Mallory <mallory@example.test>\r\n",
        b"Subject: urgent: wire money\r\n",
        b"List-Unsubscribe: <https://evil.example/u>\r\n",
    ],
)
async def test_a_header_added_after_signing_breaks_every_signature(
    signer: DkimSigner, resolver: Resolver, added: bytes
) -> None:
    headers = signer.sign(MESSAGE)
    head, _, body = MESSAGE.partition(b"\r\n\r\n")
    tampered = headers + head + b"\r\n" + added + b"\r\n" + body
    results = await verify_dkim(tampered, resolver)
    assert [r.result for r in results] == [DkimOutcome.FAIL, DkimOutcome.FAIL]


async def test_refolded_headers_still_verify_relaxed(
    signer: DkimSigner, resolver: Resolver
) -> None:
    headers = signer.sign(MESSAGE)
    refolded = MESSAGE.replace(b"Subject: quarterly numbers", b"Subject:  quarterly\r\n\tnumbers")
    results = await verify_dkim(headers + refolded, resolver)
    assert {r.result for r in results} == {DkimOutcome.PASS}


def test_subdomain_from_is_signed_by_the_parent_key(signer: DkimSigner) -> None:
    message = MESSAGE.replace(b"alice@example.test", b"news@lists.example.test")
    assert signer.signing_domain(message) == "example.test"
    assert all(t[b"d"] == b"example.test" for t in signature_tags(signer.sign(message)))


def test_no_key_for_the_from_domain_means_no_signature(signer: DkimSigner) -> None:
    assert signer.sign(MESSAGE.replace(b"alice@example.test", b"alice@other.test")) == b""
    assert signer.sign(b"To: x@example.test\r\n\r\nno From\r\n") == b""
    two_from = b"From: a@example.test\r\nFrom: b@example.test\r\n\r\nx\r\n"
    assert signer.sign(two_from) == b""


def test_explicit_domain_overrides_from(signer: DkimSigner) -> None:
    message = MESSAGE.replace(b"alice@example.test", b"alice@other.test")
    assert len(signature_tags(signer.sign(message, "example.test"))) == 2


def test_no_active_keys_no_signature(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "dkim")
    KeyManager(store).keygen("example.test")  # pending only
    assert DkimSigner(store).sign(MESSAGE) == b""
