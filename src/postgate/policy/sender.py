"""policy.sender — an authenticated user may send only as addresses that are theirs.

SYNOPSIS
    policy = SenderPolicy(SenderRules(owners={"ann@example.org": ("@example.net",)}), router)
    policy.envelope_sender_allowed("ann@example.org", "sales@example.org")    # MAIL FROM
    policy.header_from_allowed("ann@example.org", from_header_addresses(message))  # end of DATA

DESCRIPTION
    Postfix's reject_sender_login_mismatch, for MAIL FROM and for the From: header.
    A user owns:

    * their own address;
    * every address whose alias expansion (``Router.expand``) delivers to them, i.e.
      their aliases, including lists they are on and a catch-all that lands with them
      ("you may send as what you receive");
    * every address at a domain listed for them as ``"@example.com"``;
    * every address listed for them.

    Domains compare case-insensitively in A-label form. Local parts compare as the
    router does: case-insensitively at our local domains, exactly elsewhere (RFC 5321
    2.4: only the domain's owner may fold case).

NULL SENDER
    ``MAIL FROM:<>`` is allowed for authenticated users. Mail clients legitimately submit
    with a null reverse-path: message disposition notifications MUST use one (RFC 8098
    2), and so SHOULD automatic replies (RFC 3834 3.3). RFC 6409 6.1 lets the MSA refuse
    senders without submission rights; a null path claims no address, so there is none
    to lack. The From: check still applies to such messages, and the session logs the
    authenticated user.

FROM HEADER
    Every mailbox in every From: field must be owned (RFC 5322 3.6.2 allows several
    mailboxes; several From: fields are invalid, but each is checked because receivers
    differ in which one they show). A message without From: claims nothing and passes;
    a From: field that does not parse fails, as do addresses whose syntax we cannot
    read. Display names are not checked.

REPLY
    A refusal is ``553 5.7.1 Sender address rejected: not owned by user <u>``, both at
    MAIL FROM and at the end of DATA for the From: header. RFC 5321 4.2.3 defines 553 as
    "mailbox name not allowed" and lists it for MAIL, and 5.7.1 (RFC 3463: delivery not
    authorized) says it is policy; Postfix uses the same pair for
    reject_sender_login_mismatch. RFC 5321 4.3.2 does not list 553 after DATA, where
    550 5.7.1 would be the conservative choice; ``sender_rejected_verdict`` takes the
    code, and the session may pass 550 there.

SEE ALSO
    routing (Router.expand, canonicalisation), RFC 6409 6.1, Postfix smtpd_sender_login_maps
"""

from __future__ import annotations

import email.errors
import email.policy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address, AddressHeader
from email.parser import HeaderParser
from types import MappingProxyType

from postgate.mailauth.headers import split_header_fields
from postgate.policy.verdict import Verdict
from postgate.routing import (
    Router,
    RoutingError,
    canonical_domain,
    literal_local_part,
    split_address,
)

_FOLD = re.compile(r"\r?\n(?=[ \t])")

# Holds no "@", so it never canonicalises to an address anyone owns.
UNPARSEABLE_FROM = "(unparseable From: field)"


@dataclass(frozen=True)
class SenderRules:
    """Per user (canonical address): extra addresses or "@domain" entries they may use."""

    owners: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))


def sender_rejected_verdict(user: str, code: int = 553) -> Verdict:
    return Verdict.reject(
        code,
        "5.7.1",
        f"Sender address rejected: not owned by user <{user}>",
        reason=f"sender not owned by authenticated user {user}",
    )


class SenderPolicy:
    def __init__(self, rules: SenderRules, router: Router) -> None:
        self._router = router
        self._addresses: dict[str, frozenset[str]] = {}
        self._domains: dict[str, frozenset[str]] = {}
        for user, entries in rules.owners.items():
            owner = self._canonical(user)
            if owner is None:
                raise RoutingError(f"invalid user {user!r} in sender rules")
            addresses: set[str] = set()
            domains: set[str] = set()
            for entry in entries:
                if entry.startswith("@"):
                    domains.add(canonical_domain(entry[1:]))
                    continue
                address = self._canonical(entry)
                if address is None:
                    raise RoutingError(f"invalid address {entry!r} in sender rules for {user}")
                addresses.add(address)
            self._addresses[owner] = self._addresses.get(owner, frozenset()) | addresses
            self._domains[owner] = self._domains.get(owner, frozenset()) | domains

    def envelope_sender_allowed(self, user: str, sender: str) -> bool:
        """Whether ``user`` may use ``sender`` in MAIL FROM ("" is the null sender)."""
        if sender == "":
            return True  # see NULL SENDER above
        return self._owns(user, sender)

    def header_from_allowed(self, user: str, from_addresses: Sequence[str]) -> bool:
        """Whether every From: mailbox is the user's; no mailboxes at all passes."""
        return all(self._owns(user, address) for address in from_addresses)

    def _owns(self, user: str, address: str) -> bool:
        owner = self._canonical(user)
        wanted = self._canonical(address)
        if owner is None or wanted is None:
            return False
        if wanted == owner or wanted in self._addresses.get(owner, ()):
            return True
        if wanted.rpartition("@")[2] in self._domains.get(owner, ()):
            return True
        if not self._router.is_local_domain(wanted.rpartition("@")[2]):
            return False
        try:
            final = self._router.expand(wanted)
        except RoutingError:
            return False  # an alias we cannot expand proves nothing
        return owner in {self._canonical(target) for target in final}

    def _canonical(self, address: str) -> str | None:
        """The comparable form, as the router compares; None for unparseable syntax."""
        try:
            local, domain = split_address(address)
            domain = canonical_domain(domain)
        except RoutingError:
            return None
        literal = literal_local_part(local)
        if self._router.is_local_domain(domain):
            literal = literal.lower()
        return f"{literal}@{domain}" if literal else None


# Far above any real From: (RFC 5322 3.6.2 allows several authors, but 8 KiB is
# about 200 of them) and small enough to parse in milliseconds.
MAX_FROM_FIELD = 8192
_OBS_FROM = re.compile(rb"(?im)^from[ \t]+:")


def from_header_addresses(message: bytes) -> list[str]:
    """The addr-specs of every mailbox in every From: field of the header section.

    Handles folding, comments, encoded-word display names (RFC 2047) and groups
    (members are listed). Header bytes are read as UTF-8 (RFC 6532); bytes that are
    not UTF-8 become U+FFFD, which no owned address contains.

    A field the parser had to guess at (``alice@ours <mallory@evil>`` parses as alice
    with a defect, while a mail reader may show mallory) also yields UNPARSEABLE_FROM,
    which is no one's address, so the ownership check fails closed on syntax we
    cannot read."""
    # RFC 5322 4.5.? obs-fields allow blanks before the colon ("From : x"); many
    # readers honour that, so it must count as a From field here too.
    # Only the From fields go to the (slow) stdlib parser: found with a linear scan.
    from_fields = [
        _OBS_FROM.sub(b"From:", raw)
        for name, raw in split_header_fields(message)[0]
        if name.lower() == b"from" or _OBS_FROM.match(raw)
    ]
    found: list[str] = []
    if any(len(raw) > MAX_FROM_FIELD for raw in from_fields):
        # The stdlib address parser is super-linear on huge lists and runs on the
        # event loop: an outsized field is refused unparsed (fails closed).
        return [UNPARSEABLE_FROM]
    # compat32 keeps each field's raw text; the modern header classes then parse it.
    raw_headers = HeaderParser(policy=email.policy.compat32).parsestr(
        b"".join(from_fields).decode("utf-8", "replace")
    )
    for raw in raw_headers.get_all("From", []):
        unfolded = _FOLD.sub("", str(raw))  # RFC 5322 2.2.3
        try:
            value = email.policy.default.header_factory("From", unfolded)
            addresses: Sequence[Address] = getattr(value, "addresses", ())
            specs = [a.addr_spec for a in addresses if a.username and a.domain]
            clean = _parsed_cleanly(value, addresses)
        except Exception:
            # The stdlib header parser raises assorted exceptions (even AttributeError)
            # on hostile input; whatever it was, the field claims nothing we can verify.
            specs, clean = [], False
        found.extend(specs)
        if not clean:
            found.append(UNPARSEABLE_FROM)
    return found


def _parsed_cleanly(value: object, addresses: Sequence[Address]) -> bool:
    if not isinstance(value, AddressHeader):
        return False
    if any(not (a.username and a.domain) for a in addresses):
        return False
    # RFC 6532 3.2: UTF-8 local parts are fine in SMTPUTF8 mail; any other invalid
    # syntax means the parser guessed.
    return not any(
        isinstance(defect, email.errors.InvalidHeaderDefect)
        for defect in getattr(value, "defects", ())
        if not isinstance(defect, email.errors.NonASCIILocalPartDefect)
    )
