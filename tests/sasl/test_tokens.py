"""Bearer tokens as JWTs: what passes, and every forgery and mistake that must not."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from postgate.sasl.tokens import TokenConfigError, TokenValidator
from tests.sasl.jwt_keys import (
    AUDIENCE,
    ISSUER,
    SigningKey,
    claims,
    ec_key,
    ed25519_key,
    hs256_forged_with_public_key,
    jwks,
    rsa_key,
    unsigned_token,
)


@pytest.fixture(scope="module")
def rsa() -> SigningKey:
    return rsa_key()


def validator(*keys: SigningKey, **options: Any) -> TokenValidator:
    settings: dict[str, Any] = {"audience": AUDIENCE, "issuer": ISSUER, **options}
    return TokenValidator(jwks(*keys), **settings)


def test_rs256_token_names_the_user(rsa: SigningKey) -> None:
    check = validator(rsa).validate(rsa.sign(claims()))
    assert (check.user, check.reason) == ("ann@example.org", "valid")


@pytest.mark.parametrize("make_key", [ec_key, ed25519_key], ids=["ES256", "EdDSA"])
def test_es256_and_eddsa_keys(make_key: Any) -> None:
    key = make_key()
    assert validator(key).validate(key.sign(claims())).user == "ann@example.org"


def test_sub_claim_can_be_the_user(rsa: SigningKey) -> None:
    assert validator(rsa, user_claim="sub").validate(rsa.sign(claims())).user == "user-123"


@pytest.mark.parametrize(
    ("overrides", "reason_part"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"exp": None}, "exp"),
        ({"aud": "someone-else"}, "audience"),
        ({"aud": None}, "aud"),
        ({"iss": "https://evil.example"}, "issuer"),
        ({"iss": None}, "iss"),
        ({"email": None}, "no email claim"),
        ({"email_verified": False}, "email_verified"),
    ],
)
def test_bad_claims_fail(rsa: SigningKey, overrides: dict[str, Any], reason_part: str) -> None:
    check = validator(rsa).validate(rsa.sign(claims(**overrides)))
    assert check.user is None
    assert reason_part in check.reason.lower()


def test_issuer_is_optional(rsa: SigningKey) -> None:
    token = rsa.sign(claims(iss=None))
    assert validator(rsa, issuer=None).validate(token).user == "ann@example.org"


def test_alg_none_fails(rsa: SigningKey) -> None:
    check = validator(rsa).validate(unsigned_token(claims()))
    assert check.user is None
    assert "not allowed" in check.reason


def test_hs256_forged_with_the_public_key_pem_fails(rsa: SigningKey) -> None:
    check = validator(rsa).validate(hs256_forged_with_public_key(rsa, claims()))
    assert check.user is None
    assert "'HS256' not allowed" in check.reason


def test_signature_by_another_key_fails(rsa: SigningKey) -> None:
    impostor = rsa_key(kid=rsa.kid)  # same kid, different key
    check = validator(rsa).validate(impostor.sign(claims()))
    assert check.user is None
    assert "signature" in check.reason.lower()


def test_tampered_payload_fails(rsa: SigningKey) -> None:
    header, _, signature = rsa.sign(claims()).split(".")
    other_payload = rsa.sign(claims(user="boss@example.org")).split(".")[1]
    assert validator(rsa).validate(f"{header}.{other_payload}.{signature}").user is None


def test_unknown_kid_and_garbage(rsa: SigningKey) -> None:
    assert "kid" in validator(rsa).validate(rsa.sign(claims(), kid="other")).reason
    assert validator(rsa).validate("vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==").user is None


def test_token_without_kid_is_tried_against_keys_of_its_algorithm(rsa: SigningKey) -> None:
    second = rsa_key("rsa-2")
    token = jwt_without_kid(second)
    assert validator(rsa, second).validate(token).user == "ann@example.org"


def jwt_without_kid(key: SigningKey) -> str:
    return jwt.encode(claims(), key.private, algorithm=key.algorithm)


def test_symmetric_and_unusable_keys_are_dropped(rsa: SigningKey) -> None:
    document = jwks(rsa)
    document["keys"] += [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
    ]
    checker = TokenValidator(document, audience=AUDIENCE)
    assert checker.key_ids == (rsa.kid,)
    assert len(checker.skipped) == 3
    assert any("symmetric" in line for line in checker.skipped)


def test_settings_that_could_accept_anything_are_refused(rsa: SigningKey) -> None:
    with pytest.raises(TokenConfigError):
        TokenValidator({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, audience=AUDIENCE)
    with pytest.raises(TokenConfigError):
        TokenValidator({"keys": []}, audience=AUDIENCE)
    with pytest.raises(TokenConfigError):
        TokenValidator(jwks(rsa), audience="")
    with pytest.raises(TokenConfigError):
        TokenValidator(jwks(rsa), audience=AUDIENCE, user_claim="name")
    with pytest.raises(TokenConfigError):
        TokenValidator({"no": "keys"}, audience=AUDIENCE)
