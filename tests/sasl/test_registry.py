"""Mechanism lookup by name."""

from __future__ import annotations

import pytest

from postgate.sasl import (
    MECHANISMS,
    TOKEN_MECHANISMS,
    UNKNOWN_MECHANISM,
    SaslError,
    make_mechanism,
)


@pytest.mark.parametrize(
    "name",
    ["PLAIN", "plain", "LOGIN", "Login", "SCRAM-SHA-256", "xoauth2", "OAUTHBEARER", "cram-md5"],
)
def test_known_names(name: str) -> None:
    assert make_mechanism(name).name == name.upper()


@pytest.mark.parametrize("name", ["GSSAPI", "SCRAM-SHA-256-PLUS", "DIGEST-MD5", "", "PLAIN "])
def test_unknown_names_raise_504(name: str) -> None:
    with pytest.raises(SaslError) as raised:
        make_mechanism(name)
    assert raised.value.failure == UNKNOWN_MECHANISM
    assert (UNKNOWN_MECHANISM.code, UNKNOWN_MECHANISM.enhanced) == (504, "5.5.4")


def test_each_call_makes_a_fresh_exchange() -> None:
    assert make_mechanism("PLAIN") is not make_mechanism("PLAIN")
    assert set(MECHANISMS) == {
        "PLAIN",
        "LOGIN",
        "SCRAM-SHA-256",
        "OAUTHBEARER",
        "XOAUTH2",
        "CRAM-MD5",
    }
    assert {"OAUTHBEARER", "XOAUTH2"} == TOKEN_MECHANISMS
