"""OAUTHBEARER (RFC 7628) and XOAUTH2 message parsing and their error exchanges."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postgate.sasl import (
    AUTH_FAILED,
    BAD_BASE64,
    CANCELLED,
    Challenge,
    NeedToken,
    SaslError,
    Success,
    TokenOutcome,
    encode_base64,
    make_mechanism,
)
from postgate.sasl.oauth import (
    MALFORMED_OAUTHBEARER,
    MALFORMED_XOAUTH2,
    OAuthBearerMechanism,
    XOAuth2Mechanism,
    error_json,
    parse_oauthbearer,
    parse_xoauth2,
)
from tests.sasl.rfc import vector

RFC = vector("rfc7628_oauthbearer")


def b64(text: str) -> str:
    return encode_base64(text.encode("utf-8"))


def test_rfc7628_initial_response_decodes_to_the_documented_message() -> None:
    assert base64.b64decode(RFC["initial_response_base64"]).decode() == RFC["initial_response"]
    mechanism = make_mechanism("OAUTHBEARER")
    step = mechanism.start(RFC["initial_response_base64"])
    assert step == NeedToken(authzid=RFC["authzid"], token=RFC["token"])
    assert mechanism.resume(TokenOutcome(user="user@example.com")) == Success(
        "user@example.com", "user@example.com"
    )


def test_rfc7628_failed_exchange_shape() -> None:
    # The RFC's error object carries the same status; ours adds "schemes" like Gmail.
    rfc_error = json.loads(base64.b64decode(RFC["error_challenge_base64"]))
    mechanism = OAuthBearerMechanism()
    mechanism.start(RFC["initial_response_base64"])
    challenge = mechanism.resume(TokenOutcome(user=None, scope="example_scope"))
    assert isinstance(challenge, Challenge)
    sent = json.loads(challenge.data)
    assert sent == {"status": rfc_error["status"], "schemes": "bearer", "scope": "example_scope"}
    assert (
        challenge.data == b'{"status":"invalid_token","schemes":"bearer","scope":"example_scope"}'
    )
    failure = mechanism.step(RFC["client_error_reply_base64"])  # "AQ==" is a lone %x01
    assert failure == AUTH_FAILED
    assert (AUTH_FAILED.code, AUTH_FAILED.enhanced) == (535, "5.7.8")


def test_cancel_after_error_is_501() -> None:
    mechanism = OAuthBearerMechanism()
    mechanism.start(RFC["initial_response_base64"])
    mechanism.resume(TokenOutcome(user=None))
    assert mechanism.step("*") == CANCELLED


def test_without_initial_response_an_empty_challenge_is_sent() -> None:
    mechanism = OAuthBearerMechanism()
    assert mechanism.start(None) == Challenge(b"")
    assert mechanism.step(b64("n,,\x01auth=bearer abc.def-_~+/==\x01\x01")) == NeedToken(
        "", "abc.def-_~+/=="
    )


def test_error_json_without_scope() -> None:
    assert error_json("invalid_token", None) == b'{"status":"invalid_token","schemes":"bearer"}'


@pytest.mark.parametrize(
    "message",
    [
        "n,,\x01auth=Bearer tok\x01",  # missing final kvsep
        "p=tls-unique,,\x01auth=Bearer tok\x01\x01",  # channel binding is not part of it
        "n,,\x01host=h\x01\x01",  # no auth
        "n,,\x01auth=Basic dXNlcjpwdw==\x01\x01",  # not a bearer token
        "n,,\x01auth=Bearer tok en\x01\x01",  # space inside the token
        "n,,\x01auth=Bearer tok\x01auth=Bearer two\x01\x01",  # duplicate key
        "n,,\x01no-equals\x01\x01",
        "n,b=x,\x01auth=Bearer tok\x01\x01",
        "n,a=bad=escape,\x01auth=Bearer tok\x01\x01",
        "\x01",  # the error-ack form is not a first message
    ],
)
def test_malformed_oauthbearer(message: str) -> None:
    assert parse_oauthbearer(message.encode()) is None
    assert OAuthBearerMechanism().start(b64(message)) == MALFORMED_OAUTHBEARER


def test_xoauth2_google_format_and_failure() -> None:
    mechanism = make_mechanism("XOAUTH2")
    message = b64("user=ann@example.org\x01auth=Bearer ya29.token\x01\x01")
    assert mechanism.start(message) == NeedToken("ann@example.org", "ya29.token")
    challenge = mechanism.resume(TokenOutcome(user=None, scope="https://mail.google.com/"))
    assert challenge == Challenge(
        b'{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}'
    )
    assert mechanism.step("") == AUTH_FAILED  # the client's empty answer, as to Gmail


def test_xoauth2_success() -> None:
    mechanism = XOAuth2Mechanism()
    mechanism.start(b64("user=ann@example.org\x01auth=Bearer t\x01\x01"))
    assert mechanism.resume(TokenOutcome(user="ann@example.org")) == Success(
        "ann@example.org", "ann@example.org"
    )


@pytest.mark.parametrize(
    "message",
    [
        "user=\x01auth=Bearer t\x01\x01",  # empty user
        "user=a\x01auth=Bearer t\x01",
        "auth=Bearer t\x01user=a\x01\x01",  # wrong order
        "user=a\x01auth=Bearer \x01\x01",
    ],
)
def test_malformed_xoauth2(message: str) -> None:
    assert XOAuth2Mechanism().start(b64(message)) == MALFORMED_XOAUTH2


def test_bad_base64_and_wrong_order() -> None:
    assert XOAuth2Mechanism().start("!!") == BAD_BASE64
    mechanism = OAuthBearerMechanism()
    with pytest.raises(SaslError):
        mechanism.resume(TokenOutcome(user="x"))
    mechanism.start(RFC["initial_response_base64"])
    with pytest.raises(SaslError):
        mechanism.step("AQ==")


_B64TOKEN = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/", min_size=1
)
_USER = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=","),
    min_size=1,
)


@given(user=_USER, token=_B64TOKEN)
def test_parsers_recover_what_a_client_built(user: str, token: str) -> None:
    saslname = user.replace("=", "=3D")
    message = f"n,a={saslname},\x01host=h\x01auth=Bearer {token}\x01\x01".encode()
    assert parse_oauthbearer(message) == (user, token)
    assert parse_xoauth2(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()) == (user, token)
