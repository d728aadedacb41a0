"""LOGIN (draft-murchison-sasl-login) driven with exact base64 strings."""

from __future__ import annotations

import pytest

from postgate.sasl import (
    BAD_BASE64,
    CANCELLED,
    Challenge,
    Credentials,
    Failure,
    SaslError,
    encode_base64,
    make_mechanism,
)
from postgate.sasl.login import MALFORMED_PASSWORD, MALFORMED_USERNAME, LoginMechanism


def test_full_exchange_with_exact_challenges() -> None:
    mechanism = make_mechanism("LOGIN")
    first = mechanism.start(None)
    assert first == Challenge(b"Username:")
    assert isinstance(first, Challenge)
    assert encode_base64(first.data) == "VXNlcm5hbWU6"
    second = mechanism.step("Ym9i")  # "bob"
    assert second == Challenge(b"Password:")
    assert isinstance(second, Challenge)
    assert encode_base64(second.data) == "UGFzc3dvcmQ6"
    assert mechanism.step("aHVudGVyMg==") == Credentials("", "bob", "hunter2")


def test_initial_response_is_the_user_name() -> None:
    mechanism = LoginMechanism()
    assert mechanism.start("Qm9iQEV4YW1wbGUuT1JH") == Challenge(b"Password:")
    assert mechanism.step("aHVudGVyMg==") == Credentials("", "Bob@Example.ORG", "hunter2")


def test_utf8_user_and_password() -> None:
    mechanism = LoginMechanism()
    mechanism.start("asO8cmdlbg==")
    assert mechanism.step("cMOkc3N3w7ZyZA==") == Credentials("", "jürgen", "pässwörd")


@pytest.mark.parametrize(
    ("username_line", "expected"),
    [
        ("*", CANCELLED),
        ("Ym9i=", BAD_BASE64),
        ("", MALFORMED_USERNAME),  # empty user name
        ("/w==", MALFORMED_USERNAME),  # invalid UTF-8
        ("Ym9iAHg=", MALFORMED_USERNAME),  # NUL inside
    ],
)
def test_bad_user_name(username_line: str, expected: Failure) -> None:
    mechanism = LoginMechanism()
    mechanism.start(None)
    assert mechanism.step(username_line) == expected
    with pytest.raises(SaslError):
        mechanism.step("aHVudGVyMg==")


@pytest.mark.parametrize(
    ("password_line", "expected"),
    [
        ("*", CANCELLED),
        ("aHVudGVyMg", BAD_BASE64),
        ("", MALFORMED_PASSWORD),
        ("/w==", MALFORMED_PASSWORD),
        ("Ym9iAHg=", MALFORMED_PASSWORD),
    ],
)
def test_bad_password(password_line: str, expected: Failure) -> None:
    mechanism = LoginMechanism()
    mechanism.start("Ym9i")
    assert mechanism.step(password_line) == expected


def test_empty_initial_response_is_an_empty_user_name() -> None:
    assert LoginMechanism().start("=") == MALFORMED_USERNAME


def test_done_mechanism_refuses_more_steps() -> None:
    mechanism = LoginMechanism()
    mechanism.start("Ym9i")
    mechanism.step("aHVudGVyMg==")
    with pytest.raises(SaslError):
        mechanism.step("aHVudGVyMg==")
    with pytest.raises(SaslError):
        mechanism.resume(None)
