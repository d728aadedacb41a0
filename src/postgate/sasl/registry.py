"""sasl.registry — mechanism names to mechanism factories.

SYNOPSIS
    make_mechanism("plain")       # a fresh PlainMechanism; SaslError(504 5.5.4) if unknown
    MECHANISMS                    # ("PLAIN", "LOGIN"): what EHLO may advertise

DESCRIPTION
    Names are matched case-insensitively, as Postfix and Dovecot do, although clients
    send them in upper case (RFC 4422 3.1). Which of these a listener advertises is
    policy (e.g. nothing before TLS), not decided here.
"""

from __future__ import annotations

from postgate.sasl.login import LoginMechanism
from postgate.sasl.model import UNKNOWN_MECHANISM, Mechanism, SaslError
from postgate.sasl.plain import PlainMechanism

MECHANISMS: tuple[str, ...] = ("PLAIN", "LOGIN")


def make_mechanism(name: str) -> Mechanism:
    """A new single-use mechanism for one AUTH command."""
    upper = name.upper()
    if upper == "PLAIN":
        return PlainMechanism()
    if upper == "LOGIN":
        return LoginMechanism()
    raise SaslError(UNKNOWN_MECHANISM)
