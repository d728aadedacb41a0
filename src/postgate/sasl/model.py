"""sasl.model — the values a SASL exchange produces, and the Mechanism protocol.

SYNOPSIS
    step = mechanism.start(initial_response)      # None, "=" or base64 text
    while isinstance(step, Challenge):
        send(334, base64(step.data)); step = mechanism.step(read_line())
    if isinstance(step, NeedCredentials):          # SCRAM, CRAM-MD5
        step = mechanism.resume(lookup(step.authcid))
    if isinstance(step, NeedToken):                # OAUTHBEARER, XOAUTH2
        step = mechanism.resume(TokenOutcome(user=validate(step.token)))
    Credentials -> caller verifies the password; Success -> mechanism verified;
    Failure -> caller sends the reply it carries.

DESCRIPTION
    Mechanisms are pure state machines: no sockets, no clock, no password hashing.
    A mechanism that can only judge a client with the stored secret in hand (SCRAM,
    RFC 5802) returns NeedCredentials and is continued with ``resume``; this keeps
    database I/O with the caller (sans-I/O, like h11). A bearer-token mechanism
    returns NeedToken the same way: the caller validates the token and resumes with a
    TokenOutcome, so the mechanism can shape its own error exchange (RFC 7628 3.2.2).

SEE ALSO
    sasl.plain, sasl.login, sasl.scram, sasl.cram_md5, sasl.oauth, RFC 4422, RFC 4954
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Challenge:
    """Send ``334 <base64(data)>`` and feed the client's next line to ``step``."""

    data: bytes


@dataclass(frozen=True)
class Credentials:
    """The client's claimed identity and password; the caller verifies them.

    ``authzid`` is "" when the client did not ask to act as someone else (RFC 4616 2).
    The password is kept out of ``repr`` so that a logged step cannot leak it."""

    authzid: str
    authcid: str
    password: str = field(repr=False)

    @property
    def identity(self) -> str:
        """The identity the client wants to act as: authzid, or authcid when empty."""
        return self.authzid or self.authcid

    @property
    def impersonates(self) -> bool:
        """True when an authzid differing from authcid was requested. The caller refuses
        that unless policy allows it; compare canonical forms if case may differ."""
        return self.authzid not in ("", self.authcid)


@dataclass(frozen=True)
class Success:
    """The mechanism verified the client itself (SCRAM). ``additional_data``, when not
    None, goes in the 235 reply or a final 334 challenge (RFC 4954 4)."""

    authzid: str
    authcid: str
    additional_data: bytes | None = None


@dataclass(frozen=True)
class Failure:
    """End the exchange with this reply, e.g. ``501 5.7.0 authentication cancelled``.
    ``reason``, when set, says more for the log than the client is told; it takes no
    part in comparisons, so a Failure still equals the reply it carries."""

    code: int
    enhanced: str
    text: str
    reason: str = field(default="", compare=False)

    @property
    def log_reason(self) -> str:
        return self.reason or self.text


@dataclass(frozen=True)
class NeedCredentials:
    """Look up the stored secret of ``authcid`` and call ``mechanism.resume`` with it
    (None when there is no such user: the mechanism then fails in constant shape)."""

    authcid: str
    authzid: str


@dataclass(frozen=True)
class ScramSecret:
    """What a server stores for SCRAM instead of the password (RFC 5802 3)."""

    salt: bytes
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)


@dataclass(frozen=True)
class CramMd5Secret:
    """HMAC-MD5 keyed with the password, stopped after the key blocks (RFC 2104): the
    MD5 chaining state after ``key XOR opad`` and after ``key XOR ipad``, 16 octets
    each. Not the password, but equivalent to it for CRAM-MD5 (see sasl.cram_md5)."""

    outer: bytes = field(repr=False)
    inner: bytes = field(repr=False)


@dataclass(frozen=True)
class NeedToken:
    """Validate the bearer ``token`` and call ``mechanism.resume(TokenOutcome(...))``.
    ``authzid`` is the user the client named ("" when none): the caller checks that
    it matches the token's user."""

    authzid: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class TokenOutcome:
    """The caller's verdict on a NeedToken step: the token's user when it is valid
    (and matches), None when it is not. ``scope`` is advertised in the RFC 7628
    3.2.2 error when set."""

    user: str | None
    scope: str | None = None


StoredSecret = ScramSecret | CramMd5Secret

# What ``resume`` accepts: a stored secret after NeedCredentials, a verdict after
# NeedToken.
Resumption = ScramSecret | CramMd5Secret | TokenOutcome

SaslStep = Challenge | Credentials | Success | Failure | NeedCredentials | NeedToken

# RFC 4954 4: replies a server sends during AUTH.
CANCELLED = Failure(501, "5.7.0", "authentication cancelled")
BAD_BASE64 = Failure(501, "5.5.2", "cannot decode base64 response")
AUTH_FAILED = Failure(535, "5.7.8", "Authentication credentials invalid")
UNKNOWN_MECHANISM = Failure(504, "5.5.4", "unrecognized authentication type")


class SaslError(Exception):
    """An expected SASL failure outside an exchange (unknown mechanism, a call in the
    wrong state). Carries the reply to send."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.code} {failure.enhanced} {failure.text}")
        self.failure = failure


class Mechanism(Protocol):
    """One server-side SASL exchange. Create one per AUTH command; it is single-use."""

    @property
    def name(self) -> str: ...

    def start(self, initial_response: str | None) -> SaslStep:
        """Begin with the raw text after the mechanism name: None (absent), "=" (empty,
        RFC 4954 4) or base64."""
        ...

    def step(self, line: str) -> SaslStep:
        """Continue with a client line (base64, or "*" to cancel) answering a Challenge."""
        ...

    def resume(self, secret: Resumption | None) -> SaslStep:
        """Continue after NeedCredentials with the stored secret (None if unknown), or
        after NeedToken with the caller's TokenOutcome."""
        ...
