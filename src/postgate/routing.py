"""routing — the one address resolver, used at RCPT time and at delivery.

SYNOPSIS
    aliases = load_alias_file(Path("/etc/postgate/aliases"))
    router = Router(local_domains=["example.org"], aliases=aliases, catch_all={},
                    postmaster="admin@example.org", mailbox_exists=users.exists)
    router.check_recipient("Bob@Example.ORG", relay_allowed=False)   # RecipientCheck.ACCEPT
    router.expand("sales@example.org")       # ("ann@example.org", "bob@partner.test")
    router.destination("ann@example.org")    # LocalMailbox("ann@example.org")

DESCRIPTION
    Canonicalises addresses, expands aliases and decides between local delivery,
    remote delivery and "relay denied". No I/O besides the injected
    ``mailbox_exists`` lookup and ``load_alias_file``.

    An address is split at its LAST "@" (RFC 5321 4.1.2: the local part may be a
    quoted string holding "@"). Domains compare case-insensitively in their IDNA
    A-label form (RFC 5890). Local parts at our own domains compare
    case-insensitively (RFC 5321 2.4 lets the domain's owner decide; users expect
    it); local parts at other domains are passed on exactly as given.

SECURITY
    Address tricks never become relay: the destination is chosen by the domain
    after the last "@" only. A local part holding "%", "!" or "@"
    (``user%remote.test@ours``, ``"a@b"@ours``) is looked up as a literal local part
    and is never parsed as a route. Address literals (``user@[192.0.2.1]``) are never
    local domains. Alias keys must belong to local domains, so an alias file cannot
    open relay for a foreign domain.

POSTMASTER
    "postmaster" in any case at any local domain is always accepted, and so is the
    bare ``<Postmaster>`` (RFC 5321 4.5.1), read as postmaster at the first local
    domain. Routing order: an alias or mailbox for that exact address, else the
    configured ``postmaster``, else postmaster at the first local domain (alias or
    mailbox), else the local mailbox "postmaster@<domain>" itself, which delivery
    cannot resolve: configure ``postmaster``.

ALIASES
    Precedence for a local address: exact alias key, then mailbox, then the
    postmaster rule, then the domain catch-all (alias-file ``@domain`` entry first,
    then the configured ``catch_all``). Expansion is recursive, de-duplicated and
    bounded (``max_depth``, ``max_expansion``). An address that reappears in its own
    expansion chain is kept as a final address instead of being expanded again
    (Postfix virtual(5) behaviour), so ``a -> a, b`` keeps a copy in a's mailbox and
    a loop ``a -> b -> a`` ends at a.

DIAGNOSTICS
    RoutingError for alias files with bad lines (naming file:line), invalid
    configuration, malformed addresses given to expand/destination, and expansions
    exceeding the limits.

SEE ALSO
    accounts (mailbox_exists), policy (turns RecipientCheck into a reply), Postfix virtual(5)
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import idna

POSTMASTER = "postmaster"


class RoutingError(Exception):
    """An expected routing failure; the message names the address or file:line."""


# ---------------------------------------------------------------------------------------------
# Address canonicalisation (shared with accounts)


def canonical_domain(domain: str) -> str:
    """The comparable form of a domain: lower-case IDNA A-labels; address literals lower-cased.

    Raises RoutingError for an empty or non-IDNA-encodable domain."""
    if not domain:
        raise RoutingError("empty domain")
    if domain.startswith("["):
        # RFC 5321 4.1.3: an address literal; the "IPv6:" tag is case-insensitive.
        if not domain.endswith("]") or len(domain) < 3:
            raise RoutingError(f"malformed address literal {domain!r}")
        return domain.lower()
    if domain.isascii():
        # ASCII names (including existing "xn--" A-labels) are only case-folded: IDNA2008
        # rejects things like "_" that DNS and Postfix accept in host names.
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True).decode("ascii").lower()
    except idna.IDNAError as exc:
        raise RoutingError(f"invalid internationalised domain {domain!r}: {exc}") from exc


def split_address(address: str) -> tuple[str, str]:
    """Split at the LAST "@" into (local part, domain); a source route is dropped.

    Raises RoutingError when there is no "@" or either side is empty."""
    if address.startswith("@") and ":" in address:
        # RFC 5321 4.1.1.3 / appendix C: "@a,@b:user@c" source routes are to be ignored;
        # the final domain (after the last "@") is unchanged, so this cannot create relay.
        address = address.split(":", 1)[1]
    local, at, domain = address.rpartition("@")
    if not at:
        raise RoutingError(f"address {address!r} has no domain")
    if not local:
        raise RoutingError(f"address {address!r} has an empty local part")
    if not domain:
        raise RoutingError(f"address {address!r} has an empty domain")
    return local, domain


def literal_local_part(local: str) -> str:
    """Undo quoting: ``"a@b"`` -> ``a@b`` (RFC 5321 4.1.2: quoted and unquoted forms of
    the same string are the same local part). The result is only ever used as a lookup
    key, never re-parsed."""
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        inner = local[1:-1]
        out: list[str] = []
        escaped = False
        for char in inner:
            if escaped or char != "\\":
                out.append(char)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return local


def canonical_local_address(address: str) -> str:
    """The lookup key of an address at one of our domains: literal local part and domain
    both lower-cased, domain in A-label form."""
    local, domain = split_address(address)
    return f"{literal_local_part(local).lower()}@{canonical_domain(domain)}"


# ---------------------------------------------------------------------------------------------
# Alias table


@dataclass(frozen=True)
class AliasTable:
    """Alias key ("user@domain" or "@domain" for a domain catch-all) -> targets."""

    entries: Mapping[str, tuple[str, ...]]


def _alias_key(raw: str) -> str:
    if raw.startswith("@"):
        return "@" + canonical_domain(raw[1:])
    return canonical_local_address(raw)


def _alias_target(raw: str) -> str:
    local, domain = split_address(raw)
    return f"{local}@{canonical_domain(domain)}"


def parse_aliases(text: str, source: str = "<aliases>") -> AliasTable:
    """Parse Postfix virtual(5) syntax: ``key target, target ...``.

    Targets are separated by commas and/or whitespace. A line starting with whitespace
    continues the previous entry. Lines whose first non-blank character is "#" are
    comments; "#" elsewhere is data (it is legal in a local part), as in Postfix.
    Quoted local parts holding spaces or commas are not supported in this file."""
    entries: dict[str, tuple[str, ...]] = {}
    first_line: dict[str, int] = {}
    logical: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0].isspace():
            if not logical:
                raise RoutingError(f"{source}:{number}: continuation line without an entry")
            start, so_far = logical[-1]
            logical[-1] = (start, f"{so_far} {stripped}")
        else:
            logical.append((number, stripped))
    for number, entry in logical:
        fields = entry.replace(",", " ").split()
        key_text, target_texts = fields[0], fields[1:]
        try:
            key = _alias_key(key_text)
        except RoutingError as exc:
            raise RoutingError(f"{source}:{number}: bad key {key_text!r}: {exc}") from exc
        if not target_texts:
            raise RoutingError(f"{source}:{number}: {key_text!r} has no targets")
        if key in entries:
            raise RoutingError(
                f"{source}:{number}: duplicate key {key_text!r} (first at line {first_line[key]})"
            )
        targets: list[str] = []
        for target_text in target_texts:
            try:
                targets.append(_alias_target(target_text))
            except RoutingError as exc:
                raise RoutingError(f"{source}:{number}: bad target {target_text!r}: {exc}") from exc
        entries[key] = tuple(targets)
        first_line[key] = number
    return AliasTable(entries=MappingProxyType(entries))


def load_alias_file(path: Path) -> AliasTable:
    """Read and parse an alias file; errors name ``path:line``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RoutingError(f"{path}: cannot read alias file: {exc}") from exc
    return parse_aliases(text, str(path))


# ---------------------------------------------------------------------------------------------
# Router


class RecipientCheck(enum.Enum):
    """The RCPT-time verdict with the reply the policy layer should send."""

    ACCEPT = (250, "2.1.5", "recipient ok")
    UNKNOWN_USER = (550, "5.1.1", "no such user here")
    RELAY_DENIED = (550, "5.7.1", "relay access denied")  # RFC 5321 3.6.2: 550
    BAD_ADDRESS = (501, "5.1.3", "bad recipient address syntax")

    @property
    def code(self) -> int:
        return self.value[0]

    @property
    def enhanced(self) -> str:
        return self.value[1]

    @property
    def reason(self) -> str:
        return self.value[2]


@dataclass(frozen=True)
class LocalMailbox:
    """Deliver into the mailbox of this user of the UserStore (canonical address)."""

    address: str


@dataclass(frozen=True)
class RemoteAddress:
    """Deliver to the world; ``domain`` (A-label or address literal) picks the MX."""

    address: str
    domain: str


Destination = LocalMailbox | RemoteAddress


@dataclass(frozen=True)
class _Address:
    text: str  # canonical for local domains; local part as given otherwise
    local: str  # literal (unquoted, lower-cased) for local domains
    domain: str
    is_local: bool


class Router:
    """Resolve recipients against local domains, aliases and the mailbox lookup.

    ``mailbox_exists`` receives canonical addresses and is called on the event loop at
    RCPT time; UserStore.exists is an indexed SQLite read, fast enough for that."""

    def __init__(
        self,
        *,
        local_domains: Iterable[str],
        aliases: AliasTable,
        catch_all: Mapping[str, str],
        postmaster: str | None,
        mailbox_exists: Callable[[str], bool],
        max_depth: int = 20,
        max_expansion: int = 1000,
    ) -> None:
        # A tuple, not a set: the first local domain receives bare <Postmaster>.
        self._domains = tuple(dict.fromkeys(canonical_domain(d) for d in local_domains))
        self._domain_set = frozenset(self._domains)
        self._mailbox_exists = mailbox_exists
        self._postmaster: str | None = None
        self._max_depth = max_depth
        self._max_expansion = max_expansion
        self._aliases: dict[str, tuple[str, ...]] = {}
        for key, targets in aliases.entries.items():
            canonical_key = _alias_key(key)
            if canonical_key.rpartition("@")[2] not in self._domain_set:
                raise RoutingError(f"alias {key!r} is not at a local domain")
            self._aliases[canonical_key] = tuple(self._config_address(t) for t in targets)
        self._catch_all: dict[str, tuple[str, ...]] = {}
        for domain, target in catch_all.items():
            canonical = canonical_domain(domain)
            if canonical not in self._domain_set:
                raise RoutingError(f"catch_all domain {domain!r} is not a local domain")
            self._catch_all[canonical] = (self._config_address(target),)
        for key, targets in self._aliases.items():
            if key.startswith("@"):
                self._catch_all[key[1:]] = targets  # the alias file wins over config
        self._postmaster = self._config_address(postmaster) if postmaster else None

    def is_local_domain(self, domain: str) -> bool:
        try:
            return canonical_domain(domain) in self._domain_set
        except RoutingError:
            return False

    def check_recipient(self, address: str, *, relay_allowed: bool) -> RecipientCheck:
        parsed = self._parse(address)
        if parsed is None:
            return RecipientCheck.BAD_ADDRESS
        if not parsed.is_local:
            return RecipientCheck.ACCEPT if relay_allowed else RecipientCheck.RELAY_DENIED
        # Local recipients must exist even for authenticated clients: reject now, not bounce.
        if parsed.local == POSTMASTER:  # RFC 5321 4.5.1: MUST accept
            return RecipientCheck.ACCEPT
        if (
            parsed.text in self._aliases
            or self._mailbox_exists(parsed.text)
            or parsed.domain in self._catch_all
        ):
            return RecipientCheck.ACCEPT
        return RecipientCheck.UNKNOWN_USER

    def expand(self, address: str) -> tuple[str, ...]:
        parsed = self._parse(address)
        if parsed is None:
            raise RoutingError(f"cannot expand malformed address {address!r}")
        found: dict[str, None] = {}  # insertion-ordered set
        self._visit(parsed, (parsed.text,), found)
        return tuple(found)

    def destination(self, address: str) -> Destination:
        parsed = self._parse(address)
        if parsed is None:
            raise RoutingError(f"no destination for malformed address {address!r}")
        if parsed.is_local:
            return LocalMailbox(parsed.text)
        return RemoteAddress(parsed.text, parsed.domain)

    # -----------------------------------------------------------------------------------------

    def _visit(self, address: _Address, path: tuple[str, ...], found: dict[str, None]) -> None:
        if len(path) > self._max_depth:
            raise RoutingError(f"alias expansion of {path[0]!r} exceeds depth {self._max_depth}")
        targets = self._targets(address) if address.is_local else None
        if targets is None:
            self._emit(address.text, path[0], found)
            return
        for target in targets:
            parsed = self._parse(target)
            if parsed is None:  # validated at construction; kept for type safety
                raise RoutingError(f"malformed alias target {target!r}")
            if parsed.text in path:
                # Self-reference or loop: deliver to it, do not expand it again.
                self._emit(parsed.text, path[0], found)
            else:
                self._visit(parsed, (*path, parsed.text), found)

    def _emit(self, final: str, origin: str, found: dict[str, None]) -> None:
        found[final] = None
        if len(found) > self._max_expansion:
            raise RoutingError(
                f"alias expansion of {origin!r} exceeds {self._max_expansion} addresses"
            )

    def _targets(self, address: _Address) -> tuple[str, ...] | None:
        """Where a local address goes next, or None when it is final."""
        aliased = self._aliases.get(address.text)
        if aliased is not None:
            return aliased
        if self._mailbox_exists(address.text):
            return None
        if address.local == POSTMASTER:
            if self._postmaster is not None:
                return (self._postmaster,)
            if self._domains:
                return (f"{POSTMASTER}@{self._domains[0]}",)
            return None
        return self._catch_all.get(address.domain)

    def _parse(self, address: str) -> _Address | None:
        """None for syntax this router cannot route (no domain, bad IDNA, empty parts)."""
        if address.lower() == POSTMASTER:
            # RFC 5321 4.5.1: RCPT TO:<Postmaster> without a domain.
            if self._domains:
                address = f"{POSTMASTER}@{self._domains[0]}"
            elif self._postmaster is not None:
                address = self._postmaster
            else:
                return None
        try:
            local, domain = split_address(address)
            domain = canonical_domain(domain)
        except RoutingError:
            return None
        if domain in self._domain_set:
            literal = literal_local_part(local).lower()
            if not literal:
                return None
            return _Address(f"{literal}@{domain}", literal, domain, True)
        return _Address(f"{local}@{domain}", local, domain, False)

    def _config_address(self, address: str) -> str:
        parsed = None if address.lower() == POSTMASTER else self._parse(address)
        if parsed is None:
            raise RoutingError(f"invalid address {address!r} in routing configuration")
        return parsed.text
