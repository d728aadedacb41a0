"""CRAM-MD5 (RFC 2195) from stored HMAC states, and the resumable MD5 under it."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postgate.sasl import (
    AUTH_FAILED,
    BAD_BASE64,
    CANCELLED,
    Challenge,
    Failure,
    NeedCredentials,
    SaslError,
    Success,
    encode_base64,
    make_mechanism,
)
from postgate.sasl.cram_md5 import (
    MALFORMED,
    NO_INITIAL_RESPONSE,
    CramMd5Mechanism,
    cram_challenge,
    cram_md5_digest,
    derive_cram_md5_secret,
    format_dovecot,
    parse_dovecot,
)
from postgate.sasl.md5_state import MD5_INITIAL_STATE, md5_compress, md5_resume
from tests.sasl.rfc import vector

RFC = vector("rfc2195_cram_md5")
CHALLENGE = RFC["challenge"].encode("ascii")


def test_rfc2195_example() -> None:
    mechanism = CramMd5Mechanism(CHALLENGE)
    challenge = mechanism.start(None)
    assert challenge == Challenge(CHALLENGE)
    assert isinstance(challenge, Challenge)
    assert encode_base64(challenge.data) == RFC["challenge_base64"]
    assert mechanism.step(RFC["response_base64"]) == NeedCredentials("tim", "")
    assert mechanism.resume(derive_cram_md5_secret(RFC["password"])) == Success("", "tim")


def test_digest_from_states_equals_hmac_md5() -> None:
    secret = derive_cram_md5_secret(RFC["password"])
    assert cram_md5_digest(secret, CHALLENGE).hex() == RFC["digest_hex"]


@settings(max_examples=60)
@given(password=st.text(min_size=1, max_size=100), challenge=st.binary(max_size=200))
def test_any_password_and_challenge_match_hmac(password: str, challenge: bytes) -> None:
    # Covers keys longer than a block (hashed first, RFC 2104 2) and every padding length.
    expected = hmac.new(password.encode("utf-8"), challenge, hashlib.md5).digest()
    assert cram_md5_digest(derive_cram_md5_secret(password), challenge) == expected


@settings(max_examples=40)
@given(st.binary(min_size=64, max_size=64), st.binary(max_size=150))
def test_resumed_md5_equals_hashlib(first_block: bytes, rest: bytes) -> None:
    state = md5_compress(MD5_INITIAL_STATE, first_block)
    assert md5_resume(state, processed=64, data=rest) == hashlib.md5(first_block + rest).digest()


def test_md5_resume_refuses_partial_blocks() -> None:
    with pytest.raises(ValueError):
        md5_resume(MD5_INITIAL_STATE, processed=10, data=b"")
    with pytest.raises(ValueError):
        md5_compress(MD5_INITIAL_STATE, b"short")


def test_wrong_password_and_unknown_user_fail() -> None:
    for secret in (derive_cram_md5_secret("not it"), None):
        mechanism = CramMd5Mechanism(CHALLENGE)
        mechanism.start(None)
        mechanism.step(RFC["response_base64"])
        failure = mechanism.resume(secret)
        assert failure == AUTH_FAILED
        assert isinstance(failure, Failure) and failure.reason


def test_initial_response_is_a_501() -> None:
    # RFC 4954 4: a mechanism without initial response given one anyway.
    assert CramMd5Mechanism(CHALLENGE).start("=") == NO_INITIAL_RESPONSE
    assert (NO_INITIAL_RESPONSE.code, NO_INITIAL_RESPONSE.enhanced) == (501, "5.5.2")


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("dGltYjkxM2E2MDJjN2VkYTdhNDk1YjRlNmU3MzM0ZDM4OTA=", MALFORMED),  # no space
        ("dGltIEI5MTNBNjAyQzdFREE3QTQ5NUI0RTZFNzMzNEQzODkw", MALFORMED),  # upper-case hex
        ("dGltIGI5MTM=", MALFORMED),  # digest too short
        ("IGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw", MALFORMED),  # empty user
        ("not base64", BAD_BASE64),
        ("*", CANCELLED),
    ],
)
def test_bad_responses(response: str, expected: object) -> None:
    mechanism = CramMd5Mechanism(CHALLENGE)
    mechanism.start(None)
    assert mechanism.step(response) == expected


def test_user_names_may_contain_spaces() -> None:
    mechanism = CramMd5Mechanism(b"<1.2@h>")
    digest = hmac.new(b"pw", b"<1.2@h>", hashlib.md5).hexdigest()
    assert mechanism.start(None) == Challenge(b"<1.2@h>")
    assert mechanism.step(encode_base64(f"ann smith {digest}".encode())) == NeedCredentials(
        "ann smith", ""
    )
    assert mechanism.resume(derive_cram_md5_secret("pw")) == Success("", "ann smith")


def test_single_use() -> None:
    mechanism = CramMd5Mechanism(CHALLENGE)
    with pytest.raises(SaslError):
        mechanism.step(RFC["response_base64"])
    mechanism.start(None)
    with pytest.raises(SaslError):
        mechanism.resume(None)


def test_challenge_has_msg_id_form_and_is_unique() -> None:
    assert cram_challenge("mx.example.org", nonce="42", timestamp=7) == b"<42.7@mx.example.org>"
    first = cram_challenge("h", timestamp=1)
    assert first.startswith(b"<") and first.endswith(b".1@h>")
    assert first != cram_challenge("h", timestamp=1)
    mechanism = make_mechanism("cram-md5", hostname="mx.example.org", nonce="1", timestamp=2)
    assert mechanism.start(None) == Challenge(b"<1.2@mx.example.org>")


def test_dovecot_form_round_trips() -> None:
    secret = derive_cram_md5_secret(RFC["password"])
    text = format_dovecot(secret)
    assert text.startswith("{CRAM-MD5}") and len(text) == len("{CRAM-MD5}") + 64
    assert parse_dovecot(text) == secret
    assert RFC["password"] not in text
    for bad in ("{PLAIN}x", "{CRAM-MD5}abcd", "{CRAM-MD5}" + "zz" * 32):
        with pytest.raises(ValueError):
            parse_dovecot(bad)
