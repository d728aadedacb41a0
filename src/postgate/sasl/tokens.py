"""sasl.tokens — bearer tokens checked as signed JWTs against an issuer's public keys.

SYNOPSIS
    validator = TokenValidator(jwks, audience="postgate", issuer="https://idp.example",
                               user_claim="email", scope="mail")
    check = validator.validate(token)    # TokenCheck(user="ann@example.org", reason="valid")
    check = validator.validate(forged)   # TokenCheck(user=None, reason="algorithm HS256 ...")

DESCRIPTION
    A token is accepted when its signature verifies with one of the configured public
    keys, ``aud`` names us, ``exp`` is present and in the future (with ``leeway``
    seconds of clock skew), and ``iss`` matches when an issuer is configured. The user
    is the ``email`` or ``sub`` claim; with ``email``, a token saying
    ``email_verified: false`` is refused. No I/O: keys come in as a JWKS document
    (see sasl.jwks for reading one from a file or URL).

SECURITY
    The algorithm is taken from the key, never from the token: each key allows only
    its own algorithm, and only RS256, ES256 and EdDSA keys are kept. Symmetric (oct,
    HS*) keys are dropped when the key set is read, so "alg": "none" and the classic
    forgery (an HS256 token whose HMAC key is the issuer's public key PEM) both fail
    on "algorithm not allowed" before any signature check.

DIAGNOSTICS
    TokenConfigError when the key set holds no usable key; ``skipped`` lists the keys
    that were dropped and why. ``validate`` never raises: the reason says what failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

ALLOWED_ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})
USER_CLAIMS = ("email", "sub")


class TokenConfigError(Exception):
    """The key set or the settings cannot validate anything; the message says why."""


@dataclass(frozen=True)
class TokenCheck:
    """``user`` when the token is valid, else None; ``reason`` for the log line."""

    user: str | None
    reason: str


@dataclass(frozen=True)
class _Key:
    key_id: str | None
    algorithm: str
    jwk: jwt.PyJWK


def _read_keys(jwks: Mapping[str, Any]) -> tuple[list[_Key], list[str]]:
    keys: list[_Key] = []
    skipped: list[str] = []
    entries = jwks.get("keys")
    if not isinstance(entries, list):
        raise TokenConfigError('a JWKS is a JSON object with a "keys" list')
    for index, entry in enumerate(entries):
        label = f"key {index}" + (f" ({entry.get('kid')})" if isinstance(entry, dict) else "")
        if not isinstance(entry, dict):
            skipped.append(f"{label}: not an object")
            continue
        if entry.get("use", "sig") != "sig":
            skipped.append(f"{label}: use is not sig")
            continue
        if entry.get("kty") == "oct":
            skipped.append(f"{label}: symmetric keys are never accepted")
            continue
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            skipped.append(f"{label}: {exc}")
            continue
        if jwk.algorithm_name not in ALLOWED_ALGORITHMS:
            skipped.append(f"{label}: algorithm {jwk.algorithm_name} not allowed")
            continue
        kid = entry.get("kid")
        keys.append(_Key(kid if isinstance(kid, str) else None, jwk.algorithm_name, jwk))
    return keys, skipped


class TokenValidator:
    def __init__(
        self,
        jwks: Mapping[str, Any],
        *,
        audience: str,
        issuer: str | None = None,
        user_claim: str = "email",
        scope: str | None = None,
        leeway: float = 30.0,
    ) -> None:
        if not audience:
            raise TokenConfigError("an audience is required (tokens for others must fail)")
        if user_claim not in USER_CLAIMS:
            raise TokenConfigError(f"user_claim must be one of {', '.join(USER_CLAIMS)}")
        self._keys, skipped = _read_keys(jwks)
        if not self._keys:
            detail = "; ".join(skipped) or "the key set is empty"
            raise TokenConfigError(f"no usable signing key (RS256, ES256, EdDSA): {detail}")
        self.skipped = tuple(skipped)
        self._audience = audience
        self._issuer = issuer
        self._user_claim = user_claim
        self._leeway = leeway
        self.scope = scope

    @property
    def key_ids(self) -> tuple[str | None, ...]:
        return tuple(key.key_id for key in self._keys)

    def validate(self, token: str) -> TokenCheck:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            return TokenCheck(None, f"not a JWT: {exc}")
        algorithm = header.get("alg")
        kid = header.get("kid")
        if algorithm not in ALLOWED_ALGORITHMS:
            return TokenCheck(None, f"algorithm {algorithm!r} not allowed")
        candidates = [
            key
            for key in self._keys
            if key.algorithm == algorithm and (kid is None or key.key_id == kid)
        ]
        if not candidates:
            return TokenCheck(None, f"no {algorithm} key with kid {kid!r}")
        required = ["exp", "aud"] + (["iss"] if self._issuer else [])
        last_error = "no key verified the signature"
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key.jwk,
                    # The key's own algorithm only: never what the token header asks for.
                    algorithms=[key.algorithm],
                    audience=self._audience,
                    issuer=self._issuer,
                    leeway=self._leeway,
                    options={"require": required},
                )
            except jwt.InvalidSignatureError as exc:
                last_error = str(exc)
                continue
            except jwt.PyJWTError as exc:
                return TokenCheck(None, f"{type(exc).__name__}: {exc}")
            return self._user_of(claims)
        return TokenCheck(None, last_error)

    def _user_of(self, claims: Mapping[str, Any]) -> TokenCheck:
        user = claims.get(self._user_claim)
        if not isinstance(user, str) or not user:
            return TokenCheck(None, f"token has no {self._user_claim} claim")
        if self._user_claim == "email" and claims.get("email_verified") is False:
            return TokenCheck(None, "token says email_verified is false")
        return TokenCheck(user, "valid")
