"""dkim.verify — verify every DKIM signature of a received message.

SYNOPSIS
    results = await verify_dkim(message, resolver)   # list[DkimResult], [] if unsigned
    for result in results:
        result.result          # DkimOutcome.PASS, FAIL, NEUTRAL, TEMPERROR, PERMERROR, POLICY
        result.auth_results()  # "dkim=pass header.d=example.com header.s=sel header.a=..."
    auth_results_dkim(results)  # "dkim=none" for unsigned mail, else one clause each

DESCRIPTION
    One result per DKIM-Signature field, top to bottom, not just the first: a
    message may carry an RSA and an Ed25519 signature, or signatures of several
    domains, and DMARC needs to know whether any aligned one passed.

    dkimpy does the cryptography, but its DNS hook is synchronous. So the d= and s=
    of every signature are read first, the key records are fetched concurrently
    through our async resolver, and dkimpy gets a ``dnsfunc`` that only reads that
    prefetched map. Key records are judged here before dkimpy sees them, because
    dkimpy reports a missing or malformed key as a plain "does not verify".

RESULTS (RFC 7601 2.7.1, RFC 6376 6.1)
    pass        the signature verifies.
    fail        it does not: body hash or header signature mismatch (message
                altered, or signed with another key).
    neutral     the DKIM-Signature field is malformed (tag syntax, missing or bad
                tags), so it could not be processed.
    policy      it is well formed but we refuse it: rsa-sha1 (RFC 8301 3.1) or an
                RSA key shorter than 1024 bits (RFC 8301 3.2).
    temperror   the key could not be fetched now (DNS timeout, SERVFAIL).
    permerror   no key record, a malformed, revoked (empty p=) or wrong-type key,
                an expired signature (x=) or one dated in the future.

    The lookup never raises: DNS failures become temperror, anything dkimpy
    throws becomes permerror with its text as the reason.

    Verification runs in a worker thread for messages over ``THREAD_THRESHOLD``:
    hashing a large body (~40 ms per MB in dkimpy) would stall other sessions.

SEE ALSO
    dkim.signer, dns.resolver, RFC 6376 6, RFC 7601 2.7.1, RFC 8301, RFC 8463
"""

from __future__ import annotations

import asyncio
import binascii
import enum
import logging
from dataclasses import dataclass

import dkim
import dkim.util

from postgate.dns.resolver import DnsError, Resolver
from postgate.mailauth.headers import header_mentions

THREAD_THRESHOLD = 256 * 1024
MIN_RSA_BITS = 1024  # RFC 8301 3.2: verifiers MUST NOT accept shorter keys

_QUIET = logging.getLogger("postgate.dkim.dkimpy")


class DkimOutcome(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NEUTRAL = "neutral"
    POLICY = "policy"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True, slots=True)
class DkimResult:
    """The verdict on one DKIM-Signature field. Empty strings where the field
    did not say (a malformed signature may lack d= or s=)."""

    result: DkimOutcome
    domain: str
    selector: str
    algorithm: str
    reason: str
    identity: str = ""
    key_bits: int | None = None
    signature_prefix: str = ""  # first 8 characters of b=, RFC 6008 header.b

    def auth_results(self) -> str:
        """This result as an Authentication-Results method clause (RFC 7601 2.7.1)."""
        comment = f" ({self.reason})" if self.reason else ""
        parts = [f"dkim={self.result.value}{comment}"]
        if self.domain:
            parts.append(f"header.d={self.domain}")
        if self.identity:
            parts.append(f"header.i={self.identity}")
        if self.selector:
            parts.append(f"header.s={self.selector}")
        if self.algorithm:
            parts.append(f"header.a={self.algorithm}")
        if self.signature_prefix:
            parts.append(f"header.b={self.signature_prefix}")
        return " ".join(parts)


def auth_results_dkim(results: list[DkimResult]) -> list[str]:
    """The dkim clauses of an Authentication-Results field: "dkim=none" when unsigned."""
    return [r.auth_results() for r in results] or ["dkim=none"]


@dataclass(frozen=True, slots=True)
class _Signature:
    index: int
    tags: dict[bytes, bytes]
    error: str  # non-empty: malformed, do not verify


@dataclass(frozen=True, slots=True)
class _KeyLookup:
    records: tuple[str, ...]
    error: DnsError | None


async def verify_dkim(message: bytes, resolver: Resolver) -> list[DkimResult]:
    """Verify every DKIM-Signature of ``message``; see the module docstring."""
    if not header_mentions(message, b"dkim-signature"):
        return []  # most mail: no need to parse it
    try:
        headers, _body = dkim.rfc822_parse(message)
    except Exception:  # an unparsable header section has no signatures we can read
        return []
    signatures = [
        _parse_signature(i, value)
        for i, (name, value) in enumerate(
            (n, v) for n, v in headers if n.lower() == b"dkim-signature"
        )
    ]
    if not signatures:
        return []
    names = sorted({_key_name(s.tags) for s in signatures if not s.error and _key_name(s.tags)})
    lookups = await asyncio.gather(*(_lookup(name, resolver) for name in names))
    keys = dict(zip(names, lookups, strict=True))
    if len(message) > THREAD_THRESHOLD:
        return await asyncio.to_thread(_verify_all, message, signatures, keys)
    return _verify_all(message, signatures, keys)


def _parse_signature(index: int, value: bytes) -> _Signature:
    try:
        tags = dkim.util.parse_tag_value(value)
    except dkim.util.InvalidTagValueList as exc:
        return _Signature(index, {}, f"malformed tag list: {exc}")
    try:
        dkim.validate_signature_fields(tags)
    except dkim.ValidationError as exc:
        return _Signature(index, tags, str(exc))
    return _Signature(index, tags, "")


def _key_name(tags: dict[bytes, bytes]) -> str:
    try:
        selector = tags[b"s"].decode("ascii").strip()
        domain = tags[b"d"].decode("ascii").strip().rstrip(".")
    except (KeyError, UnicodeDecodeError):
        return ""
    return f"{selector}._domainkey.{domain}".lower() if selector and domain else ""


async def _lookup(name: str, resolver: Resolver) -> _KeyLookup:
    try:
        return _KeyLookup(tuple(await resolver.txt(name)), None)
    except DnsError as exc:
        return _KeyLookup((), exc)


def _text(tags: dict[bytes, bytes], tag: bytes) -> str:
    return tags.get(tag, b"").decode("ascii", "replace").strip()


def _verify_all(
    message: bytes, signatures: list[_Signature], keys: dict[str, _KeyLookup]
) -> list[DkimResult]:
    return [_verify_one(message, s, keys) for s in signatures]


def _verify_one(message: bytes, signature: _Signature, keys: dict[str, _KeyLookup]) -> DkimResult:
    tags = signature.tags
    b_value = b"".join(tags.get(b"b", b"").split()).decode("ascii", "replace")

    def result(outcome: DkimOutcome, reason: str, bits: int | None = None) -> DkimResult:
        return DkimResult(
            result=outcome,
            domain=_text(tags, b"d").lower(),
            selector=_text(tags, b"s"),
            algorithm=_text(tags, b"a").lower(),
            reason=reason,
            identity=_text(tags, b"i"),
            key_bits=bits,
            signature_prefix=b_value[:8],
        )

    if signature.error:
        # Expiry and future dates are judgements on a well-formed field.
        if "x= value is past" in signature.error:
            return result(DkimOutcome.PERMERROR, "signature expired")
        if "t= value is in the future" in signature.error:
            return result(DkimOutcome.PERMERROR, "signature dated in the future")
        return result(DkimOutcome.NEUTRAL, f"bad signature: {signature.error}")
    if tags[b"a"].lower() == b"rsa-sha1":
        return result(DkimOutcome.POLICY, "rsa-sha1 is not accepted (RFC 8301)")
    if b"from" not in [h.strip().lower() for h in tags[b"h"].split(b":")]:
        return result(DkimOutcome.PERMERROR, "From is not signed (RFC 6376 6.1.1)")
    name = _key_name(tags)
    lookup = keys.get(name)
    if lookup is None:
        return result(DkimOutcome.PERMERROR, "bad d= or s=")
    if lookup.error is not None:
        if lookup.error.temporary:
            return result(DkimOutcome.TEMPERROR, f"key lookup failed: {lookup.error}")
        return result(DkimOutcome.PERMERROR, f"key lookup failed: {lookup.error}")
    if not lookup.records:
        return result(DkimOutcome.PERMERROR, "no key for signature")
    record = lookup.records[0].encode("utf-8", "replace")
    if _key_revoked(record):
        return result(DkimOutcome.PERMERROR, "key revoked")
    try:
        _pk, bits, key_type, _tlsrpt = dkim.evaluate_pk(name, record)
    except (dkim.DKIMException, binascii.Error, ValueError, KeyError) as exc:
        return result(DkimOutcome.PERMERROR, f"bad key record: {exc}")
    expected_type = tags[b"a"].lower().split(b"-")[0]
    if key_type != expected_type:
        return result(DkimOutcome.PERMERROR, f"key type {key_type!r} does not match a=")
    if key_type == b"rsa" and bits < MIN_RSA_BITS:
        return result(DkimOutcome.POLICY, f"{bits}-bit key is too short (RFC 8301)", bits)

    def dnsfunc(_name: object, timeout: float = 5) -> bytes:
        return record

    verifier = dkim.DKIM(message, logger=_QUIET, minkey=MIN_RSA_BITS)
    try:
        verified = verifier.verify(signature.index, dnsfunc=dnsfunc)
    except dkim.ValidationError as exc:
        text = str(exc)
        if text.startswith("body hash mismatch"):
            return result(DkimOutcome.FAIL, "body hash did not verify", bits)
        return result(DkimOutcome.PERMERROR, text, bits)
    except dkim.DKIMException as exc:
        return result(DkimOutcome.PERMERROR, str(exc), bits)
    except Exception as exc:  # a verifier bug must not crash the session
        return result(DkimOutcome.PERMERROR, f"verifier error: {type(exc).__name__}", bits)
    if verified:
        return result(DkimOutcome.PASS, f"{bits}-bit key", bits)
    return result(DkimOutcome.FAIL, "signature did not verify", bits)


def _key_revoked(record: bytes) -> bool:
    try:
        tags = dkim.util.parse_tag_value(record)
    except dkim.util.InvalidTagValueList:
        return False
    return not tags.get(b"p", b"").strip()
