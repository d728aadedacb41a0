"""SCRAM-SHA-256 (RFC 5802, RFC 7677): the RFC exchange byte for byte, scramp's client
against our server, and every refusal the RFC names."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scramp import ScramClient, ScramException

from postgate.sasl import (
    AUTH_FAILED,
    BAD_BASE64,
    CANCELLED,
    Challenge,
    NeedCredentials,
    SaslError,
    ScramSecret,
    Success,
    encode_base64,
    make_mechanism,
)
from postgate.sasl.scram import (
    MALFORMED,
    ScramSha256Mechanism,
    decode_saslname,
    derive_scram_secret,
)
from postgate.sasl.stored import format_scram_secret, parse_scram_secret
from tests.sasl.rfc import vector

RFC = vector("rfc7677_scram_sha256")
SALT = base64.b64decode(RFC["salt_base64"])
PENCIL = derive_scram_secret(RFC["password"], salt=SALT, iterations=RFC["iterations"])


def b64(text: str) -> str:
    return encode_base64(text.encode("utf-8"))


def test_rfc7677_section_3_exchange() -> None:
    mechanism = make_mechanism("SCRAM-SHA-256", nonce=RFC["server_nonce"])
    assert mechanism.start(b64(RFC["client_first"])) == NeedCredentials(authcid="user", authzid="")
    assert mechanism.resume(PENCIL) == Challenge(RFC["server_first"].encode())
    final = mechanism.step(b64(RFC["client_final"]))
    assert final == Success("", "user", additional_data=RFC["server_final"].encode())


def test_without_initial_response_the_server_sends_an_empty_challenge() -> None:
    mechanism = ScramSha256Mechanism(server_nonce=RFC["server_nonce"])
    assert mechanism.start(None) == Challenge(b"")
    assert isinstance(mechanism.step(b64(RFC["client_first"])), NeedCredentials)
    assert mechanism.resume(PENCIL) == Challenge(RFC["server_first"].encode())


def run_scramp_client(
    secret: ScramSecret | None, password: str, *, user: str = "ann@example.org"
) -> tuple[ScramClient, Challenge | Success | object]:
    client = ScramClient(["SCRAM-SHA-256"], user, password)
    mechanism = ScramSha256Mechanism()
    assert mechanism.start(b64(client.get_client_first())) == NeedCredentials(user, "")
    server_first = mechanism.resume(secret)
    assert isinstance(server_first, Challenge)
    client.set_server_first(server_first.data.decode())
    return client, mechanism.step(b64(client.get_client_final()))


def test_scramp_client_authenticates_and_verifies_the_server() -> None:
    secret = derive_scram_secret("correct horse", salt=b"0123456789abcdef", iterations=4096)
    client, final = run_scramp_client(secret, "correct horse")
    assert isinstance(final, Success)
    assert final.authcid == "ann@example.org"
    assert final.additional_data is not None
    client.set_server_final(final.additional_data.decode())  # raises if v= is wrong


def test_non_ascii_password_is_saslprepped_like_the_client_does() -> None:
    # U+2168 ROMAN NUMERAL NINE becomes "IX" under NFKC on both sides.
    secret = derive_scram_secret("pa\u2168ss", salt=b"s" * 16, iterations=4096)
    assert secret == derive_scram_secret("paIXss", salt=b"s" * 16, iterations=4096)
    _, final = run_scramp_client(secret, "pa\u2168ss")
    assert isinstance(final, Success)


def test_wrong_password_gets_invalid_proof_then_535() -> None:
    secret = derive_scram_secret("right", salt=b"0123456789abcdef", iterations=4096)
    client, final = run_scramp_client(secret, "wrong")
    assert final == Challenge(b"e=invalid-proof")
    with pytest.raises(ScramException):
        client.set_server_final("e=invalid-proof")


def test_after_an_error_any_answer_fails_and_star_cancels() -> None:
    secret = derive_scram_secret("right", salt=b"0123456789abcdef", iterations=4096)
    for answer, expected in (("", AUTH_FAILED), ("*", CANCELLED)):
        mechanism = ScramSha256Mechanism()
        client = ScramClient(["SCRAM-SHA-256"], "ann", "wrong")
        mechanism.start(b64(client.get_client_first()))
        server_first = mechanism.resume(secret)
        assert isinstance(server_first, Challenge)
        client.set_server_first(server_first.data.decode())
        assert mechanism.step(b64(client.get_client_final())) == Challenge(b"e=invalid-proof")
        failure = mechanism.step(answer)
        assert failure == expected
        assert "invalid proof" in failure.log_reason or "invalid proof" in failure.reason


def test_unknown_user_without_decoy_fails_as_invalid_proof() -> None:
    _, final = run_scramp_client(None, "anything")
    assert final == Challenge(b"e=invalid-proof")


def test_y_flag_is_accepted_and_bound_in_c() -> None:
    mechanism = ScramSha256Mechanism(server_nonce="SRV")
    assert isinstance(mechanism.start(b64("y,,n=user,r=abc")), NeedCredentials)
    assert isinstance(mechanism.resume(PENCIL), Challenge)
    # c= must repeat "y,,": "n,," (biws) would be a downgrade and fails the binding check.
    assert mechanism.step(b64("c=biws,r=abcSRV,p=" + "A" * 43 + "=")) == Challenge(
        b"e=channel-bindings-dont-match"
    )


def test_p_flag_is_refused_with_the_rfc_error() -> None:
    mechanism = ScramSha256Mechanism()
    step = mechanism.start(b64("p=tls-server-end-point,,n=user,r=abc"))
    assert step == Challenge(b"e=channel-binding-not-supported")
    assert mechanism.step("") == AUTH_FAILED


def test_mandatory_extension_is_refused() -> None:
    step = ScramSha256Mechanism().start(b64("n,,m=ext,n=user,r=abc"))
    assert step == Challenge(b"e=extensions-not-supported")


def test_authzid_is_reported_for_the_caller_to_judge() -> None:
    mechanism = ScramSha256Mechanism()
    step = mechanism.start(b64("n,a=boss@example.org=2Cx=3Dy,n=user,r=abc"))
    assert step == NeedCredentials(authcid="user", authzid="boss@example.org,x=y")


def test_nonce_must_extend_the_client_nonce() -> None:
    mechanism = ScramSha256Mechanism(server_nonce="SRV")
    mechanism.start(b64("n,,n=user,r=abc"))
    mechanism.resume(PENCIL)
    assert mechanism.step(b64("c=biws,r=abcXXX,p=" + "A" * 43 + "=")) == Challenge(b"e=other-error")


@pytest.mark.parametrize(
    "client_first",
    [
        "n,,r=abc",  # no n=
        "n,,n=user",  # no r=
        "x,,n=user,r=abc",  # unknown flag
        "n,b=who,n=user,r=abc",  # authzid not a=
        "n,,n=us=3Xer,r=abc",  # bad saslname escape
        "n,,n=user,r=",  # empty nonce
        "n,,n=,r=abc",  # empty user
        "n,n=user,r=abc",  # GS2 header with one comma
    ],
)
def test_malformed_client_first_is_501(client_first: str) -> None:
    step = ScramSha256Mechanism().start(b64(client_first))
    assert step == MALFORMED
    assert (MALFORMED.code, MALFORMED.enhanced) == (501, "5.5.2")


def test_optional_extensions_after_the_nonce_are_ignored() -> None:
    # RFC 5802 5.1: only "m=" before the user name is mandatory-to-understand.
    step = ScramSha256Mechanism().start(b64("n,,n=user,r=abc,x=future"))
    assert step == NeedCredentials("user", "")


@pytest.mark.parametrize(
    "client_final",
    [
        "c=biws,r=abcSRV",  # no proof
        "r=abcSRV,c=biws,p=" + "A" * 43 + "=",  # out of order
        "c=biws,r=abcSRV,p=AAAA",  # proof too short
        "c=biws,r=abcSRV,p=not base64",
    ],
)
def test_malformed_client_final_is_501(client_final: str) -> None:
    mechanism = ScramSha256Mechanism(server_nonce="SRV")
    mechanism.start(b64("n,,n=user,r=abc"))
    mechanism.resume(PENCIL)
    assert mechanism.step(b64(client_final)) == MALFORMED


def test_bad_base64_and_cancel() -> None:
    assert ScramSha256Mechanism().start("%%%") == BAD_BASE64
    mechanism = ScramSha256Mechanism()
    mechanism.start(None)
    assert mechanism.step("*") == CANCELLED


def test_out_of_order_calls_are_our_bug() -> None:
    mechanism = ScramSha256Mechanism()
    with pytest.raises(SaslError):
        mechanism.resume(PENCIL)
    mechanism.start(b64("n,,n=user,r=abc"))
    with pytest.raises(SaslError):
        mechanism.step("")


def test_server_nonce_must_be_printable_without_comma() -> None:
    with pytest.raises(ValueError):
        ScramSha256Mechanism(server_nonce="a,b")


def test_random_server_nonces_differ() -> None:
    first, second = ScramSha256Mechanism(), ScramSha256Mechanism()
    first.start(b64("n,,n=user,r=abc"))
    second.start(b64("n,,n=user,r=abc"))
    assert first.resume(PENCIL) != second.resume(PENCIL)


def test_stored_form_round_trips_and_hides_keys() -> None:
    text = format_scram_secret(PENCIL)
    assert text.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    assert parse_scram_secret(text) == PENCIL
    assert encode_base64(PENCIL.stored_key) not in repr(PENCIL)
    for bad in ("", "SCRAM-SHA-1$4096:c2FsdA==$AA==:AA==", text.replace("$4096", "$x")):
        with pytest.raises(ValueError):
            parse_scram_secret(bad)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF), min_size=1))
def test_saslname_escaping_round_trips(name: str) -> None:
    escaped = name.replace("=", "=3D").replace(",", "=2C")
    assert decode_saslname(escaped) == name
