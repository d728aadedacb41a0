"""mailauth.arc — Authenticated Received Chain: validate on the way in, seal on the way out.

SYNOPSIS
    result = await verify_arc(message, resolver)      # ArcResult(status=pass|fail|none)
    headers = await arc_seal(message, selector=b"s1", domain=b"example.org",
                             private_key=pem, authserv_id="mx.example.org")

DESCRIPTION
    Both sit on dkimpy's ARC code (RFC 8617). dkimpy asks for DNS through a
    synchronous callable, so ``verify_arc`` first reads the d= and s= tags of every
    ARC-Seal and ARC-Message-Signature, fetches those key records with our async
    resolver, and then runs dkimpy in a worker thread with a lookup function that
    only answers from what was fetched. The thread is on purpose: the
    ARC-Message-Signature hashes the whole body, and a large message must not stall
    the event loop.

    ``arc_seal`` adds the next ARC set (ARC-Seal, ARC-Message-Signature,
    ARC-Authentication-Results) when we forward a message to an outside domain. The
    chain status it seals (cv=) is taken, as RFC 8617 5.1.1 intends, from the
    ``arc=`` result in OUR Authentication-Results header on the message, so the
    message must carry the header ``build_authentication_results`` made, with the
    same authserv-id. It returns the header bytes to prepend, or b"" when there is
    nothing to seal (no A-R of ours, or the chain already failed and was ended).

DIAGNOSTICS
    Malformed ARC headers give fail, never an exception. A DNS failure fetching a
    key gives fail with ``temporary=True`` so the caller may prefer a retry.

SEE ALSO
    mailauth.authres, RFC 8617, dkimpy
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence

import dkim

from postgate.dns import DnsError
from postgate.mailauth.headers import header_mentions, split_header_fields
from postgate.mailauth.lookup import MailauthResolver, bounded
from postgate.mailauth.results import ArcResult, ArcStatus

_ARC_SIGNED = (b"arc-seal", b"arc-message-signature")
_TAG_RE = re.compile(rb"(?:^|;)\s*([a-z]+)\s*=\s*([^;]*)", re.IGNORECASE)
MAX_KEY_LOOKUPS = 2 * 50  # RFC 8617 4.2.1: at most 50 ARC sets, two keys each


class ArcSealError(Exception):
    """Sealing was impossible (bad key, bad parameters)."""


def _quiet_logger() -> logging.Logger:
    """dkimpy logs every invalid signature at ERROR; on an MX those are the sender's
    problem, not ours, and the result already says so. A private, unregistered
    logger per call keeps them out of our logs without touching global config."""
    logger = logging.Logger("postgate.mailauth.arc.dkimpy")
    logger.setLevel(logging.CRITICAL + 1)
    return logger


def _key_names(message: bytes) -> list[str]:
    names: list[str] = []
    fields, _ = split_header_fields(message)
    for name, raw in fields:
        if name.lower() not in _ARC_SIGNED:
            continue
        value = raw.split(b":", 1)[1] if b":" in raw else b""
        tags = {
            m.group(1).lower(): m.group(2) for m in _TAG_RE.finditer(re.sub(rb"\s+", b"", value))
        }
        selector, domain = tags.get(b"s", b""), tags.get(b"d", b"")
        if selector and domain:
            key = (selector + b"._domainkey." + domain).decode("ascii", "replace").lower()
            if key not in names:
                names.append(key)
    return names[:MAX_KEY_LOOKUPS]


async def verify_arc(
    message: bytes, resolver: MailauthResolver, *, lookup_timeout: float = 5.0
) -> ArcResult:
    """Validate the ARC chain of an inbound message (RFC 8617 5.2). Never raises."""
    if not header_mentions(message, b"arc-"):
        # No ARC header field of any kind: dkimpy's verdict, without its parse of the
        # whole message (any ARC-* field, even a stray one, goes to dkimpy).
        return ArcResult(ArcStatus.NONE, 0, "Message is not ARC signed")
    keys: dict[str, bytes] = {}
    temporary_failure = ""
    for name in _key_names(message):
        try:
            texts = await bounded(resolver.txt(name), lookup_timeout, name)
        except DnsError as exc:
            if exc.temporary:
                temporary_failure = str(exc)
            continue
        if texts:
            keys[name] = texts[0].encode("utf-8", "replace")

    def lookup(name: bytes, timeout: float = 5.0) -> bytes | None:
        return keys.get(name.decode("ascii", "replace").rstrip(".").lower())

    def run() -> tuple[object, list[dict[str, object]], str]:
        cv, results, comment = dkim.arc_verify(message, logger=_quiet_logger(), dnsfunc=lookup)
        return cv, results, str(comment)

    try:
        cv, results, comment = await asyncio.to_thread(run)
    except Exception as exc:  # dkimpy raises assorted errors on hostile input
        return ArcResult(ArcStatus.FAIL, reason=f"ARC validation error: {exc}")
    instances = len(results)
    if cv == dkim.CV_Pass:
        return ArcResult(ArcStatus.PASS, instances, comment)
    if cv == dkim.CV_None:
        return ArcResult(ArcStatus.NONE, 0, comment)
    # cv None from dkimpy means an earlier sealer already reported fail: the chain
    # is ended, which for us is fail too (RFC 8617 5.2 step 2).
    reason = comment if not temporary_failure else f"{comment}; {temporary_failure}"
    return ArcResult(ArcStatus.FAIL, instances, reason, temporary=bool(temporary_failure))


DEFAULT_SEAL_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"in-reply-to",
    b"references",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
    b"dkim-signature",
)


async def arc_seal(
    message: bytes,
    *,
    selector: str,
    domain: str,
    private_key: bytes,
    authserv_id: str,
    signed_headers: Sequence[bytes] = DEFAULT_SEAL_HEADERS,
    timestamp: int | None = None,
) -> bytes:
    """The next ARC set for ``message`` as header bytes to prepend (RFC 8617 5.1).

    ``private_key`` is a PEM (or base64 PKCS#1) RSA key; the signature is rsa-sha256,
    the only algorithm RFC 8617 defines. Runs in a worker thread (it hashes the body).
    """
    present = {name.lower() for name, _ in split_header_fields(message)[0]}
    headers = [h for h in signed_headers if h.lower() in present]
    if b"from" not in headers:
        raise ArcSealError("the message has no From header field to sign")
    stamp = int(time.time()) if timestamp is None else timestamp

    def run() -> list[bytes]:
        lines: list[bytes] = dkim.arc_sign(
            message,
            selector.encode("ascii"),
            domain.encode("ascii"),
            private_key,
            authserv_id.encode("ascii"),
            include_headers=headers,
            timestamp=str(stamp),
            logger=_quiet_logger(),
        )
        return lines

    try:
        lines = await asyncio.to_thread(run)
    except dkim.DKIMException as exc:
        raise ArcSealError(f"cannot seal: {exc}") from exc
    return b"".join(lines)
