"""delivery.mx.resolve_mx against a real NSD on loopback (RFC 5321 5.1, RFC 7505)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from postgate.delivery.mx import MxError, MxHost, NullMxError, resolve_mx
from postgate.dns.resolver import Resolver
from tests.fixtures.nsd import NsdServer, Zones, running_nsd

pytestmark = pytest.mark.nsd

OUR_NAME = "mail.ours.test"
OUR_ADDRESS = "192.0.2.25"

ZONES: Zones = {
    "mx.test": [
        ("a", "A", "192.0.2.1"),
        ("b", "A", "192.0.2.2"),
        ("c", "A", "192.0.2.3"),
        ("d", "A", "192.0.2.4"),
        ("e", "A", "192.0.2.5"),
        ("e", "AAAA", "2001:db8::5"),
        ("good", "A", "192.0.2.80"),
        ("alias", "CNAME", "good"),
        ("ouraddr", "A", OUR_ADDRESS),
        ("ordered", "MX", "10 a"),
        ("ordered", "MX", "10 b"),
        ("ordered", "MX", "10 c"),
        ("ordered", "MX", "20 d"),
        ("ordered", "MX", "5 e"),
        ("implicit", "A", "192.0.2.50"),
        ("implicit", "AAAA", "2001:db8::50"),
        ("noaddr", "TXT", '"nothing to see"'),
        ("null", "MX", "0 ."),
        ("loop", "MX", "10 good"),
        ("loop", "MX", f"20 {OUR_NAME}."),
        ("loop", "MX", "20 b"),
        ("loop", "MX", "30 c"),
        ("loopall", "MX", f"10 {OUR_NAME}."),
        ("loopall", "MX", "20 good"),
        ("loopaddr", "MX", "10 good"),
        ("loopaddr", "MX", "20 ouraddr"),
        ("loopaddr", "MX", "30 c"),
        ("loopaddrall", "MX", "10 ouraddr"),
        ("loopaddrall", "MX", "20 good"),
        ("deadmx", "MX", "10 nohost"),
        ("partial", "MX", "10 nohost"),
        ("partial", "MX", "20 good"),
        ("cname", "MX", "10 alias"),
        ("iplit", "MX", "10 192.0.2.77."),
        ("iplit", "MX", "20 good"),
        ("shaky", "MX", "10 host.elsewhere.invalid."),
        ("shaky", "MX", f"20 {OUR_NAME}."),
        ("ourself", "A", OUR_ADDRESS),
    ],
    # Our own host name exists without MX; its address is not in local_addresses,
    # so only the name comparison can spot the loop.
    "ours.test": [("mail", "A", "192.0.2.26")],
}


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NsdServer]:
    with running_nsd(tmp_path_factory.mktemp("nsd"), ZONES) as server:
        yield server


@pytest.fixture
def resolver(dns_server: NsdServer) -> Resolver:
    return Resolver([dns_server.nameserver], timeout=1.0, lifetime=2.0)


async def route(resolver: Resolver, domain: str, seed: int = 1) -> list[MxHost]:
    return await resolve_mx(
        resolver,
        domain,
        local_names={"MAIL.Ours.Test."},
        local_addresses={OUR_ADDRESS},
        rng=random.Random(seed),
    )


async def route_error(resolver: Resolver, domain: str) -> MxError:
    with pytest.raises(MxError) as caught:
        await route(resolver, domain)
    return caught.value


async def test_sorted_by_preference_and_equal_ones_shuffled(resolver: Resolver) -> None:
    orders = set()
    for seed in range(12):
        hosts = await route(resolver, "ordered.mx.test", seed)
        assert [h.preference for h in hosts] == [5, 10, 10, 10, 20]
        assert hosts[0] == MxHost("e.mx.test", 5, ("2001:db8::5", "192.0.2.5"), False)
        assert hosts[-1].name == "d.mx.test"
        assert sorted(h.name for h in hosts[1:4]) == ["a.mx.test", "b.mx.test", "c.mx.test"]
        orders.add(tuple(h.name for h in hosts[1:4]))
    assert len(orders) > 1  # the equal-preference group really is shuffled
    again = [h.name for h in await route(resolver, "ordered.mx.test", 3)]
    assert again == [h.name for h in await route(resolver, "ordered.mx.test", 3)]


async def test_max_hosts_bounds_the_list(resolver: Resolver) -> None:
    hosts = await resolve_mx(resolver, "ordered.mx.test", local_names=(), max_hosts=2)
    assert [h.preference for h in hosts] == [5, 10]


async def test_implicit_mx_uses_domain_addresses(resolver: Resolver) -> None:
    assert await route(resolver, "Implicit.MX.test.") == [
        MxHost("implicit.mx.test", 0, ("2001:db8::50", "192.0.2.50"), True)
    ]


async def test_no_mx_and_no_address_is_permanent(resolver: Resolver) -> None:
    error = await route_error(resolver, "noaddr.mx.test")
    assert (error.temporary, error.enhanced) == (False, "5.1.2")


async def test_nxdomain_is_permanent_domain_not_found(resolver: Resolver) -> None:
    error = await route_error(resolver, "nothere.mx.test")
    assert (error.temporary, error.enhanced) == (False, "5.1.2")
    assert "not found" in error.text


async def test_dns_failure_is_temporary(resolver: Resolver) -> None:
    error = await route_error(resolver, "elsewhere.invalid")  # NSD answers REFUSED
    assert (error.temporary, error.enhanced) == (True, "4.4.3")


async def test_null_mx_is_permanent_5_1_10(resolver: Resolver) -> None:
    with pytest.raises(NullMxError) as caught:
        await route(resolver, "null.mx.test")
    assert (caught.value.temporary, caught.value.enhanced) == (False, "5.1.10")
    assert "null MX" in caught.value.text


async def test_our_name_drops_itself_and_worse_preferences(resolver: Resolver) -> None:
    hosts = await route(resolver, "loop.mx.test")
    assert [(h.name, h.preference) for h in hosts] == [("good.mx.test", 10)]


async def test_our_name_as_best_mx_is_a_loop(resolver: Resolver) -> None:
    error = await route_error(resolver, "loopall.mx.test")
    assert (error.temporary, error.enhanced) == (False, "5.4.6")
    assert error.text == "mail for loopall.mx.test loops back to myself"


async def test_our_address_drops_itself_and_worse_preferences(resolver: Resolver) -> None:
    hosts = await route(resolver, "loopaddr.mx.test")
    assert [h.name for h in hosts] == ["good.mx.test"]
    error = await route_error(resolver, "loopaddrall.mx.test")
    assert error.enhanced == "5.4.6"


async def test_implicit_mx_pointing_at_us_is_a_loop(resolver: Resolver) -> None:
    assert (await route_error(resolver, "ourself.mx.test")).enhanced == "5.4.6"
    assert (await route_error(resolver, OUR_NAME)).enhanced == "5.4.6"


async def test_temporary_failure_of_better_host_defers_instead_of_loop(
    resolver: Resolver,
) -> None:
    error = await route_error(resolver, "shaky.mx.test")
    assert (error.temporary, error.enhanced) == (True, "4.4.3")


async def test_mx_hosts_without_addresses(resolver: Resolver) -> None:
    error = await route_error(resolver, "deadmx.mx.test")
    assert (error.temporary, error.enhanced) == (False, "5.4.4")
    assert [h.name for h in await route(resolver, "partial.mx.test")] == ["good.mx.test"]


async def test_cname_target_is_followed(resolver: Resolver) -> None:
    assert await route(resolver, "cname.mx.test") == [
        MxHost("alias.mx.test", 10, ("192.0.2.80",), False)
    ]


async def test_ip_address_as_mx_target_is_not_used_as_address(resolver: Resolver) -> None:
    hosts = await route(resolver, "iplit.mx.test")
    assert all("192.0.2.77" not in h.addresses for h in hosts)
    assert [h.name for h in hosts] == ["good.mx.test"]


async def test_address_literal_domain(resolver: Resolver) -> None:
    assert await route(resolver, "[192.0.2.9]") == [MxHost("[192.0.2.9]", 0, ("192.0.2.9",), True)]
    hosts = await route(resolver, "[IPv6:2001:DB8::9]")
    assert hosts[0].addresses == ("2001:db8::9",)
    assert (await route_error(resolver, f"[{OUR_ADDRESS}]")).enhanced == "5.4.6"
    assert (await route_error(resolver, "[not-an-ip]")).enhanced == "5.1.2"
