"""Strict base64 decoding of AUTH responses (RFC 4954 4, RFC 4648)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postgate.sasl import BAD_BASE64, CANCELLED, decode_base64_strict, encode_base64
from postgate.sasl.codec import decode_response


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", b""),
        ("YQ==", b"a"),
        ("YWI=", b"ab"),
        ("YWJj", b"abc"),
        ("dGVzdAB0ZXN0ADEyMzQ=", b"test\0test\x001234"),  # RFC 4954 4 example
    ],
)
def test_valid_base64_decodes(text: str, expected: bytes) -> None:
    assert decode_base64_strict(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "=",  # only meaningful as an initial response, handled by the caller
        "YQ",  # missing padding
        "YQ=",  # short padding
        "YR==",  # non-canonical trailing bits (RFC 4648 3.5)
        "YQ==YQ==",  # data after padding
        " YQ==",
        "YQ==\n",
        "Y Q==",
        "YQ==\r\n",
        "Y-_=",  # URL-safe alphabet is not base64
        "*",
        "ÿQ==",
    ],
)
def test_invalid_base64_is_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        decode_base64_strict(text)


@given(st.binary(max_size=300))
def test_round_trip(data: bytes) -> None:
    encoded = encode_base64(data)
    assert encoded == base64.b64encode(data).decode("ascii")
    assert decode_base64_strict(encoded) == data


@pytest.mark.parametrize(
    ("line", "initial", "expected"),
    [
        ("=", True, b""),  # RFC 4954 4: zero-length initial response
        ("=", False, BAD_BASE64),
        ("*", False, CANCELLED),  # RFC 4954 4: cancel
        ("*", True, BAD_BASE64),
        ("", False, b""),
        ("!!", False, BAD_BASE64),
    ],
)
def test_decode_response(line: str, initial: bool, expected: bytes | object) -> None:
    assert decode_response(line, initial=initial) == expected


def test_failure_codes_follow_rfc_4954() -> None:
    assert (CANCELLED.code, CANCELLED.enhanced) == (501, "5.7.0")
    assert (BAD_BASE64.code, BAD_BASE64.enhanced) == (501, "5.5.2")
