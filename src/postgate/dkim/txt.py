"""dkim.txt — DKIM key records (RFC 6376 3.6.1) as text: build, split, parse, compare.

SYNOPSIS
    record = TxtRecord("s202612r._domainkey.example.com", "v=DKIM1; k=rsa; p=MIIB...")
    record.strings()         # ["v=DKIM1; k=rsa; p=MIIB...", "..."], each <= 255 octets
    record.zone_line()       # 's202612r._domainkey.example.com. IN TXT ( "v=DKIM1..." "..." )'
    tags = parse_tags("v=DKIM1; k=ed25519; p=...")       # {"v": "DKIM1", "k": ..., "p": ...}
    key_record_matches(published_text, "rsa", public_key_base64)

DESCRIPTION
    A TXT record holds one or more character-strings of at most 255 octets each
    (RFC 1035 3.3.14); a DKIM RSA-2048 key is longer than that, so the record is
    split and receivers join the strings (RFC 6376 3.6.2.2). ``TxtRecord`` does the
    split for zone files; ``dns.Resolver.txt`` already returns joined strings.

    ``key_record_matches`` decides whether what DNS publishes is the public half of
    our private key: same key type (k=, default rsa) and the same p= once folding
    white space is removed. An empty p= is a revoked key (RFC 6376 3.6.1) and never
    matches.

SEE ALSO
    dkim.keys, dnsrecords.records, RFC 6376 3.6, RFC 1035 3.3.14
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_STRING_OCTETS = 255

_WSP = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class TxtRecord:
    """One TXT record: absolute ``name`` (no trailing dot) and its joined ``value``."""

    name: str
    value: str

    def strings(self) -> list[str]:
        """The value cut into character-strings of at most 255 octets (RFC 1035 3.3.14)."""
        return split_txt(self.value)

    def zone_line(self, ttl: int | None = None) -> str:
        """A zone-file line: parenthesised when the value needs several strings."""
        quoted = [f'"{_escape(s)}"' for s in self.strings()]
        data = quoted[0] if len(quoted) == 1 else "( " + " ".join(quoted) + " )"
        ttl_text = f" {ttl}" if ttl is not None else ""
        return f"{self.name}.{ttl_text} IN TXT {data}"


def split_txt(value: str, limit: int = MAX_STRING_OCTETS) -> list[str]:
    """Split ``value`` into pieces of at most ``limit`` octets, never inside a UTF-8
    sequence. Our records are ASCII; the guard is for operator-supplied text."""
    pieces: list[str] = []
    current = ""
    for char in value:
        if len((current + char).encode("utf-8")) > limit:
            pieces.append(current)
            current = ""
        current += char
    pieces.append(current)
    return pieces


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def parse_tags(text: str) -> dict[str, str]:
    """A tag=value list (RFC 6376 3.2) as a dict with lower-case tag names.

    Raises ValueError for a malformed list or a duplicated tag (3.2: "Tags with
    duplicate names MUST NOT occur").
    """
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue  # a trailing ";" is allowed
        name, equals, value = part.partition("=")
        name = name.strip().lower()
        if not equals or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"malformed tag {part.strip()!r}")
        if name in tags:
            raise ValueError(f"duplicate tag {name!r}")
        tags[name] = value.strip()
    return tags


def key_record_value(algorithm: str, public_key: str) -> str:
    """The TXT value publishing a public key: ``algorithm`` is "rsa" or "ed25519"."""
    return f"v=DKIM1; k={algorithm}; p={public_key}"


def key_record_matches(published: str, algorithm: str, public_key: str) -> bool:
    """True when the published key record carries exactly our public key."""
    try:
        tags = parse_tags(published)
    except ValueError:
        return False
    if tags.get("v", "DKIM1") != "DKIM1":
        return False
    if tags.get("k", "rsa").lower() != algorithm:
        return False
    published_key = _WSP.sub("", tags.get("p", ""))
    return bool(published_key) and published_key == _WSP.sub("", public_key)
