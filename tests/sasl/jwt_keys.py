"""Test signing keys, their JWKS, and tokens (good and forged) for the OAuth tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

AUDIENCE = "postgate-test"
ISSUER = "https://idp.example.test"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    private: Any
    jwk: dict[str, Any]

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(
            claims, self.private, algorithm=self.algorithm, headers={"kid": self.kid, **header}
        )


def _public_jwk(algorithm: type[jwt.algorithms.Algorithm], public: Any, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(public))
    return {**jwk, "kid": kid, "use": "sig"}


def rsa_key(kid: str = "rsa-1") -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = _public_jwk(jwt.algorithms.RSAAlgorithm, private.public_key(), kid)
    return SigningKey(kid, "RS256", private, jwk)


def ec_key(kid: str = "ec-1") -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = _public_jwk(jwt.algorithms.ECAlgorithm, private.public_key(), kid)
    return SigningKey(kid, "ES256", private, jwk)


def ed25519_key(kid: str = "ed-1") -> SigningKey:
    private = ed25519.Ed25519PrivateKey.generate()
    jwk = _public_jwk(jwt.algorithms.OKPAlgorithm, private.public_key(), kid)
    return SigningKey(kid, "EdDSA", private, jwk)


def jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.jwk for key in keys]}


def claims(user: str = "ann@example.org", **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-123",
        "email": user,
        "iat": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned_token(payload: dict[str, Any]) -> str:
    """alg "none": no signature at all."""
    header = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64url(json.dumps(payload).encode())}."


def hs256_forged_with_public_key(key: SigningKey, payload: dict[str, Any]) -> str:
    """The classic confusion attack: HMAC-SHA256 keyed with the issuer's public key PEM,
    which anyone can download. PyJWT refuses to make one, so it is built by hand."""
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    body = _b64url(json.dumps(payload).encode())
    signature = hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64url(signature)}"
