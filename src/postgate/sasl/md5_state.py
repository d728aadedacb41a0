"""sasl.md5_state — MD5 that can stop after whole blocks and resume (RFC 1321).

SYNOPSIS
    state = md5_compress(MD5_INITIAL_STATE, block64)     # 16-octet chaining state
    digest = md5_resume(state, processed=64, data=b"...")  # == md5(block64 + data)

DESCRIPTION
    CRAM-MD5 servers that do not keep passwords store the HMAC-MD5 state after the
    key blocks (RFC 2104) and finish the HMAC from there for each challenge, as
    Dovecot's CRAM-MD5 scheme does. hashlib cannot export or import an MD5 state, so
    the compression function is written out here. It is slow (pure Python) but runs
    over two or three blocks per login. A chaining state is the four 32-bit words
    A, B, C, D little-endian, which is also how the final digest is laid out.
"""

from __future__ import annotations

import math
import struct

MD5_INITIAL_STATE = struct.pack("<4I", 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
BLOCK_OCTETS = 64

# RFC 1321 3.4: T[i] = floor(2^32 * abs(sin(i + 1))) and the per-round shift amounts.
_T = tuple(int(abs(math.sin(i + 1)) * 2**32) & 0xFFFFFFFF for i in range(64))
_SHIFTS = (7, 12, 17, 22) * 4 + (5, 9, 14, 20) * 4 + (4, 11, 16, 23) * 4 + (6, 10, 15, 21) * 4
_MASK = 0xFFFFFFFF


def _rotate_left(value: int, amount: int) -> int:
    return ((value << amount) | (value >> (32 - amount))) & _MASK


def md5_compress(state: bytes, block: bytes) -> bytes:
    """Process one 64-octet block (RFC 1321 3.4) from a 16-octet chaining state."""
    if len(state) != 16 or len(block) != BLOCK_OCTETS:
        raise ValueError("MD5 state is 16 octets and a block 64")
    a0, b0, c0, d0 = struct.unpack("<4I", state)
    words = struct.unpack("<16I", block)
    a, b, c, d = a0, b0, c0, d0
    for i in range(64):
        if i < 16:
            f, g = (b & c) | (~b & d), i
        elif i < 32:
            f, g = (d & b) | (~d & c), (5 * i + 1) % 16
        elif i < 48:
            f, g = b ^ c ^ d, (3 * i + 5) % 16
        else:
            f, g = c ^ (b | (~d & _MASK)), (7 * i) % 16
        rotated = _rotate_left((a + f + _T[i] + words[g]) & _MASK, _SHIFTS[i])
        a, d, c, b = d, c, b, (b + rotated) & _MASK
    return struct.pack(
        "<4I", (a0 + a) & _MASK, (b0 + b) & _MASK, (c0 + c) & _MASK, (d0 + d) & _MASK
    )


def md5_resume(state: bytes, *, processed: int, data: bytes) -> bytes:
    """The MD5 digest of (the ``processed`` octets that led to ``state``) + ``data``.
    ``processed`` must be a whole number of blocks."""
    if processed % BLOCK_OCTETS:
        raise ValueError("a resumable MD5 state covers whole blocks only")
    total_bits = (processed + len(data)) * 8
    # RFC 1321 3.1-3.2: append 0x80, zeros to 56 mod 64, then the bit length (LE 64-bit).
    padding = b"\x80" + b"\0" * ((55 - len(data)) % BLOCK_OCTETS)
    message = data + padding + struct.pack("<Q", total_bits & 0xFFFFFFFFFFFFFFFF)
    for offset in range(0, len(message), BLOCK_OCTETS):
        state = md5_compress(state, message[offset : offset + BLOCK_OCTETS])
    return state
