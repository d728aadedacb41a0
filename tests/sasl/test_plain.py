"""PLAIN (RFC 4616) driven with exact base64 strings."""

from __future__ import annotations

import pytest

from postgate.sasl import (
    BAD_BASE64,
    CANCELLED,
    Challenge,
    Credentials,
    Failure,
    SaslError,
    make_mechanism,
)
from postgate.sasl.plain import MALFORMED, PlainMechanism


@pytest.mark.parametrize(
    ("initial", "authzid", "authcid", "password"),
    [
        # RFC 4616 4, first example: "\0tim\0tanstaaftanstaaf".
        ("AHRpbQB0YW5zdGFhZnRhbnN0YWFm", "", "tim", "tanstaaftanstaaf"),
        # RFC 4616 4, second example: Kurt acting as Ursel.
        ("VXJzZWwAS3VydAB4aXBqM3BsbXE=", "Ursel", "Kurt", "xipj3plmq"),
        # RFC 4954 4 example: AUTH PLAIN dGVzdAB0ZXN0ADEyMzQ=
        ("dGVzdAB0ZXN0ADEyMzQ=", "test", "test", "1234"),
        # UTF-8 in every field.
        ("x4UAasO8cmdlbgBww6Rzc3fDtnJk", "ǅ", "jürgen", "pässwörd"),
    ],
)
def test_initial_response_yields_credentials(
    initial: str, authzid: str, authcid: str, password: str
) -> None:
    step = PlainMechanism().start(initial)
    assert step == Credentials(authzid=authzid, authcid=authcid, password=password)


def test_without_initial_response_an_empty_challenge_is_sent() -> None:
    mechanism = make_mechanism("PLAIN")
    assert mechanism.start(None) == Challenge(b"")
    step = mechanism.step("AHRpbQB0YW5zdGFhZnRhbnN0YWFm")
    assert step == Credentials("", "tim", "tanstaaftanstaaf")


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("=", MALFORMED),  # empty message: no NULs at all
        ("VXJzZWwAS3VydA==", MALFORMED),  # one NUL
        ("AGJvYgBwdwB4", MALFORMED),  # three NULs
        ("AABwdw==", MALFORMED),  # empty authcid
        ("AGJvYgA=", MALFORMED),  # empty password
        ("AGL/b2IAcHc=", MALFORMED),  # invalid UTF-8
        ("AGJvYgBwdw", BAD_BASE64),  # unpadded
        ("not base64!", BAD_BASE64),
    ],
)
def test_bad_initial_responses_fail(response: str, expected: Failure) -> None:
    assert PlainMechanism().start(response) == expected


def test_malformed_is_a_501_syntax_error() -> None:
    assert (MALFORMED.code, MALFORMED.enhanced) == (501, "5.5.2")


def test_cancel_after_challenge() -> None:
    mechanism = PlainMechanism()
    mechanism.start(None)
    assert mechanism.step("*") == CANCELLED


def test_invalid_base64_after_challenge() -> None:
    mechanism = PlainMechanism()
    mechanism.start(None)
    assert mechanism.step("AHRpbQB0YW5zdGFhZnRhbnN0YWFm=") == BAD_BASE64


def test_the_mechanism_is_single_use() -> None:
    mechanism = PlainMechanism()
    mechanism.start("AHRpbQB0YW5zdGFhZnRhbnN0YWFm")
    with pytest.raises(SaslError) as raised:
        mechanism.step("AHRpbQB0YW5zdGFhZnRhbnN0YWFm")
    assert raised.value.failure.code == 503
    with pytest.raises(SaslError):
        mechanism.start(None)


def test_step_before_start_is_refused() -> None:
    with pytest.raises(SaslError):
        PlainMechanism().step("AHRpbQB0YW5zdGFhZnRhbnN0YWFm")


def test_resume_is_not_part_of_plain() -> None:
    mechanism = PlainMechanism()
    mechanism.start(None)
    with pytest.raises(SaslError):
        mechanism.resume(None)


def test_credentials_report_impersonation_and_hide_the_password() -> None:
    own = Credentials("", "tim", "tanstaaftanstaaf")
    same = Credentials("tim", "tim", "tanstaaftanstaaf")
    other = Credentials("Ursel", "Kurt", "xipj3plmq")
    assert (own.impersonates, same.impersonates, other.impersonates) == (False, False, True)
    assert (own.identity, other.identity) == ("tim", "Ursel")
    assert "xipj3plmq" not in repr(other)
