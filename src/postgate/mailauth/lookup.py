"""mailauth.lookup — the DNS questions mailauth asks, as a protocol.

DESCRIPTION
    ``MailauthResolver`` is the subset of ``postgate.dns.Resolver`` that SPF, DMARC
    and ARC need (txt, addresses, mx, ptr with the same meaning and the same
    ``DnsError``), so the real resolver is passed in directly and tests may hand in
    a stub built from zone data. ``bounded`` puts a per-query timeout on one lookup
    and turns a timeout into a temporary ``DnsError``, so no check ever waits
    longer than its configuration allows.

SEE ALSO
    postgate.dns.resolver
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Protocol, TypeVar

from postgate.dns import DnsError, MxRecord

T = TypeVar("T")


class MailauthResolver(Protocol):
    async def txt(self, name: str) -> list[str]: ...

    async def addresses(self, host: str, *, prefer_ipv4: bool | None = None) -> list[str]: ...

    async def mx(self, domain: str) -> list[MxRecord] | None: ...

    async def ptr(self, address: str) -> list[str]: ...


async def bounded(lookup: Awaitable[T], timeout: float, what: str) -> T:
    """Await one lookup for at most ``timeout`` seconds (a timeout is temporary)."""
    try:
        # Not wait_for: it would run each lookup (mostly a cache hit) in a new Task.
        async with asyncio.timeout(timeout):
            return await lookup
    except TimeoutError as exc:
        raise DnsError(f"{what}: no answer within {timeout:g}s", temporary=True) from exc
