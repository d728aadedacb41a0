"""postgate.dns.resolver against a real NSD on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from postgate.dns.resolver import DnsError, MxRecord, Resolver, canonical_name, parse_nameserver
from tests.fixtures.nsd import NsdServer, Zones, running_nsd

pytestmark = pytest.mark.nsd

ZONES: Zones = {
    "example.test": [
        ("@", "MX", "10 MX1"),
        ("@", "MX", "20 backup.other.test."),
        ("@", "TXT", '"v=spf1 -all"'),
        ("mx1", "A", "192.0.2.1"),
        ("mx1", "AAAA", "2001:db8::1"),
        ("mx1", "A", "192.0.2.11"),
        ("v6only", "AAAA", "2001:db8::6"),
        ("alias", "CNAME", "mx1"),
        ("nomx", "A", "192.0.2.10"),
        ("sel._domainkey", "TXT", '"v=DKIM1; k=rsa; " "p=MIIBIjAN"'),
        ("short", "A", "192.0.2.30", 1),
    ],
    "nullmx.test": [("@", "MX", "0 .")],
    "2.0.192.in-addr.arpa": [("1", "PTR", "mx1.example.test.")],
}


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NsdServer]:
    with running_nsd(tmp_path_factory.mktemp("nsd"), ZONES) as server:
        yield server


@pytest.fixture
def resolver(dns_server: NsdServer) -> Resolver:
    return Resolver([dns_server.nameserver], timeout=1.0, lifetime=2.0)


async def test_mx_records_are_lower_case_without_trailing_dot(resolver: Resolver) -> None:
    records = await resolver.mx("Example.TEST.")
    assert records is not None
    assert sorted(records, key=lambda r: r.preference) == [
        MxRecord(10, "mx1.example.test"),
        MxRecord(20, "backup.other.test"),
    ]


async def test_mx_of_existing_name_without_mx_is_none(resolver: Resolver) -> None:
    assert await resolver.mx("nomx.example.test") is None


async def test_mx_of_nonexistent_domain_is_permanent_error(resolver: Resolver) -> None:
    with pytest.raises(DnsError) as caught:
        await resolver.mx("nothere.example.test")
    assert caught.value.temporary is False
    assert caught.value.rdtype == "MX"


async def test_refused_answer_is_temporary_error(resolver: Resolver) -> None:
    # NSD answers REFUSED for zones it does not serve, like a broken server would.
    with pytest.raises(DnsError) as caught:
        await resolver.mx("elsewhere.invalid")
    assert caught.value.temporary is True


async def test_null_mx_exchange_is_empty_string(resolver: Resolver) -> None:
    assert await resolver.mx("nullmx.test") == [MxRecord(0, "")]


async def test_timeout_is_temporary_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        resolver = Resolver([f"127.0.0.1:{port}"], timeout=0.2, lifetime=0.5)
        with pytest.raises(DnsError) as caught:
            await resolver.mx("example.test")
    assert caught.value.temporary is True
    assert "timeout" in str(caught.value)


async def test_addresses_ipv6_first_by_default(resolver: Resolver) -> None:
    addresses = await resolver.addresses("mx1.example.test")
    assert addresses[0] == "2001:db8::1"
    assert sorted(addresses[1:]) == ["192.0.2.1", "192.0.2.11"]


async def test_addresses_prefer_ipv4(dns_server: NsdServer, resolver: Resolver) -> None:
    v4_first = Resolver([dns_server.nameserver], prefer_ipv4=True)
    assert (await v4_first.addresses("mx1.example.test"))[-1] == "2001:db8::1"
    assert (await resolver.addresses("mx1.example.test", prefer_ipv4=True))[-1] == "2001:db8::1"


async def test_addresses_single_family_and_cname(resolver: Resolver) -> None:
    assert await resolver.addresses("v6only.example.test") == ["2001:db8::6"]
    assert sorted(await resolver.addresses("alias.example.test")) == sorted(
        ["2001:db8::1", "192.0.2.1", "192.0.2.11"]
    )


async def test_addresses_of_missing_name_is_empty(resolver: Resolver) -> None:
    assert await resolver.addresses("nothere.example.test") == []
    assert await resolver.addresses("nullmx.test") == []


async def test_txt_joins_character_strings(resolver: Resolver) -> None:
    assert await resolver.txt("sel._domainkey.example.test") == ["v=DKIM1; k=rsa; p=MIIBIjAN"]
    assert await resolver.txt("example.test") == ["v=spf1 -all"]
    assert await resolver.txt("nothere.example.test") == []


async def test_ptr(resolver: Resolver) -> None:
    assert await resolver.ptr("192.0.2.1") == ["mx1.example.test"]
    assert await resolver.ptr("192.0.2.99") == []
    with pytest.raises(DnsError) as caught:
        await resolver.ptr("not-an-address")
    assert caught.value.temporary is False


async def test_malformed_name_is_permanent_error(resolver: Resolver) -> None:
    with pytest.raises(DnsError) as caught:
        await resolver.mx("a..example.test")
    assert caught.value.temporary is False


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_cache_respects_ttl_across_zone_reload(tmp_path: Path) -> None:
    zones: Zones = {"cache.test": [("host", "A", "192.0.2.1", 30)]}
    clock = FakeClock()
    with running_nsd(tmp_path, zones) as server:
        resolver = Resolver([server.nameserver], clock=clock)
        assert await resolver.addresses("host.cache.test") == ["192.0.2.1"]
        server.update_zones({"cache.test": [("host", "A", "192.0.2.2", 30)]})
        clock.now = 29.0
        assert await resolver.addresses("host.cache.test") == ["192.0.2.1"]  # cached
        assert await Resolver([server.nameserver]).addresses("host.cache.test") == ["192.0.2.2"]
        clock.now = 31.0
        assert await resolver.addresses("host.cache.test") == ["192.0.2.2"]


async def test_negative_answer_cached_for_soa_minimum(tmp_path: Path) -> None:
    zones: Zones = {"neg.test": [("other", "A", "192.0.2.1")]}
    clock = FakeClock()
    with running_nsd(tmp_path, zones) as server:
        resolver = Resolver([server.nameserver], clock=clock)
        with pytest.raises(DnsError):
            await resolver.mx("late.neg.test")
        server.update_zones({"neg.test": [("late", "MX", "10 mx.neg.test.")]})
        clock.now = 59.0  # the fixture's SOA minimum is 60 s
        with pytest.raises(DnsError):
            await resolver.mx("late.neg.test")
        clock.now = 61.0
        assert await resolver.mx("late.neg.test") == [MxRecord(10, "mx.neg.test")]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("192.0.2.1", ("192.0.2.1", 53)),
        ("::1", ("::1", 53)),
        ("[::1]:5300", ("::1", 5300)),
        ("2001:db8::53", ("2001:db8::53", 53)),
    ],
)
def test_parse_nameserver(spec: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(spec) == expected


@pytest.mark.parametrize("spec", ["ns.example.test", "127.0.0.1:0", "127.0.0.1:99999", "[::1"])
def test_parse_nameserver_rejects_garbage(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(spec)


def test_canonical_name() -> None:
    assert canonical_name("MX.Example.Test.") == "mx.example.test"
    assert canonical_name("bücher.test") == "xn--bcher-kva.test"
