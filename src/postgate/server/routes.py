"""server.routes — which transport delivers a final address.

DESCRIPTION
    The router decides *what* an address is (a local mailbox or a remote address);
    this module maps that onto the transports built from the config: local mailboxes
    go to Maildir under ``delivery.maildir_root``, remote addresses to remote SMTP
    grouped by domain (or by the relay host when one is configured).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from postgate.accounts import UserStore
from postgate.config import Config
from postgate.delivery.base import Route, Transport
from postgate.delivery.maildir import MaildirTransport
from postgate.routing import LocalMailbox, Router


def mailbox_directory(maildir_root: Path, address: str) -> Path:
    """<maildir_root>/<domain>/<localpart>/ — the layout Dovecot's default expects."""
    local, _, domain = address.rpartition("@")
    return maildir_root / domain.lower() / local.lower()


def build_route_function(
    config: Config,
    router: Router,
    users: UserStore,
    remote: Transport | None = None,
) -> Callable[[str], Route]:
    root = config.delivery.maildir_root

    def mailbox_path(address: str) -> Path | None:
        return mailbox_directory(root, address) if users.exists(address) else None

    maildir = MaildirTransport(mailbox_path)

    def route(address: str) -> Route:
        destination = router.destination(address)
        if isinstance(destination, LocalMailbox):
            return Route(maildir, destination.address.lower())
        if remote is None:
            raise LookupError("no transport for remote addresses is configured")
        target = config.delivery.relay_host or destination.domain.lower()
        return Route(remote, target)

    return route
