"""sasl.stored — what a user store keeps per mechanism, and how it is written down.

SYNOPSIS
    forms = password_forms("pencil", scram_iterations=4096, cram_md5=False)
    forms.scram_sha256   # "SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>" or None
    forms.cram_md5       # "{CRAM-MD5}<hex>" when asked for, else None
    read_scram(text) -> ScramSecret | None;  read_cram_md5(text) -> CramMd5Secret | None
    decoy_scram_secret(key, "nobody@example.org", iterations=4096)

DESCRIPTION
    Text forms other software already uses, so an operator can read and move them:
    PostgreSQL's SCRAM-SHA-256 verifier and Dovecot's {CRAM-MD5} scheme. Pure
    functions; the store (accounts.UserStore) decides when to call them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from postgate.sasl.codec import decode_base64_strict, encode_base64
from postgate.sasl.cram_md5 import derive_cram_md5_secret, format_dovecot, parse_dovecot
from postgate.sasl.model import CramMd5Secret, ScramSecret
from postgate.sasl.scram import SALT_OCTETS, derive_scram_secret

_KEY_OCTETS = 32


@dataclass(frozen=True)
class StoredForms:
    """The per-mechanism values derived from one password (None: not stored)."""

    scram_sha256: str | None = field(repr=False)
    cram_md5: str | None = field(repr=False)


def password_forms(password: str, *, scram_iterations: int, cram_md5: bool) -> StoredForms:
    """A fresh random salt each time. No SCRAM value when SASLprep refuses the password
    (RFC 5802 2.2: such a password cannot be normalised, so no client could match)."""
    try:
        scram: str | None = format_scram_secret(
            derive_scram_secret(
                password, salt=secrets.token_bytes(SALT_OCTETS), iterations=scram_iterations
            )
        )
    except ValueError:
        scram = None
    cram = format_dovecot(derive_cram_md5_secret(password)) if cram_md5 else None
    return StoredForms(scram_sha256=scram, cram_md5=cram)


def read_scram(text: str | None) -> ScramSecret | None:
    """A stored SCRAM value, or None when absent or unreadable."""
    if text is None:
        return None
    try:
        return parse_scram_secret(text)
    except ValueError:
        return None


def read_cram_md5(text: str | None) -> CramMd5Secret | None:
    """A stored {CRAM-MD5} value, or None when absent or unreadable."""
    if text is None:
        return None
    try:
        return parse_dovecot(text)
    except ValueError:
        return None


def decoy_scram_secret(key: bytes, name: str, *, iterations: int) -> ScramSecret:
    """For a name with no secret: the salt is HMAC(key, name), the same on every try, so
    a changing salt cannot tell an attacker the user is unknown; the keys are random,
    so no proof matches."""
    salt = hmac.new(key, b"scram-decoy-salt\0" + name.lower().encode("utf-8"), hashlib.sha256)
    return ScramSecret(
        salt=salt.digest()[:SALT_OCTETS],
        iterations=iterations,
        stored_key=secrets.token_bytes(_KEY_OCTETS),
        server_key=secrets.token_bytes(_KEY_OCTETS),
    )


def format_scram_secret(secret: ScramSecret) -> str:
    """The stored form PostgreSQL uses: "SCRAM-SHA-256$<i>:<salt>$<StoredKey>:<ServerKey>"."""
    return (
        f"SCRAM-SHA-256${secret.iterations}:{encode_base64(secret.salt)}"
        f"${encode_base64(secret.stored_key)}:{encode_base64(secret.server_key)}"
    )


def parse_scram_secret(text: str) -> ScramSecret:
    """The inverse of format_scram_secret; ValueError when it is not that form."""
    try:
        scheme, parameters, keys = text.split("$")
        iterations, salt = parameters.split(":")
        stored_key, server_key = keys.split(":")
        secret = ScramSecret(
            salt=decode_base64_strict(salt),
            iterations=int(iterations),
            stored_key=decode_base64_strict(stored_key),
            server_key=decode_base64_strict(server_key),
        )
    except ValueError as exc:
        raise ValueError(f"not a SCRAM-SHA-256 secret: {exc}") from None
    if scheme != "SCRAM-SHA-256" or {len(secret.stored_key), len(secret.server_key)} != {
        _KEY_OCTETS
    }:
        raise ValueError("not a SCRAM-SHA-256 secret")
    return secret
