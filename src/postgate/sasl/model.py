"""sasl.model — the values a SASL exchange produces, and the Mechanism protocol.

SYNOPSIS
    step = mechanism.start(initial_response)      # None, "=" or base64 text
    while isinstance(step, Challenge):
        send(334, base64(step.data)); step = mechanism.step(read_line())
    if isinstance(step, NeedCredentials):          # SCRAM-style mechanisms only
        step = mechanism.resume(lookup(step.authcid))
    Credentials -> caller verifies the password; Success -> mechanism verified;
    Failure -> caller sends the reply it carries.

DESCRIPTION
    Mechanisms are pure state machines: no sockets, no clock, no password hashing.
    A mechanism that can only judge a client with the stored secret in hand (SCRAM,
    RFC 5802) returns NeedCredentials and is continued with ``resume``; this keeps
    database I/O with the caller (sans-I/O, like h11).

SEE ALSO
    sasl.plain, sasl.login, RFC 4422, RFC 4954
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
    """End the exchange with this reply, e.g. ``501 5.7.0 authentication cancelled``."""

    code: int
    enhanced: str
    text: str


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


# Grows into a union as mechanisms need other kinds of stored secret.
StoredSecret = ScramSecret

SaslStep = Challenge | Credentials | Success | Failure | NeedCredentials

# RFC 4954 4: replies a server sends during AUTH.
CANCELLED = Failure(501, "5.7.0", "authentication cancelled")
BAD_BASE64 = Failure(501, "5.5.2", "cannot decode base64 response")
AUTH_FAILED = Failure(535, "5.7.8", "authentication credentials invalid")
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

    def resume(self, secret: StoredSecret | None) -> SaslStep:
        """Continue after NeedCredentials with the stored secret, or None if unknown."""
        ...
