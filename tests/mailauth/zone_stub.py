"""A resolver stub with the interface and error semantics of postgate.dns.Resolver,
answering from in-memory zone data (the OpenSPF and ARC suites ship their DNS as
YAML; some of it, like deliberately broken names and timeouts, no real server can
serve). Records: {name: [(type, value), ...]}; type "TIMEOUT" makes every query for
that name time out; CNAMEs are followed like a recursive resolver would.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dns.reversename

from postgate.dns import DnsError, MxRecord

MAX_CNAME_CHAIN = 10


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


class ZoneResolver:
    def __init__(self, records: Mapping[str, Sequence[tuple[str, Any]]]) -> None:
        self.zone: dict[str, list[tuple[str, Any]]] = {}
        for name, rrs in records.items():
            self.zone.setdefault(_norm(name), []).extend(rrs)
        self.queries: list[tuple[str, str]] = []

    def _rrset(self, name: str, rtype: str) -> tuple[list[Any], bool]:
        """(values, exists) after following CNAMEs; raises DnsError like the real one."""
        name = _norm(name)
        for _ in range(MAX_CNAME_CHAIN):
            labels = name.split(".")
            if not name or any(not label or len(label) > 63 for label in labels):
                raise DnsError(f"invalid name {name!r}", temporary=False, name=name)
            self.queries.append((name, rtype))
            rrs = self.zone.get(name)
            if rrs is None:
                if name.startswith("error."):  # the suite's convention for a dead server
                    raise DnsError(f"{name}/{rtype}: DNS timeout", temporary=True, name=name)
                return [], False
            values = self._values(name, rrs, rtype)
            if values:
                return values, True
            cnames = [v for t, v in rrs if t == "CNAME"]
            if not cnames:
                return [], True
            name = _norm(cnames[0])
        raise DnsError(f"CNAME chain too long at {name}", temporary=True, name=name)

    @staticmethod
    def _values(name: str, rrs: Sequence[tuple[str, Any]], rtype: str) -> list[Any]:
        """The OpenSPF drivers' rules: "TIMEOUT" times out a query whose type has
        not been seen before it; a value "TIMEOUT" times out that type; a value
        "NONE" is no record (it only stops SPF records being copied to TXT)."""
        values: list[Any] = []
        seen = False
        for t, v in rrs:
            if t == "TIMEOUT":
                if not seen:
                    raise DnsError(f"{name}/{rtype}: DNS timeout", temporary=True, name=name)
                break
            if t != rtype or v == "NONE":
                continue
            if v == "TIMEOUT":
                raise DnsError(f"{name}/{rtype}: DNS timeout", temporary=True, name=name)
            seen = True
            values.append(v)
        return values

    async def txt(self, name: str) -> list[str]:
        values, _ = self._rrset(name, "TXT")
        return ["".join(v) if isinstance(v, list) else str(v) for v in values]

    async def addresses(self, host: str, *, prefer_ipv4: bool | None = None) -> list[str]:
        v6, _ = self._rrset(host, "AAAA")
        v4, _ = self._rrset(host, "A")
        return [str(ipaddress.ip_address(a)) for a in [*v6, *v4]]

    async def mx(self, domain: str) -> list[MxRecord] | None:
        values, exists = self._rrset(domain, "MX")
        if not exists:
            raise DnsError(f"{domain}: domain not found", temporary=False, name=domain)
        return [MxRecord(int(p), _norm(str(h))) for p, h in values] or None

    async def ptr(self, address: str) -> list[str]:
        reverse = dns.reversename.from_address(address).to_text(omit_final_dot=True)
        values, _ = self._rrset(reverse, "PTR")
        return [_norm(str(v)) for v in values]


def openspf_zone(zonedata: Mapping[str, Iterable[Any]]) -> dict[str, list[tuple[str, Any]]]:
    """Zone data of an OpenSPF scenario: SPF (type 99) records are copied to TXT for
    names without TXT records, as the suite's drivers do (its header comment)."""
    zone: dict[str, list[tuple[str, Any]]] = {}
    for name, entries in zonedata.items():
        rrs: list[tuple[str, Any]] = []
        for entry in entries:
            if entry == "TIMEOUT":
                rrs.append(("TIMEOUT", None))
                continue
            for rtype, value in entry.items():
                rrs.append((rtype, value))
        if not any(t == "TXT" for t, _ in rrs):
            # After any TIMEOUT marker, as the drivers yield them last.
            rrs += [("TXT", v) for t, v in rrs if t == "SPF"]
        zone[name] = rrs
    return zone
