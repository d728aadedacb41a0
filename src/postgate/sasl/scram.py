"""sasl.scram — SCRAM-SHA-256, server side (RFC 5802, RFC 7677), without channel binding.

SYNOPSIS
    secret = derive_scram_secret("pencil", salt=salt, iterations=4096)   # at set_password
    mechanism = ScramSha256Mechanism(server_nonce=None)   # random nonce unless given
    mechanism.start("biwsbj11c2VyLHI9...")  # NeedCredentials(authcid="user", authzid="")
    mechanism.resume(secret)                # Challenge(b"r=...,s=...,i=4096")
    mechanism.step("Yz1iaXdzLHI9...")       # Success(..., additional_data=b"v=...")

DESCRIPTION
    The exchange is client-first, server-first, client-final, server-final. After
    client-first the mechanism asks for the user's stored secret (NeedCredentials) so
    the database stays with the caller. The server-final ``v=`` goes back in Success
    and the caller sends it as a 334 challenge; the client answers with an empty line
    and then gets 235 (RFC 4954 4: SMTP has no additional data on success).

    Errors the RFC names (RFC 5802 7: channel-binding-not-supported, invalid-proof,
    extensions-not-supported, channel-bindings-dont-match, other-error) are sent as a
    server-final ``e=`` in a 334 challenge; whatever the client answers, the exchange
    then fails (535 5.7.8, or 501 5.7.0 for "*"). Syntax errors are 501 5.5.2 at once.

SECURITY
    The server keeps only salt, iteration count, StoredKey and ServerKey. For an
    unknown user the caller passes a decoy secret (accounts.UserStore.scram_decoy:
    a salt that is stable per name), so server-first looks the same whether or not
    the user exists, and the proof fails as "invalid-proof", never "unknown-user".
    Channel binding: ``n`` and ``y`` are accepted (we offer no -PLUS variant, so a
    client saying "y" is not being downgraded); ``p=`` is refused.

STANDARDS
    RFC 5802 (SCRAM), RFC 7677 (SCRAM-SHA-256), RFC 5801 (GS2 header), RFC 4013.

WHY NOT SCRAMP
    scramp's server calls a synchronous ``auth_fn`` inside ``set_client_first``, which
    would put the user lookup (I/O) inside the mechanism, and it refuses any authzid
    in the GS2 header, which the impersonation rule needs. The protocol is small, so
    it is written here with hashlib and hmac; tests run scramp's client against it.

BUGS
    The user name is not SASLprep'd (accounts canonicalise it instead); the password
    is, when the secret is derived.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

from postgate.sasl.codec import decode_base64_strict, decode_response, encode_base64, wrong_state
from postgate.sasl.model import (
    AUTH_FAILED,
    CANCELLED,
    Challenge,
    Failure,
    NeedCredentials,
    Resumption,
    SaslStep,
    ScramSecret,
    Success,
)
from postgate.sasl.saslprep import saslprep

# RFC 7677 4: "the iteration count ... SHOULD be at least 4096".
MINIMUM_ITERATIONS = 4096
SALT_OCTETS = 16
_KEY_OCTETS = 32  # SHA-256 output

MALFORMED = Failure(501, "5.5.2", "malformed SCRAM message")


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def derive_scram_secret(password: str, *, salt: bytes, iterations: int) -> ScramSecret:
    """RFC 5802 3: SaltedPassword = Hi(Normalize(password), salt, i); the server keeps
    StoredKey = H(HMAC(SaltedPassword, "Client Key")) and ServerKey. Raises ValueError
    when SASLprep refuses the password (such a password cannot be used with SCRAM)."""
    if iterations < 1:
        raise ValueError("iteration count must be positive")
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    return ScramSecret(
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.sha256(client_key).digest(),
        server_key=_hmac(salted, b"Server Key"),
    )


def random_decoy_secret() -> ScramSecret:
    """A secret no proof can match, for an unknown user when the caller has no stable
    decoy (the salt then changes per attempt, which reveals the user is unknown)."""
    return ScramSecret(
        salt=secrets.token_bytes(SALT_OCTETS),
        iterations=MINIMUM_ITERATIONS,
        stored_key=secrets.token_bytes(_KEY_OCTETS),
        server_key=secrets.token_bytes(_KEY_OCTETS),
    )


def decode_saslname(text: str) -> str | None:
    """RFC 5802 5.1: "=2C" is ",", "=3D" is "=", any other "=" is invalid."""
    out: list[str] = []
    index = 0
    while index < len(text):
        if text[index] == "=":
            escape = text[index : index + 3]
            if escape == "=2C":
                out.append(",")
            elif escape == "=3D":
                out.append("=")
            else:
                return None
            index += 3
        else:
            out.append(text[index])
            index += 1
    return "".join(out) or None


def _is_nonce(text: str) -> bool:
    # RFC 5802 7: printable = %x21-2B / %x2D-7E (visible ASCII except ",").
    return bool(text) and all(0x21 <= ord(c) <= 0x7E and c != "," for c in text)


def _server_error(value: str, reason: str) -> tuple[Challenge, Failure]:
    return Challenge(f"e={value}".encode("ascii")), Failure(
        AUTH_FAILED.code, AUTH_FAILED.enhanced, AUTH_FAILED.text, reason=f"SCRAM {reason}"
    )


class ScramSha256Mechanism:
    name: Final = "SCRAM-SHA-256"

    def __init__(self, *, server_nonce: str | None = None) -> None:
        # RFC 5802 5.1: the nonce must be unique per exchange; injectable for vectors.
        self._server_nonce = server_nonce or secrets.token_urlsafe(18)
        if not _is_nonce(self._server_nonce):
            raise ValueError("server nonce must be printable ASCII without ','")
        self.credentials_rejected = False
        self._state = "new"  # new -> first -> lookup -> final -> error|done
        self._gs2_header = ""
        self._client_first_bare = ""
        self._client_nonce = ""
        self._authcid = ""
        self._authzid = ""
        self._server_first = ""
        self._secret: ScramSecret | None = None
        self._pending_failure: Failure | None = None

    def start(self, initial_response: str | None) -> SaslStep:
        if self._state != "new":
            raise wrong_state(self.name, "start")
        if initial_response is None:
            # RFC 4954 4 / RFC 5802 5: the client speaks first; ask with an empty challenge.
            self._state = "first"
            return Challenge(b"")
        return self._client_first(initial_response, initial=True)

    def step(self, line: str) -> SaslStep:
        if self._state == "first":
            return self._client_first(line, initial=False)
        if self._state == "final":
            return self._client_final(line)
        if self._state == "error":
            self._state = "done"
            assert self._pending_failure is not None
            if line == "*":
                reason = f"cancelled after {self._pending_failure.reason}"
                return Failure(CANCELLED.code, CANCELLED.enhanced, CANCELLED.text, reason=reason)
            return self._pending_failure
        raise wrong_state(self.name, "step")

    def resume(self, secret: Resumption | None) -> SaslStep:
        if self._state != "lookup":
            raise wrong_state(self.name, "resume")
        if secret is None:
            secret = random_decoy_secret()
        if not isinstance(secret, ScramSecret):
            raise wrong_state(self.name, f"resume with {type(secret).__name__}")
        self._secret = secret
        self._server_first = (
            f"r={self._client_nonce}{self._server_nonce},"
            f"s={encode_base64(secret.salt)},i={secret.iterations}"
        )
        self._state = "final"
        return Challenge(self._server_first.encode("ascii"))

    # -- client-first-message ----------------------------------------------------------

    def _client_first(self, line: str, *, initial: bool) -> SaslStep:
        decoded = decode_response(line, initial=initial)
        if isinstance(decoded, Failure):
            self._state = "done"
            return decoded
        try:
            message = decoded.decode("utf-8")
        except UnicodeDecodeError:
            return self._malformed("client-first is not UTF-8")
        # RFC 5802 7: client-first-message = gs2-header client-first-message-bare,
        # gs2-header = gs2-cbind-flag "," [ authzid ] ",".
        parts = message.split(",", 2)
        if len(parts) != 3:
            return self._malformed("client-first has no GS2 header")
        flag, authzid_field, bare = parts
        if flag.startswith("p="):
            return self._fail_with_error(
                "channel-binding-not-supported", "client asked for channel binding (p=)"
            )
        if flag not in ("n", "y"):
            return self._malformed(f"unknown GS2 channel-binding flag {flag[:8]!r}")
        if authzid_field:
            authzid = decode_saslname(authzid_field[2:]) if authzid_field[:2] == "a=" else None
            if authzid is None:
                return self._malformed("bad authzid in GS2 header")
            self._authzid = authzid
        attributes = bare.split(",")
        if attributes[0].startswith("m="):
            return self._fail_with_error("extensions-not-supported", "mandatory extension m=")
        if len(attributes) < 2 or attributes[0][:2] != "n=" or attributes[1][:2] != "r=":
            return self._malformed("client-first lacks n= and r=")
        username = decode_saslname(attributes[0][2:])
        if username is None or "\0" in username:
            return self._malformed("bad user name")
        if not _is_nonce(attributes[1][2:]):
            return self._malformed("bad client nonce")
        self._gs2_header = f"{flag},{authzid_field},"
        self._client_first_bare = bare
        self._client_nonce = attributes[1][2:]
        self._authcid = username
        self._state = "lookup"
        return NeedCredentials(authcid=username, authzid=self._authzid)

    # -- client-final-message ----------------------------------------------------------

    def _client_final(self, line: str) -> SaslStep:
        decoded = decode_response(line, initial=False)
        if isinstance(decoded, Failure):
            self._state = "done"
            return decoded
        try:
            message = decoded.decode("ascii")
        except UnicodeDecodeError:
            return self._malformed("client-final is not ASCII")
        # RFC 5802 7: client-final-message = client-final-message-without-proof "," proof,
        # and the proof is always the last attribute.
        without_proof, separator, proof_text = message.rpartition(",p=")
        attributes = without_proof.split(",")
        if not separator or len(attributes) < 2:
            return self._malformed("client-final lacks c=, r= or p=")
        channel_binding, nonce = attributes[0], attributes[1]
        try:
            proof = decode_base64_strict(proof_text)
            binding = decode_base64_strict(channel_binding[2:])
        except ValueError:
            return self._malformed("bad base64 in client-final")
        if channel_binding[:2] != "c=" or nonce[:2] != "r=" or len(proof) != _KEY_OCTETS:
            return self._malformed("client-final attributes out of order or wrong size")
        # RFC 5802 6: for "n" and "y" the cbind-input is the GS2 header alone.
        if binding != self._gs2_header.encode("utf-8"):
            return self._fail_with_error(
                "channel-bindings-dont-match", "c= does not repeat the GS2 header"
            )
        if nonce[2:] != self._client_nonce + self._server_nonce:
            return self._fail_with_error("other-error", "nonce does not match")
        assert self._secret is not None
        auth_message = ",".join((self._client_first_bare, self._server_first, without_proof))
        auth_message_bytes = auth_message.encode("utf-8")
        client_signature = _hmac(self._secret.stored_key, auth_message_bytes)
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), self._secret.stored_key):
            return self._fail_with_error("invalid-proof", "invalid proof (wrong password?)")
        server_signature = _hmac(self._secret.server_key, auth_message_bytes)
        self._state = "done"
        return Success(
            authzid=self._authzid,
            authcid=self._authcid,
            additional_data=b"v=" + encode_base64(server_signature).encode("ascii"),
        )

    # -- failures ----------------------------------------------------------------------

    def _malformed(self, reason: str) -> Failure:
        self._state = "done"
        return Failure(MALFORMED.code, MALFORMED.enhanced, MALFORMED.text, reason=reason)

    def _fail_with_error(self, value: str, reason: str) -> Challenge:
        if value == "invalid-proof":
            # The guess is judged wrong now, before the client answers the error: a
            # lockout must count it even if the client walks away (or sends "*").
            self.credentials_rejected = True
        challenge, self._pending_failure = _server_error(value, reason)
        self._state = "error"
        return challenge
