"""dkim.signer — DKIM-Signature headers for outgoing mail, made before it is queued.

SYNOPSIS
    signer = DkimSigner(KeyStore(data_dir / "dkim"))
    headers = signer.sign(message)               # b"" when we hold no key for From:
    headers = await signer.sign_async(message)   # the same, in a worker thread
    queued = headers + message
    signer.signing_domain(message)               # "example.com" or None

DESCRIPTION
    One signature per active key of the signing domain: RSA (rsa-sha256) and
    Ed25519 (ed25519-sha256, RFC 8463), so receivers that know only RSA still
    verify one of them. Never rsa-sha1 (RFC 8301 3.1) and never l= (a body length
    lets anyone append content under our signature). Canonicalization is
    relaxed/relaxed, which survives the header refolding and trailing-space
    changes that relays commonly make (RFC 6376 3.4). t= is always set.

    The signing domain is the domain of the From: address, so that the signature
    is DMARC-aligned (RFC 7489 3.1.1); when we hold no active key for it, the
    nearest parent domain we hold a key for is used (still aligned in DMARC's
    default relaxed mode). Otherwise the message is not signed. Callers may name
    the domain themselves (``domain=``), e.g. for mail from the postmaster.

SIGNED HEADER FIELDS
    Always: From, To, Subject, Date, Message-ID, List-Unsubscribe,
    List-Unsubscribe-Post. When present: Cc, Reply-To, In-Reply-To, References,
    MIME-Version, Content-Type, Content-Transfer-Encoding. Every listed field is
    oversigned: named once more in h= than it occurs (so an absent field is named
    once). A verifier hashes an empty value for the extra name, so adding a second
    From: or Subject:, or a List-Unsubscribe the sender never wrote, after signing
    breaks the signature (RFC 6376 5.4.2, 8.15).

DIAGNOSTICS
    DkimError when a key file cannot be read or dkimpy refuses the key. Which
    messages are signed (authenticated submissions, trusted networks) is the
    session's decision; a signing failure should become a 451, not unsigned mail.

SEE ALSO
    dkim.keys, dkim.verify, RFC 6376, RFC 8463, RFC 8301, RFC 7489 3.1.1
"""

from __future__ import annotations

import asyncio
import email.utils
import logging

import dkim

from postgate.dkim.keys import DkimError, DkimKey, KeyStore

ALWAYS_SIGNED = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
)
SIGNED_WHEN_PRESENT = (
    "cc",
    "reply-to",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
)
CANONICALIZATION = (b"relaxed", b"relaxed")

_QUIET = logging.getLogger("postgate.dkim.dkimpy")


def parse_headers(message: bytes) -> list[tuple[bytes, bytes]]:
    """The header fields as (name, unfolded-with-CRLF value) pairs, as dkimpy sees them."""
    try:
        headers, _body = dkim.rfc822_parse(message)
    except dkim.MessageFormatError as exc:
        raise DkimError(f"cannot parse the message header: {exc}") from None
    return [(bytes(name), bytes(value)) for name, value in headers]


def header_list(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """The h= list: each signed field once more than it occurs (oversigning)."""
    counts: dict[str, int] = {}
    for name, _value in headers:
        key = name.decode("ascii", "replace").lower()
        counts[key] = counts.get(key, 0) + 1
    names: list[bytes] = []
    for field in ALWAYS_SIGNED + SIGNED_WHEN_PRESENT:
        present = counts.get(field, 0)
        if present == 0 and field in SIGNED_WHEN_PRESENT:
            continue
        names += [field.encode("ascii")] * (present + 1)
    return names


def from_domain(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The one domain of the From: mailboxes, lower-case; None when there is no
    From:, several From: fields, or mailboxes in different domains."""
    values = [v for n, v in headers if n.lower() == b"from"]
    if len(values) != 1:
        return None
    text = values[0].decode("utf-8", "replace").replace("\r\n", "")
    domains = {
        address.rpartition("@")[2].strip().rstrip(".").lower()
        for _name, address in email.utils.getaddresses([text])
        if "@" in address
    }
    if len(domains) != 1:
        return None
    domain = domains.pop()
    return domain or None


class DkimSigner:
    """Signs with the active keys of a ``KeyStore``; see the module docstring."""

    def __init__(self, keystore: KeyStore) -> None:
        self._keystore = keystore

    def signing_domain(self, message: bytes) -> str | None:
        """The domain we would sign ``message`` for, or None."""
        domain = from_domain(parse_headers(message))
        return None if domain is None else self._domain_with_keys(domain)

    def sign(self, message: bytes, domain: str | None = None) -> bytes:
        """The DKIM-Signature fields to put in front of ``message`` (CRLF-terminated),
        or b"" when there is nothing to sign with."""
        headers = parse_headers(message)
        if domain is None:
            found = from_domain(headers)
            domain = None if found is None else self._domain_with_keys(found)
        if domain is None:
            return b""
        keys = self._keystore.active_keys(domain)
        if not keys:
            return b""
        include = header_list(headers)
        return b"".join(self._sign_one(message, key, include) for key in keys)

    async def sign_async(self, message: bytes, domain: str | None = None) -> bytes:
        """``sign`` in a worker thread. Measured with dkimpy: the RSA-2048 private-key
        operation alone is ~8 ms of pure-Python big-number arithmetic, and body
        canonicalization and hashing cost ~40 ms per MB; on the event loop either
        would stall every other SMTP session, so every message goes to a thread."""
        return await asyncio.to_thread(self.sign, message, domain)

    def _domain_with_keys(self, domain: str) -> str | None:
        labels = domain.split(".")
        # A parent needs two labels at least: we never sign for a bare TLD.
        for start in range(0, len(labels) - 1):
            candidate = ".".join(labels[start:])
            if self._keystore.active_keys(candidate):
                return candidate
        return None

    def _sign_one(self, message: bytes, key: DkimKey, include: list[bytes]) -> bytes:
        signer = dkim.DKIM(message, logger=_QUIET)
        try:
            signature: bytes = signer.sign(
                key.selector.encode("ascii"),
                key.domain.encode("ascii"),
                self._keystore.private_key(key),
                signature_algorithm=key.algorithm.signature_algorithm.encode("ascii"),
                canonicalize=CANONICALIZATION,
                include_headers=include,
                length=False,  # never l=: it would let others append to the body
            )
        except dkim.DKIMException as exc:
            raise DkimError(f"cannot sign with {key.selector} for {key.domain}: {exc}") from None
        return signature
