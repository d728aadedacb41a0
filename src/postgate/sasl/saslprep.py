"""sasl.saslprep — the SASLprep profile of stringprep (RFC 4013), for stored strings.

SYNOPSIS
    saslprep("I\\u00adX") -> "IX"           # soft hyphen mapped to nothing
    saslprep("\\u2168") -> "IX"             # NFKC
    saslprep("a\\x07b")                     # ValueError: prohibited character

DESCRIPTION
    SCRAM (RFC 5802 2.2) hashes Normalize(password), and clients apply SASLprep
    before they hash; the server must derive its keys from the same string or a
    non-ASCII password never matches. Strings are treated as "stored strings"
    (RFC 3454 7): unassigned code points are refused, not passed through.

    Written on the standard library's ``stringprep`` tables because the library
    we use in tests (scramp) keeps its copy private.
"""

from __future__ import annotations

import stringprep
import unicodedata

_PROHIBITED = (
    stringprep.in_table_c12,  # non-ASCII space (after mapping, none should remain)
    stringprep.in_table_c21_c22,  # control characters
    stringprep.in_table_c3,  # private use
    stringprep.in_table_c4,  # non-character code points
    stringprep.in_table_c5,  # surrogates
    stringprep.in_table_c6,  # inappropriate for plain text
    stringprep.in_table_c7,  # inappropriate for canonical representation
    stringprep.in_table_c8,  # change display properties or deprecated
    stringprep.in_table_c9,  # tagging characters
)


def saslprep(text: str) -> str:
    """RFC 4013 2: map, normalise (NFKC), refuse prohibited and unassigned characters,
    check bidi (RFC 3454 6). Raises ValueError naming the problem."""
    # RFC 4013 2.1: non-ASCII spaces become SPACE; "commonly mapped to nothing" go.
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    normalized = unicodedata.normalize("NFKC", mapped)
    for character in normalized:
        if any(table(character) for table in _PROHIBITED):
            raise ValueError(f"prohibited character U+{ord(character):04X}")
        if stringprep.in_table_a1(character):
            raise ValueError(f"unassigned code point U+{ord(character):04X}")
    # RFC 3454 6: a string with right-to-left characters must not mix in left-to-right
    # ones, and must start and end with a right-to-left character.
    if any(stringprep.in_table_d1(c) for c in normalized):
        if any(stringprep.in_table_d2(c) for c in normalized):
            raise ValueError("mixes right-to-left and left-to-right characters")
        if not (stringprep.in_table_d1(normalized[0]) and stringprep.in_table_d1(normalized[-1])):
            raise ValueError("right-to-left string must start and end right-to-left")
    return normalized
