"""sasl.registry — mechanism names to mechanism factories.

SYNOPSIS
    make_mechanism("plain")                       # a fresh PlainMechanism
    make_mechanism("CRAM-MD5", hostname="mx.example.org", timestamp=1700000000)
    make_mechanism("GSSAPI")                      # SaslError(504 5.5.4)
    MECHANISMS        # every mechanism implemented here, in preference order

DESCRIPTION
    Names are matched case-insensitively, as Postfix and Dovecot do, although clients
    send them in upper case (RFC 4422 3.1). Which of these a listener advertises is
    policy (configuration, nothing before TLS), not decided here. ``nonce`` fixes the
    random part of SCRAM's server nonce or CRAM-MD5's challenge (tests, RFC vectors);
    the clock is the caller's (``timestamp``), so this package reads none.
"""

from __future__ import annotations

from postgate.sasl.cram_md5 import CramMd5Mechanism, cram_challenge
from postgate.sasl.login import LoginMechanism
from postgate.sasl.model import UNKNOWN_MECHANISM, Mechanism, SaslError
from postgate.sasl.oauth import OAuthBearerMechanism, XOAuth2Mechanism
from postgate.sasl.plain import PlainMechanism
from postgate.sasl.scram import ScramSha256Mechanism

MECHANISMS: tuple[str, ...] = (
    "SCRAM-SHA-256",
    "PLAIN",
    "LOGIN",
    "OAUTHBEARER",
    "XOAUTH2",
    "CRAM-MD5",
)

# The mechanisms that carry bearer tokens: they need a TokenValidator.
TOKEN_MECHANISMS = frozenset({"OAUTHBEARER", "XOAUTH2"})


def make_mechanism(
    name: str, *, hostname: str = "localhost", nonce: str | None = None, timestamp: int = 0
) -> Mechanism:
    """A new single-use mechanism for one AUTH command."""
    upper = name.upper()
    if upper == "PLAIN":
        return PlainMechanism()
    if upper == "LOGIN":
        return LoginMechanism()
    if upper == "SCRAM-SHA-256":
        return ScramSha256Mechanism(server_nonce=nonce)
    if upper == "OAUTHBEARER":
        return OAuthBearerMechanism()
    if upper == "XOAUTH2":
        return XOAuth2Mechanism()
    if upper == "CRAM-MD5":
        return CramMd5Mechanism(cram_challenge(hostname, nonce=nonce, timestamp=timestamp))
    raise SaslError(UNKNOWN_MECHANISM)
