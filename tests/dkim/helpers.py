"""Shared pieces for the DKIM tests: zone-file TXT values, resolvers, messages."""

from __future__ import annotations

from pathlib import Path

from postgate.dkim.txt import split_txt
from postgate.dns.resolver import Resolver
from tests.fixtures.nsd import NsdServer

DATA = Path(__file__).resolve().parent.parent / "data" / "dkimpy"

MESSAGE = (
    b"From: Alice Example <alice@example.test>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: quarterly numbers\r\n"
    b"Date: Mon, 01 Jun 2026 10:00:00 +0000\r\n"
    b"Message-ID: <numbers-1@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"The numbers are good.\r\n"
    b"See you on Monday.\r\n"
)


def zone_txt(value: str) -> str:
    """A TXT value as zone-file character-strings of at most 255 octets."""
    return " ".join(f'"{piece}"' for piece in split_txt(value))


def fresh_resolver(server: NsdServer) -> Resolver:
    """A resolver that caches nothing, so a test sees each zone reload at once."""
    return Resolver(
        [server.nameserver], timeout=1.0, lifetime=2.0, max_ttl=0.0, max_negative_ttl=0.0
    )
