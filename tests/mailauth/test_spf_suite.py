"""The OpenSPF RFC 7208 test suite (tests/data/openspf, see its NOTICE) against
postgate.mailauth.spf, with each scenario's zone data served by ZoneResolver.

Every test of the suite runs; KNOWN_DIFFERENCES lists the ones where we give a
different answer on purpose, with the reason (empty = all pass).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from postgate.mailauth.spf import check_spf
from tests.mailauth.zone_stub import ZoneResolver, openspf_zone

SUITE = Path(__file__).parent.parent / "data" / "openspf" / "rfc7208-tests.yml"

KNOWN_DIFFERENCES: dict[str, str] = {}


def _cases() -> list[Any]:
    cases = []
    with SUITE.open(encoding="utf-8") as handle:
        for scenario in yaml.safe_load_all(handle):
            zone = openspf_zone(scenario.get("zonedata") or {})
            for name, test in scenario["tests"].items():
                marks = []
                if name in KNOWN_DIFFERENCES:
                    marks.append(pytest.mark.xfail(reason=KNOWN_DIFFERENCES[name], strict=True))
                cases.append(pytest.param(zone, test, id=name, marks=marks))
    return cases


CASES = _cases()


def test_suite_is_complete() -> None:
    assert len(CASES) == 203


@pytest.mark.parametrize(("zone", "test"), CASES)
async def test_openspf(zone: dict[str, Any], test: dict[str, Any]) -> None:
    resolver = ZoneResolver(zone)
    result = await check_spf(
        str(test["host"]),
        str(test.get("mailfrom", "")),
        str(test.get("helo", "")),
        resolver,
        receiver="receiver.example.com",
        time_budget=5.0,
    )
    expected = test["result"]
    allowed = expected if isinstance(expected, list) else [expected]
    assert result.status.value in allowed, result.reason
    if "explanation" in test and result.status.value == "fail":
        wanted = "" if test["explanation"] == "DEFAULT" else test["explanation"]
        assert result.explanation == wanted
