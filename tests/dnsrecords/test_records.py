"""dnsrecords.records: the records `postgate dns records` prints."""

from __future__ import annotations

from pathlib import Path

import dns.rdatatype
import dns.zone
from dns.rdtypes.ANY.TXT import TXT

from postgate.dkim.keys import KeyStore
from postgate.dkim.manager import KeyManager
from postgate.dkim.txt import parse_tags
from postgate.dnsrecords.check import dmarc_problems
from postgate.dnsrecords.records import (
    DomainRecords,
    mta_sts_id,
    mta_sts_policy,
    required_records,
)
from postgate.dnsrecords.spf import parse_spf


def plan(tmp_path: Path) -> DomainRecords:
    store = KeyStore(tmp_path / "dkim")
    manager = KeyManager(store)
    manager.keygen("example.test", activate_now=True)
    manager.rotate("example.test")
    return required_records(
        "example.test",
        hostname="mx.example.test",
        sending_addresses=["192.0.2.25", "2001:db8::25"],
        dkim_keys=store.keys("example.test"),
        dmarc_rua="dmarc@example.test",
    )


def test_zone_text_loads_as_a_zone_and_every_txt_is_well_formed(tmp_path: Path) -> None:
    records = plan(tmp_path)
    zone_text = "$TTL 300\n@ IN SOA ns hostmaster 1 3600 600 86400 60\n@ IN NS ns\n"
    zone_text += records.zone_text()
    zone = dns.zone.from_text(zone_text, origin="example.test.", relativize=False)
    txt = {
        name.to_text(omit_final_dot=True): b"".join(rdata.strings).decode()
        for name, _ttl, rdata in zone.iterate_rdatas(dns.rdatatype.TXT)
        if isinstance(rdata, TXT)
    }
    spf = txt["example.test"]
    assert spf == "v=spf1 ip4:192.0.2.25 ip6:2001:db8::25 mx ~all"
    parse_spf(spf)
    dkim_names = [n for n in txt if "._domainkey." in n]
    assert len(dkim_names) == 4  # two active, two pending
    for name in dkim_names:
        assert parse_tags(txt[name])["v"] == "DKIM1" and parse_tags(txt[name])["p"]
    assert dmarc_problems(txt["_dmarc.example.test"]) == []
    assert "rua=mailto:dmarc@example.test" in txt["_dmarc.example.test"]
    assert parse_tags(txt["_mta-sts.example.test"])["id"] == mta_sts_id(records.mta_sts_policy)
    assert parse_tags(txt["_smtp._tls.example.test"]) == {
        "v": "TLSRPTv1",
        "rua": "mailto:postmaster@example.test",
    }
    mx = list(zone.iterate_rdatas(dns.rdatatype.MX))
    assert [r.to_text() for _n, _t, r in mx] == ["10 mx.example.test."]
    assert "mode: testing" in records.zone_text()


def test_retired_keys_are_left_out(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "dkim")
    manager = KeyManager(store)
    manager.keygen("example.test", algorithms=["ed25519"], activate_now=True)
    manager.keygen("example.test", algorithms=["ed25519"], activate_now=True)
    keys = store.keys("example.test")
    assert (
        len(required_records("example.test", hostname="mx.example.test", dkim_keys=keys).records)
        == 7
    )  # MX, SPF, 2 DKIM (active + retiring), DMARC, MTA-STS, TLS-RPT


def test_mta_sts_policy_and_id() -> None:
    policy = mta_sts_policy("mx.example.test")
    assert policy == "version: STSv1\r\nmode: testing\r\nmx: mx.example.test\r\nmax_age: 604800\r\n"
    assert mta_sts_id(policy).isalnum() and len(mta_sts_id(policy)) <= 32
    assert mta_sts_id(policy) != mta_sts_id(mta_sts_policy("mx.example.test", mode="enforce"))
