"""sasl.codec — strict base64 for AUTH lines (RFC 4954 4) and the shared state guard.

SYNOPSIS
    decode_base64_strict("AGJvYgBzZWNyZXQ=") -> b"\\0bob\\0secret"   # ValueError if not
    encode_base64(b"Username:") -> "VXNlcm5hbWU6"
    decode_response("=") -> b""        # initial-response "=" means empty (RFC 4954 4)

DESCRIPTION
    A response is either valid, canonical base64 or a 501 5.5.2. Being strict keeps
    two parsers (ours and a proxy's or a logger's) from disagreeing on the bytes.
"""

from __future__ import annotations

import base64
import binascii

from postgate.sasl.model import BAD_BASE64, CANCELLED, Failure, SaslError


def decode_base64_strict(text: str) -> bytes:
    """Decode RFC 4648 base64: standard alphabet, padding required, no whitespace, and
    canonical (unused trailing bits zero, RFC 4648 3.5). Raises ValueError."""
    if not text.isascii():
        raise ValueError("base64 must be ASCII")
    decoded = binascii.a2b_base64(text, strict_mode=True)
    if base64.b64encode(decoded).decode("ascii") != text:
        raise ValueError("non-canonical base64")
    return decoded


def encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_response(line: str, *, initial: bool) -> bytes | Failure:
    """Decode a client response; "*" cancels (RFC 4954 4) and "=" is an empty initial
    response. Returns the bytes or the Failure to end the exchange with."""
    if line == "*" and not initial:
        return CANCELLED
    if line == "=" and initial:
        return b""
    try:
        return decode_base64_strict(line)
    except ValueError:
        return BAD_BASE64


def wrong_state(mechanism: str, call: str) -> SaslError:
    """The caller drove the exchange out of order (a bug on our side, not the client's)."""
    return SaslError(Failure(503, "5.5.1", f"{mechanism}: {call} not expected now"))
