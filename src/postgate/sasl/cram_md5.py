"""sasl.cram_md5 — the CRAM-MD5 mechanism, server side (RFC 2195). Legacy; off by default.

SYNOPSIS
    secret = derive_cram_md5_secret("tanstaaftanstaaf")    # at set_password(cram_md5=True)
    mechanism = CramMd5Mechanism(cram_challenge("mx.example.org", nonce=..., timestamp=...))
    mechanism.start(None)   # Challenge(b"<1896.697170952@postoffice.reston.mci.net>")
    mechanism.step("dGltIGI5MTNhNjAy...")   # NeedCredentials(authcid="tim", authzid="")
    mechanism.resume(secret)                # Success(authzid="", authcid="tim")

DESCRIPTION
    The server sends a unique challenge in msg-id form; the client answers
    ``user SP hex(HMAC-MD5(password, challenge))`` in lower case (RFC 2195 2). The
    mechanism has no initial response (RFC 4954 4: one sent anyway is a 501).

SECURITY
    Offered only when the operator enables it. It protects the password on the wire
    but not at rest: the server must keep something that computes the HMAC. We keep
    Dovecot's "{CRAM-MD5}" form, the HMAC-MD5 chaining states after the key blocks
    (outer, then inner; see sasl.md5_state), never the password itself. That value is
    plaintext-equivalent for CRAM-MD5: whoever steals it can log in with CRAM-MD5 (not
    with the other mechanisms, which use argon2 and SCRAM keys). It is stored only for
    users whose password was set with ``cram_md5=True``. Prefer SCRAM-SHA-256.

STANDARDS
    RFC 2195 (CRAM-MD5), RFC 2104 (HMAC), RFC 1321 (MD5).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Final

from postgate.sasl.codec import decode_response, wrong_state
from postgate.sasl.md5_state import BLOCK_OCTETS, MD5_INITIAL_STATE, md5_compress, md5_resume
from postgate.sasl.model import (
    AUTH_FAILED,
    Challenge,
    CramMd5Secret,
    Failure,
    NeedCredentials,
    Resumption,
    SaslStep,
    Success,
)

DOVECOT_PREFIX = "{CRAM-MD5}"

MALFORMED = Failure(501, "5.5.2", "malformed CRAM-MD5 response")
NO_INITIAL_RESPONSE = Failure(501, "5.5.2", "CRAM-MD5 takes no initial response")

_RESPONSE = re.compile(r"(?P<user>[^\x00-\x1f]+) (?P<digest>[0-9a-f]{32})")


def derive_cram_md5_secret(password: str) -> CramMd5Secret:
    """RFC 2104 2: K is the password (hashed first when longer than a block), padded
    with zeros; the stored states follow K XOR opad and K XOR ipad."""
    key = password.encode("utf-8")
    if len(key) > BLOCK_OCTETS:
        key = hashlib.md5(key).digest()
    key = key.ljust(BLOCK_OCTETS, b"\0")
    return CramMd5Secret(
        outer=md5_compress(MD5_INITIAL_STATE, bytes(b ^ 0x5C for b in key)),
        inner=md5_compress(MD5_INITIAL_STATE, bytes(b ^ 0x36 for b in key)),
    )


def cram_md5_digest(secret: CramMd5Secret, challenge: bytes) -> bytes:
    """HMAC-MD5(password, challenge) finished from the stored states."""
    inner = md5_resume(secret.inner, processed=BLOCK_OCTETS, data=challenge)
    return md5_resume(secret.outer, processed=BLOCK_OCTETS, data=inner)


def format_dovecot(secret: CramMd5Secret) -> str:
    """Dovecot's password scheme text: "{CRAM-MD5}" + hex(outer state + inner state)."""
    return DOVECOT_PREFIX + (secret.outer + secret.inner).hex()


def parse_dovecot(text: str) -> CramMd5Secret:
    """The inverse of format_dovecot; ValueError when it is not that form."""
    if not text.startswith(DOVECOT_PREFIX):
        raise ValueError("not a {CRAM-MD5} value")
    raw = bytes.fromhex(text[len(DOVECOT_PREFIX) :])
    if len(raw) != 32:
        raise ValueError("a {CRAM-MD5} value holds 32 octets")
    return CramMd5Secret(outer=raw[:16], inner=raw[16:])


def cram_challenge(hostname: str, *, nonce: str | None = None, timestamp: int) -> bytes:
    """RFC 2195 2: a msg-id, "<random.timestamp@hostname>"; the random part makes
    every challenge unique, which is the whole protection against replay."""
    random_part = nonce if nonce is not None else str(secrets.randbits(63))
    return f"<{random_part}.{timestamp}@{hostname}>".encode("ascii")


class CramMd5Mechanism:
    name: Final = "CRAM-MD5"

    def __init__(self, challenge: bytes) -> None:
        self._challenge = challenge
        self._state = "new"  # new -> response -> lookup -> done
        self._digest = b""
        self._authcid = ""

    def start(self, initial_response: str | None) -> SaslStep:
        if self._state != "new":
            raise wrong_state(self.name, "start")
        if initial_response is not None:
            self._state = "done"
            return NO_INITIAL_RESPONSE
        self._state = "response"
        return Challenge(self._challenge)

    def step(self, line: str) -> SaslStep:
        if self._state != "response":
            raise wrong_state(self.name, "step")
        decoded = decode_response(line, initial=False)
        if isinstance(decoded, Failure):
            self._state = "done"
            return decoded
        try:
            match = _RESPONSE.fullmatch(decoded.decode("utf-8"))
        except UnicodeDecodeError:
            match = None
        if match is None:
            self._state = "done"
            return MALFORMED
        # RFC 2195 2: the user name ends at the last space; the digest is lower-case hex.
        self._authcid = match["user"]
        self._digest = bytes.fromhex(match["digest"])
        self._state = "lookup"
        return NeedCredentials(authcid=self._authcid, authzid="")

    def resume(self, secret: Resumption | None) -> SaslStep:
        if self._state != "lookup":
            raise wrong_state(self.name, "resume")
        self._state = "done"
        if secret is None:
            return Failure(*_auth_failed(), reason="no CRAM-MD5 secret for this user")
        if not isinstance(secret, CramMd5Secret):
            raise wrong_state(self.name, f"resume with {type(secret).__name__}")
        expected = cram_md5_digest(secret, self._challenge)
        if not hmac.compare_digest(expected, self._digest):
            return Failure(*_auth_failed(), reason="CRAM-MD5 digest does not match")
        return Success(authzid="", authcid=self._authcid)


def _auth_failed() -> tuple[int, str, str]:
    return AUTH_FAILED.code, AUTH_FAILED.enhanced, AUTH_FAILED.text
