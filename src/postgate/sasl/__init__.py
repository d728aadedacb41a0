"""sasl — SASL mechanisms as small pure state machines (RFC 4422, RFC 4954).

No I/O and no password hashing here: PLAIN and LOGIN return Credentials for the
caller to verify (accounts.UserStore.verify_async). See sasl.model for the protocol.
"""

from postgate.sasl.codec import decode_base64_strict, encode_base64
from postgate.sasl.model import (
    AUTH_FAILED,
    BAD_BASE64,
    CANCELLED,
    UNKNOWN_MECHANISM,
    Challenge,
    Credentials,
    Failure,
    Mechanism,
    NeedCredentials,
    SaslError,
    SaslStep,
    ScramSecret,
    StoredSecret,
    Success,
)
from postgate.sasl.registry import MECHANISMS, make_mechanism

__all__ = [
    "AUTH_FAILED",
    "BAD_BASE64",
    "CANCELLED",
    "MECHANISMS",
    "UNKNOWN_MECHANISM",
    "Challenge",
    "Credentials",
    "Failure",
    "Mechanism",
    "NeedCredentials",
    "SaslError",
    "SaslStep",
    "ScramSecret",
    "StoredSecret",
    "Success",
    "decode_base64_strict",
    "encode_base64",
    "make_mechanism",
]
