"""sasl.oauth — OAUTHBEARER (RFC 7628) and XOAUTH2 (Google), server side.

SYNOPSIS
    mechanism = OAuthBearerMechanism()            # or XOAuth2Mechanism()
    mechanism.start("bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9...")
        # NeedToken(authzid="user@example.com", token="vF9dft4...")
    mechanism.resume(TokenOutcome(user="user@example.com"))   # Success(...)
    mechanism.resume(TokenOutcome(user=None, scope="mail"))   # Challenge(error JSON)
    mechanism.step("AQ==")                                    # Failure 535 5.7.8

DESCRIPTION
    Both carry an OAuth 2.0 bearer token (RFC 6750); the mechanism only parses it
    out and leaves validation to the caller (NeedToken / TokenOutcome), because the
    keys and the clock live outside sasl/.

    OAUTHBEARER: ``gs2-header %x01 *(key "=" value %x01) %x01`` with an ``auth`` key
    (RFC 7628 3.1). On a rejected token the server sends the error JSON in a
    challenge (RFC 7628 3.2.2) and the client must answer with a lone %x01
    (base64 "AQ=="); the exchange then fails with 535 5.7.8 (RFC 7628 3.2.3).

    XOAUTH2: ``user=<u> %x01 auth=Bearer <t> %x01 %x01``. On failure we behave as
    Gmail does: a challenge with ``{"status":"401","schemes":"bearer",...}``, the
    client answers with an empty line, then 535 5.7.8.

    The JSON also carries ``"schemes":"bearer"`` (as Gmail sends it) and the scope
    when the operator configured one.
"""

from __future__ import annotations

import json
import re

from postgate.sasl.codec import decode_response, wrong_state
from postgate.sasl.model import (
    AUTH_FAILED,
    CANCELLED,
    Challenge,
    Failure,
    NeedToken,
    Resumption,
    SaslStep,
    Success,
    TokenOutcome,
)
from postgate.sasl.scram import decode_saslname

MALFORMED_OAUTHBEARER = Failure(501, "5.5.2", "malformed OAUTHBEARER message")
MALFORMED_XOAUTH2 = Failure(501, "5.5.2", "malformed XOAUTH2 message")

# RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +(?P<token>[A-Za-z0-9\-._~+/]+=*)")
_KEY = re.compile(r"[A-Za-z]+")


def error_json(status: str, scope: str | None) -> bytes:
    """The RFC 7628 3.2.2 error object, compact, keys in a fixed order."""
    fields = {"status": status, "schemes": "bearer"}
    if scope:
        fields["scope"] = scope
    return json.dumps(fields, separators=(",", ":")).encode("utf-8")


def bearer_token(auth_value: str) -> str | None:
    """The token from an ``auth`` value "Bearer <token>" (scheme case-insensitive)."""
    match = _BEARER.fullmatch(auth_value)
    return match["token"] if match else None


def parse_oauthbearer(message: bytes) -> tuple[str, str] | None:
    """RFC 7628 3.1: (authzid, token) from a client-resp, or None when malformed."""
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        return None
    fields = text.split("\x01")
    # gs2-header, the key/value pairs, then the empty strings around the final kvsep.
    if len(fields) < 3 or fields[-1] != "" or fields[-2] != "":
        return None
    header = fields[0].split(",")
    # RFC 7628 3.1: channel binding is not part of this mechanism ("p=" is invalid).
    if len(header) != 3 or header[0] not in ("n", "y") or header[2] != "":
        return None
    authzid = ""
    if header[1]:
        decoded = decode_saslname(header[1][2:]) if header[1][:2] == "a=" else None
        if decoded is None:
            return None
        authzid = decoded
    pairs: dict[str, str] = {}
    for pair in fields[1:-2]:
        key, separator, value = pair.partition("=")
        if not separator or not _KEY.fullmatch(key) or key in pairs:
            return None
        pairs[key] = value
    token = bearer_token(pairs.get("auth", ""))
    return None if token is None else (authzid, token)


def parse_xoauth2(message: bytes) -> tuple[str, str] | None:
    """Google's format: (user, token), or None when malformed."""
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        return None
    fields = text.split("\x01")
    if len(fields) != 4 or fields[2:] != ["", ""]:
        return None
    if not fields[0].startswith("user=") or not fields[1].startswith("auth="):
        return None
    user = fields[0][len("user=") :]
    token = bearer_token(fields[1][len("auth=") :])
    if not user or token is None:
        return None
    return user, token


class _BearerMechanism:
    """The shared state machine: message -> NeedToken -> Success, or error exchange."""

    name: str
    _malformed: Failure
    _error_status: str

    def __init__(self) -> None:
        self._state = "new"  # new -> message -> verdict -> error -> done
        self._authzid = ""

    def _parse(self, message: bytes) -> tuple[str, str] | None:
        raise NotImplementedError

    def start(self, initial_response: str | None) -> SaslStep:
        if self._state != "new":
            raise wrong_state(self.name, "start")
        if initial_response is None:
            self._state = "message"
            return Challenge(b"")
        return self._message(initial_response, initial=True)

    def step(self, line: str) -> SaslStep:
        if self._state == "message":
            return self._message(line, initial=False)
        if self._state == "error":
            self._state = "done"
            if line == "*":
                return Failure(
                    CANCELLED.code, CANCELLED.enhanced, CANCELLED.text, reason="token rejected"
                )
            # RFC 7628 3.2.3: whatever the client answers, the exchange has failed.
            return Failure(
                AUTH_FAILED.code, AUTH_FAILED.enhanced, AUTH_FAILED.text, reason="token rejected"
            )
        raise wrong_state(self.name, "step")

    def resume(self, secret: Resumption | None) -> SaslStep:
        if self._state != "verdict" or not isinstance(secret, TokenOutcome):
            raise wrong_state(self.name, "resume")
        if secret.user is not None:
            self._state = "done"
            return Success(authzid=self._authzid, authcid=secret.user)
        self._state = "error"
        return Challenge(error_json(self._error_status, secret.scope))

    def _message(self, line: str, *, initial: bool) -> SaslStep:
        decoded = decode_response(line, initial=initial)
        if isinstance(decoded, Failure):
            self._state = "done"
            return decoded
        parsed = self._parse(decoded)
        if parsed is None:
            self._state = "done"
            return self._malformed
        self._authzid, token = parsed
        self._state = "verdict"
        return NeedToken(authzid=self._authzid, token=token)


class OAuthBearerMechanism(_BearerMechanism):
    name = "OAUTHBEARER"
    _malformed = MALFORMED_OAUTHBEARER
    _error_status = "invalid_token"  # RFC 6750 3.1

    def _parse(self, message: bytes) -> tuple[str, str] | None:
        return parse_oauthbearer(message)


class XOAuth2Mechanism(_BearerMechanism):
    name = "XOAUTH2"
    _malformed = MALFORMED_XOAUTH2
    _error_status = "401"  # what Gmail sends

    def _parse(self, message: bytes) -> tuple[str, str] | None:
        return parse_xoauth2(message)
