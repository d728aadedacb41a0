"""server.routes — which transport delivers a final address.

DESCRIPTION
    The router decides *what* an address is (a local mailbox or a remote address);
    this module maps that onto the transports built from the config: local mailboxes
    go to Maildir under ``delivery.maildir_root``; remote addresses go to remote SMTP,
    by MX per recipient domain, or through a relay host (per sender domain when
    ``delivery.sender_relay_hosts`` names the sender's domain, else
    ``delivery.relay_host``). Remote transports keep connection pools, so they are
    built once per process (``RemoteTransports``) and survive config reloads.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from postgate.accounts import UserStore
from postgate.config import Config
from postgate.delivery.base import Route
from postgate.delivery.maildir import MaildirTransport
from postgate.delivery.remote import RelayHost, RemoteSmtpTransport, TlsMode, TlsPolicy
from postgate.dns.resolver import Resolver
from postgate.routing import LocalMailbox, Router


class RouteConfigError(Exception):
    """A delivery setting that cannot be used (unreadable password file...)."""


def mailbox_directory(maildir_root: Path, address: str) -> Path | None:
    """<maildir_root>/<domain>/<localpart>/ — the layout Dovecot's default expects —
    or None when the address cannot name a directory safely under the root (a local
    part with "/", "..", a leading dot): such a "mailbox" is never written."""
    local, _, domain = address.rpartition("@")
    local, domain = local.lower(), domain.lower()
    for part in (local, domain):
        if not part or "/" in part or "\0" in part or part.startswith(".") or ".." in part:
            return None
    path = maildir_root / domain / local
    # Belt and braces: whatever the parts were, the result must stay under the root.
    if os.path.commonpath([os.path.abspath(path), os.path.abspath(maildir_root)]) != (
        os.path.abspath(maildir_root)
    ):
        return None
    return path


def _relay_password(config: Config) -> str | None:
    path = config.delivery.relay_password_file
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError) as exc:
        raise RouteConfigError(f"delivery.relay_password_file: {path}: {exc}") from None


@dataclass
class RemoteTransports:
    """The MX transport and one transport per relay host, built once per process."""

    config: Config
    resolver: Resolver
    mx: RemoteSmtpTransport
    relays: dict[str, RemoteSmtpTransport] = field(default_factory=dict)

    @classmethod
    def build(cls, config: Config, resolver: Resolver) -> RemoteTransports:
        transports = cls(config, resolver, cls._transport(config, resolver, None))
        specs = [config.delivery.relay_host, *config.delivery.sender_relay_hosts.values()]
        password = _relay_password(config)
        for spec in specs:
            if spec is not None and spec not in transports.relays:
                credentials = {}
                if config.delivery.relay_username and password is not None:
                    credentials = {"username": config.delivery.relay_username, "password": password}
                relay = RelayHost.parse(spec, **credentials)
                transports.relays[spec] = cls._transport(config, resolver, relay)
        return transports

    @staticmethod
    def _transport(
        config: Config, resolver: Resolver, relay: RelayHost | None
    ) -> RemoteSmtpTransport:
        delivery = config.delivery
        policy = TlsPolicy(
            default=TlsMode(delivery.tls_policy),
            per_destination={d: TlsMode(m) for d, m in delivery.tls_policy_domains.items()},
            verify_context=ssl.create_default_context(),
        )
        return RemoteSmtpTransport(
            resolver,
            local_hostname=config.hostname,
            port=delivery.smtp_port,
            tls_policy=policy,
            relay_host=relay,
            max_connections_per_destination=delivery.max_connections_per_destination,
            idle_seconds=delivery.connection_reuse_time,
            connect_timeout=delivery.connect_timeout,
            command_timeout=delivery.command_timeout,
        )

    def for_sender(self, sender: str) -> tuple[RemoteSmtpTransport, str | None]:
        """The transport for mail from ``sender`` and the relay spec it uses, if any."""
        domain = sender.rpartition("@")[2].lower()
        spec = self.config.delivery.sender_relay_hosts.get(domain) if domain else None
        spec = spec or self.config.delivery.relay_host
        if spec is None:
            return self.mx, None
        return self.relays[spec], spec

    async def close(self) -> None:
        await self.mx.close()
        for transport in self.relays.values():
            await transport.close()


def build_route_function(
    config: Config,
    router: Router,
    users: UserStore,
    remote: RemoteTransports | None = None,
) -> Callable[[str, str], Route]:
    """route(recipient, envelope_sender) -> Route."""
    root = config.delivery.maildir_root

    def mailbox_path(address: str) -> Path | None:
        return mailbox_directory(root, address) if users.exists(address) else None

    maildir = MaildirTransport(mailbox_path, hostname=config.hostname)

    def route(address: str, sender: str = "") -> Route:
        destination = router.destination(address)
        if isinstance(destination, LocalMailbox):
            return Route(maildir, destination.address.lower())
        if remote is None:
            raise LookupError("no transport for remote addresses is configured")
        transport, relay = remote.for_sender(sender)
        # One destination per relay host (all its mail shares connections), else per
        # recipient domain (one MX lookup and connection pool per domain).
        return Route(transport, relay or destination.domain.lower())

    return route
