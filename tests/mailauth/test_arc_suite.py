"""The ValiMail ARC test suite (tests/data/arc, see its NOTICE) against
postgate.mailauth.arc: every validation case, and the signing cases.

Validation: the suite's expected cv is "Pass", "Fail", "None" or empty; empty marks a
chain that an earlier sealer already ended with cv=fail, which a validator reports
as fail (RFC 8617 5.2), so we expect fail there.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from postgate.mailauth.arc import arc_seal, verify_arc
from postgate.mailauth.headers import field_value, split_header_fields
from postgate.mailauth.results import ArcStatus
from tests.mailauth.zone_stub import ZoneResolver

DATA = Path(__file__).parent.parent / "data" / "arc"

KNOWN_DIFFERENCES: dict[str, str] = {}


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


class _KeepDuplicates(yaml.SafeLoader):
    """The validation file repeats four test names (different tests, same name);
    plain YAML loading keeps only the last, so number the repeats instead."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key, value in loader.construct_pairs(node, deep=True):
        unique, copy = key, 2
        while unique in mapping:
            unique, copy = f"{key}#{copy}", copy + 1
        mapping[unique] = value
    return mapping


_KeepDuplicates.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


def _scenarios(name: str) -> list[dict[str, Any]]:
    with (DATA / name).open(encoding="utf-8") as handle:
        return [s for s in yaml.load_all(handle, Loader=_KeepDuplicates) if s]


def _validation_cases() -> list[Any]:
    cases = []
    for scenario in _scenarios("arc-draft-validation-tests.yml"):
        zone = {n: [("TXT", v)] for n, v in (scenario.get("txt-records") or {}).items()}
        for name, test in scenario["tests"].items():
            marks = []
            if name in KNOWN_DIFFERENCES:
                marks.append(pytest.mark.xfail(reason=KNOWN_DIFFERENCES[name], strict=True))
            cases.append(pytest.param(zone, test, id=name, marks=marks))
    return cases


VALIDATION = _validation_cases()


def test_validation_suite_is_complete() -> None:
    assert len(VALIDATION) == 175


@pytest.mark.parametrize(("zone", "test"), VALIDATION)
async def test_arc_validation(zone: dict[str, Any], test: dict[str, Any]) -> None:
    expected = str(test["cv"] or "").strip().lower() or "fail"
    result = await verify_arc(_crlf(test["message"]), ZoneResolver(zone))
    assert result.status is ArcStatus(expected), result.reason


def _signing_cases() -> list[Any]:
    cases = []
    for scenario in _scenarios("arc-draft-sign-tests.yml"):
        key = {k: scenario[k] for k in ("domain", "sel", "privatekey")}
        for name, test in scenario["tests"].items():
            marks = []
            if name in KNOWN_DIFFERENCES:
                marks.append(pytest.mark.xfail(reason=KNOWN_DIFFERENCES[name], strict=True))
            cases.append(pytest.param(key, test, id=name, marks=marks))
    return cases


SIGNING = _signing_cases()


def _squash(value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return b"".join(raw.split())


def _tags(value: bytes | str) -> dict[bytes, bytes]:
    """tag=value pairs without b= (the signature covers the header text, whose tag
    order is the signer's choice, so b= cannot be compared across signers)."""
    pairs = (t.partition(b"=") for t in _squash(value).split(b";") if t)
    return {k.lower(): v for k, _, v in pairs if k.lower() != b"b"}


@functools.cache
def _public_key_zone() -> dict[str, Any]:
    records = _scenarios("arc-draft-validation-tests.yml")[0]["txt-records"]
    return {n: [("TXT", v)] for n, v in records.items()}


def test_signing_suite_is_complete() -> None:
    assert len(SIGNING) == 17


@pytest.mark.parametrize(("key", "test"), SIGNING)
async def test_arc_signing(key: dict[str, Any], test: dict[str, Any]) -> None:
    """Same tags as the suite's expected set (bh= included, so the same body hash),
    the same ARC-Authentication-Results, and a seal our validator accepts."""
    message = _crlf(test["message"])
    sealed = await arc_seal(
        message,
        selector=key["sel"],
        domain=key["domain"],
        private_key=key["privatekey"].encode(),
        authserv_id=test["srv-id"],
        signed_headers=[h.encode() for h in test["sig-headers"].split(":")],
        timestamp=int(test["t"]),
    )
    if not (test["AS"] or test["AMS"]):
        assert sealed == b""
        return
    fields = {name.lower(): field_value(raw) for name, raw in split_header_fields(sealed)[0]}
    assert _tags(fields[b"arc-seal"]) == _tags(test["AS"])
    assert _tags(fields[b"arc-message-signature"]) == _tags(test["AMS"])
    # dkimpy re-serialises the A-R results without their comments ("(1024-bit key)");
    # comments are CFWS (RFC 8601 2.2) and carry no result, so compare without them.
    assert _squash(fields[b"arc-authentication-results"]) == _squash(
        re.sub(r"\([^()]*\)", "", test["AAR"])
    )
    result = await verify_arc(sealed + message, ZoneResolver(_public_key_zone()))
    expected_cv = _tags(test["AS"])[b"cv"].decode()
    assert result.status is (ArcStatus.FAIL if expected_cv == "fail" else ArcStatus.PASS)
