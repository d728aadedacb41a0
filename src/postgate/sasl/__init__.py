"""sasl — SASL mechanisms as small pure state machines (RFC 4422, RFC 4954).

No I/O and no password hashing here: PLAIN and LOGIN return Credentials for the
caller to verify (accounts.UserStore.verify_async); SCRAM-SHA-256 and CRAM-MD5 ask
for the stored secret (NeedCredentials); OAUTHBEARER and XOAUTH2 ask for a token
verdict (NeedToken, see sasl.tokens). See sasl.model for the protocol and
auth_exchange for the driver the SMTP session uses. The exception is sasl.jwks,
which reads an issuer's keys at start-up.
"""

from postgate.sasl.codec import decode_base64_strict, encode_base64
from postgate.sasl.model import (
    AUTH_FAILED,
    BAD_BASE64,
    CANCELLED,
    UNKNOWN_MECHANISM,
    Challenge,
    CramMd5Secret,
    Credentials,
    Failure,
    Mechanism,
    NeedCredentials,
    NeedToken,
    Resumption,
    SaslError,
    SaslStep,
    ScramSecret,
    StoredSecret,
    Success,
    TokenOutcome,
)
from postgate.sasl.registry import MECHANISMS, TOKEN_MECHANISMS, make_mechanism

__all__ = [
    "AUTH_FAILED",
    "BAD_BASE64",
    "CANCELLED",
    "MECHANISMS",
    "TOKEN_MECHANISMS",
    "UNKNOWN_MECHANISM",
    "Challenge",
    "CramMd5Secret",
    "Credentials",
    "Failure",
    "Mechanism",
    "NeedCredentials",
    "NeedToken",
    "Resumption",
    "SaslError",
    "SaslStep",
    "ScramSecret",
    "StoredSecret",
    "Success",
    "TokenOutcome",
    "decode_base64_strict",
    "encode_base64",
    "make_mechanism",
]
