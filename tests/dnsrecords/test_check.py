"""dnsrecords.check against a real NSD: the records we recommend pass; broken ones fail."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from postgate.dkim.keys import DkimKey, KeyStore
from postgate.dkim.manager import KeyManager
from postgate.dnsrecords.check import CheckReport, Status, check_domain
from postgate.dnsrecords.records import DnsRecord, required_records
from tests.dkim.helpers import fresh_resolver, zone_txt
from tests.fixtures.nsd import NsdServer, Record, Zones

pytestmark = pytest.mark.nsd

HOST = "mx.example.test"
ADDRESS = "192.0.2.25"
OTHER_KEY = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="


def as_zone_record(record: DnsRecord) -> Record:
    value = zone_txt(record.value) if record.rtype == "TXT" else record.value
    return (record.name + ".", record.rtype, value)


def good_zones(keys: list[DkimKey]) -> dict[str, list[Record]]:
    plan = required_records(
        "example.test", hostname=HOST, sending_addresses=[ADDRESS], dkim_keys=keys
    )
    return {
        "example.test": [as_zone_record(r) for r in plan.records] + [("mx", "A", ADDRESS)],
        "2.0.192.in-addr.arpa": [("25", "PTR", f"{HOST}.")],
    }


@pytest.fixture
def keys(tmp_path: Path) -> list[DkimKey]:
    store = KeyStore(tmp_path / "dkim")
    KeyManager(store, log_events=False).keygen("example.test", activate_now=True)
    made: list[DkimKey] = store.keys("example.test")
    return made


async def run_check(server: NsdServer, keys: list[DkimKey]) -> CheckReport:
    return await check_domain(
        "example.test",
        fresh_resolver(server),
        hostname=HOST,
        sending_addresses=[ADDRESS],
        dkim_keys=keys,
    )


def statuses(report: CheckReport) -> dict[str, Status]:
    return {r.check: r.status for r in report.results}


async def test_recommended_records_pass_every_check(
    nsd_server: Callable[[Zones], NsdServer], keys: list[DkimKey]
) -> None:
    report = await run_check(nsd_server(good_zones(keys)), keys)
    assert not report.failed
    assert set(statuses(report).values()) == {Status.PASS}, report.results
    assert set(statuses(report)) == {
        "mx",
        "spf",
        "dmarc",
        "mta-sts",
        "tls-rpt",
        f"ptr {ADDRESS}",
        *(f"dkim {k.selector}" for k in keys),
    }


def broken(zones: dict[str, list[Record]], keys: list[DkimKey]) -> Zones:
    """Every mistake at once: SPF over budget, two DMARC records, a foreign DKIM key,
    MX elsewhere, PTR naming another host."""
    rsa_name = f"{keys[0].selector}._domainkey.example.test."
    records = [
        r
        for r in zones["example.test"]
        if r[1] != "MX" and not r[2].startswith('"v=spf1') and r[0] != rsa_name
    ]
    records += [
        ("@", "MX", "10 mail.elsewhere.test."),
        # 1 (mx) + 1 (include) + 9 (a:) = 11 lookups > 10 (RFC 7208 4.6.4)
        ("@", "TXT", zone_txt("v=spf1 mx include:_spf.example.test ~all")),
        (
            "_spf",
            "TXT",
            zone_txt("v=spf1 " + " ".join(f"a:h{i}.example.test" for i in range(9)) + " -all"),
        ),
        ("_dmarc", "TXT", zone_txt("v=DMARC1; p=reject")),
        (rsa_name, "TXT", zone_txt(OTHER_KEY)),
    ]
    return {"example.test": records, "2.0.192.in-addr.arpa": [("25", "PTR", "other.test.")]}


async def test_broken_records_fail_with_reasons(
    nsd_server: Callable[[Zones], NsdServer], keys: list[DkimKey]
) -> None:
    report = await run_check(nsd_server(broken(good_zones(keys), keys)), keys)
    assert report.failed
    by_check = {r.check: r for r in report.results}
    assert by_check["mx"].status is Status.FAIL
    assert "mail.elsewhere.test" in by_check["mx"].detail
    assert by_check["spf"].status is Status.FAIL
    assert "11 DNS lookups" in by_check["spf"].detail
    assert by_check["dmarc"].status is Status.FAIL
    assert "2 DMARC records" in by_check["dmarc"].detail
    rsa, ed = keys
    assert by_check[f"dkim {rsa.selector}"].status is Status.FAIL
    assert "different key" in by_check[f"dkim {rsa.selector}"].detail
    assert by_check[f"dkim {ed.selector}"].status is Status.PASS
    assert by_check[f"ptr {ADDRESS}"].status is Status.FAIL


async def test_pending_unpublished_key_warns_and_missing_optional_records_warn(
    nsd_server: Callable[[Zones], NsdServer], keys: list[DkimKey], tmp_path: Path
) -> None:
    zones = good_zones(keys)
    zones["example.test"] = [
        r for r in zones["example.test"] if "_mta-sts" not in r[0] and "_smtp._tls" not in r[0]
    ]
    server = nsd_server(zones)
    store = KeyStore(tmp_path / "dkim")
    (pending,) = KeyManager(store, log_events=False).keygen("example.test", algorithms=["ed25519"])
    report = await run_check(server, store.keys("example.test"))
    by_check = statuses(report)
    assert by_check[f"dkim {pending.selector}"] is Status.WARN
    assert by_check["mta-sts"] is Status.WARN and by_check["tls-rpt"] is Status.WARN
    assert not report.failed


async def test_spf_not_covering_our_address_fails(
    nsd_server: Callable[[Zones], NsdServer], keys: list[DkimKey]
) -> None:
    zones = good_zones(keys)
    zones["example.test"] = [r for r in zones["example.test"] if not r[2].startswith('"v=spf1')]
    zones["example.test"].append(("@", "TXT", zone_txt("v=spf1 ip4:198.51.100.0/24 -all")))
    report = await run_check(nsd_server(zones), keys)
    spf = next(r for r in report.results if r.check == "spf")
    assert spf.status is Status.FAIL and ADDRESS in spf.detail
