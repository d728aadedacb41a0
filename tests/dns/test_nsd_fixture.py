"""The NSD test fixture itself: factory fixture, reloads, restarts."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from postgate.dns.resolver import Resolver
from tests.fixtures.nsd import NsdServer, Zones, _zone_text, nsd_server, require_nsd  # noqa: F401

pytestmark = pytest.mark.nsd


async def test_reload_and_restart_keep_the_same_port(
    nsd_server: Callable[[Zones], NsdServer],  # noqa: F811
) -> None:
    server = nsd_server({"one.test": [("www", "A", "192.0.2.1")]})
    port = server.port
    serial = server.serial
    server.update_zones({"one.test": [("www", "A", "192.0.2.2")]})  # SIGHUP path
    assert server.serial == serial + 1
    assert await Resolver([server.nameserver]).addresses("www.one.test") == ["192.0.2.2"]
    server.update_zones(  # new zone set: restart path
        {"one.test": [("www", "A", "192.0.2.3")], "two.test": [("@", "MX", "10 mx.one.test.")]}
    )
    assert server.port == port
    resolver = Resolver([server.nameserver])
    assert await resolver.addresses("www.one.test") == ["192.0.2.3"]
    assert await resolver.txt("two.test") == []
    records = await resolver.mx("two.test")
    assert records is not None and records[0].exchange == "mx.one.test"


def test_zone_text_adds_soa_and_ns_and_rejects_own_soa() -> None:
    text = _zone_text("z.test", [("@", "MX", "10 mx"), ("mx", "A", "192.0.2.1", 60)], 7)
    assert "@ IN SOA ns.z.test. hostmaster.z.test. 7 " in text
    assert "@ IN NS ns.z.test." in text
    assert "mx 60 IN A 192.0.2.1" in text
    with pytest.raises(ValueError):
        _zone_text("z.test", [("@", "SOA", "x")], 1)


@pytest.mark.parametrize(
    ("ci", "outcome"), [("", pytest.skip.Exception), ("true", pytest.fail.Exception)]
)
def test_missing_nsd_skips_or_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr("os.access", lambda path, mode: False)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="apt-get install nsd"):
        require_nsd()
