"""bench.peers.dns — a private NSD serving the sender domain's SPF and DMARC records.

SYNOPSIS
    with sender_dns(workdir) as nsd:
        nsd.nameserver            # "127.0.0.1:PORT" for postgate's [delivery] dns_servers

DESCRIPTION
    postgate's inbound checks (SPF for MAIL FROM and HELO, DMARC for the From
    domain) then get real answers over real UDP, the same per-message work a
    production MX does; postgate caches the answers, as a local resolver would.
    Reuses tests.fixtures.nsd, which runs ``nsd -d`` with its own config on an
    ephemeral loopback port.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from bench.peers.names import DMARC_RECORD, SENDER_DOMAIN, SPF_RECORD
from tests.fixtures.nsd import NsdServer, running_nsd

ZONES = {
    # The parent zone answers NXDOMAIN for names it does not have (as "com." does for
    # "_dmarc.com."), which resolvers cache; without it, the DMARC lookup of the
    # public suffix (_dmarc.test) would be REFUSED, not cached, and asked per message.
    "test": [],
    SENDER_DOMAIN: [
        ("@", "TXT", SPF_RECORD),
        ("@", "A", "127.0.0.1"),
        ("_dmarc", "TXT", DMARC_RECORD),
        ("client", "TXT", SPF_RECORD),
        ("client", "A", "127.0.0.1"),
    ],
}


@contextlib.contextmanager
def sender_dns(workdir: Path) -> Iterator[NsdServer]:
    workdir.mkdir(parents=True, exist_ok=True)
    with running_nsd(workdir, ZONES) as server:
        yield server
