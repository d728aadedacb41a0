"""accept.pipeline — from the bytes a client sent to the bytes we queue.

SYNOPSIS
    pipeline = AcceptPipeline(hostname=..., sender_policy=..., inbound=..., ...)
    prepared = await pipeline.prepare(message, arrival)
    if prepared.refusal: reply with it; else enqueue prepared.message

DESCRIPTION
    Every accepted message passes here once, in this order:

    1. Submissions (authenticated users): the From: header must name an address the
       user owns (553 5.7.1 otherwise), and Message-ID/Date are added when missing
       (RFC 6409 8.2/8.3).
    2. Mail from the internet (MX listener, not authenticated, not from a trusted
       network): our quarantine mark and forged Authentication-Results claiming our
       authserv-id are removed (RFC 8601 5); SPF, DKIM, DMARC and ARC are checked and
       one Authentication-Results header is added. DMARC may refuse the message or
       mark it for the Junk folder, by configuration.
    3. Mail from users and trusted networks is DKIM-signed with the From: domain's
       active keys, when there are any.
    0. A header section over ``limits.max_header_size`` is refused (552 5.3.4); a
       Return-Path written by the client is dropped (the final delivery adds the
       real one, RFC 5321 4.4), as Postfix's message_drop_headers does.
    4. Mail from the internet that an alias forwards to another domain is ARC-sealed
       with the alias domain's key (RFC 8617), so the next hop can trust step 2.
    5. The Received trace header goes on top (RFC 5321 4.4).

    A check that fails unexpectedly becomes a 451, never an accept (architecture
    invariant 5); DKIM signing that fails also gives 451 rather than sending mail
    unsigned that the sender expects to be signed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from postgate.accept.headers import (
    add_missing_submission_headers,
    prepend_trace,
    protocol_keyword,
    received_header,
)
from postgate.dkim.keys import Algorithm, DkimError, KeyStore
from postgate.dkim.signer import DkimSigner
from postgate.dkim.verify import verify_dkim
from postgate.dns.resolver import Resolver
from postgate.mailauth.arc import ArcSealError, arc_seal
from postgate.mailauth.dmarc import DmarcVerdictCache
from postgate.mailauth.headers import remove_header_fields, starts_with_header_field
from postgate.mailauth.inbound import InboundOptions, evaluate_inbound
from postgate.mailauth.spf import SpfVerdictCache
from postgate.policy.sender import SenderPolicy, from_header_addresses, sender_rejected_verdict
from postgate.policy.verdict import Action, Verdict
from postgate.queue.model import Envelope
from postgate.routing import LocalMailbox, Router

log = structlog.get_logger("postgate.accept")

QUARANTINE_FIELD = b"X-Postgate-Quarantine"


@dataclass(frozen=True, slots=True)
class Arrival:
    """What the session knows about how a message arrived."""

    envelope: Envelope
    queue_id: str
    now: float
    helo: str
    extended: bool
    tls_active: bool
    tls_version: str | None
    tls_cipher: str | None
    user: str | None  # authenticated user
    trusted: bool  # from a trusted network (may relay without AUTH)
    inbound: bool  # from the internet on an MX listener: run the inbound checks
    single_recipient: str | None  # named in Received only when alone (no Bcc leaks)


@dataclass(frozen=True, slots=True)
class Prepared:
    message: bytes | None  # None when refused
    refusal: Verdict | None = None
    quarantined: bool = False
    signed_by: str | None = None
    auth_results: str | None = None


def _temporary(reason: str) -> Verdict:
    return Verdict.tempfail(451, "4.3.0", "Temporary local problem, try again later", reason)


class AcceptPipeline:
    def __init__(
        self,
        *,
        hostname: str,
        router: Router,
        sender_policy: SenderPolicy | None,
        inbound: InboundOptions | None,
        resolver: Resolver | None,
        signer: DkimSigner | None,
        keys: KeyStore | None,
        arc_seal_forwarded: bool,
        max_header_size: int = 1_048_576,
    ) -> None:
        self.max_header_size = max_header_size
        self.hostname = hostname
        self.router = router
        self.sender_policy = sender_policy
        self.inbound = inbound
        self.resolver = resolver
        self.signer = signer
        self.keys = keys
        self.arc_seal_forwarded = arc_seal_forwarded
        self.spf_cache = SpfVerdictCache()
        self.dmarc_cache = DmarcVerdictCache()

    async def prepare(self, message: bytes, arrival: Arrival) -> Prepared:
        if not starts_with_header_field(message):
            # RFC 5322 2.1: a message is header fields, an empty line, then the body. Data
            # that does not begin with a field has an empty header: make that explicit
            # (as Postfix's cleanup treats such a line as the start of the body), so no
            # field we add can be continued or joined by the sender's first line.
            message = b"\r\n" + message
        end_of_headers = message.find(b"\r\n\r\n")
        header_size = len(message) if end_of_headers < 0 else end_of_headers + 4
        if header_size > self.max_header_size:
            # Every header check below is linear, but runs on the event loop: bound it.
            return Prepared(
                None,
                Verdict.reject(
                    552,
                    "5.3.4",
                    "Message header section too large",
                    f"header section of {header_size} octets exceeds limits.max_header_size",
                ),
            )
        # Fields only we may write, dropped in one pass over the header: RFC 5321 4.4
        # Return-Path (the final delivery adds it from the envelope; the client's is
        # stale or forged) and, on mail from the internet, our quarantine mark.
        own_fields = [b"Return-Path"] + ([QUARANTINE_FIELD] if arrival.inbound else [])
        message = remove_header_fields(message, own_fields)
        user = arrival.user
        if user is not None:
            refusal = self._check_from_header(user, message)
            if refusal is not None:
                return Prepared(None, refusal)
            message = add_missing_submission_headers(
                message, hostname=self.hostname, queue_id=arrival.queue_id, now=arrival.now
            )
        quarantined = False
        auth_results: str | None = None
        if arrival.inbound and self.inbound is not None and self.resolver is not None:
            outcome = await self._check_inbound(message, arrival)
            if isinstance(outcome, Verdict):
                return Prepared(None, outcome)
            message, quarantined, auth_results = outcome
        signed_by: str | None = None
        if (user is not None or arrival.trusted) and self.signer is not None:
            try:
                signature = await self.signer.sign_async(message)
            except DkimError as exc:
                return Prepared(None, _temporary(f"DKIM signing failed: {exc}"))
            if signature:
                signed_by = _signing_domain(signature)
                message = signature + message
        if arrival.inbound and self.arc_seal_forwarded:
            message = await self._seal_if_forwarded(message, arrival.envelope)
        message = prepend_trace(message, self._received(arrival))
        return Prepared(message, None, quarantined, signed_by, auth_results)

    def _check_from_header(self, user: str, message: bytes) -> Verdict | None:
        if self.sender_policy is None:
            return None
        addresses = from_header_addresses(message)
        if self.sender_policy.header_from_allowed(user, addresses):
            return None
        verdict = sender_rejected_verdict(user)
        return Verdict(
            verdict.action,
            verdict.code,
            verdict.enhanced,
            verdict.text,
            f"From: {', '.join(addresses) or '(unparseable)'} not owned by {user}",
        )

    async def _check_inbound(
        self, message: bytes, arrival: Arrival
    ) -> Verdict | tuple[bytes, bool, str]:
        assert self.inbound is not None and self.resolver is not None
        resolver = self.resolver
        try:
            outcome = await evaluate_inbound(
                message,
                client_ip=arrival.envelope.client_address,
                helo=arrival.helo,
                mail_from=arrival.envelope.sender,
                resolver=resolver,
                options=self.inbound,
                dkim_verifier=lambda m: verify_dkim(m, resolver),
                spf_cache=self.spf_cache,
                dmarc_cache=self.dmarc_cache,
            )
        except Exception as exc:  # invariant 5: a crashing check is a 4xx, never a 250
            log.exception("inbound checks failed", queue_id=arrival.queue_id)
            return _temporary(f"inbound checks failed: {type(exc).__name__}: {exc}")
        if outcome.verdict.action in (Action.REJECT, Action.TEMPFAIL, Action.DISCONNECT):
            verdict = outcome.verdict
            reason = outcome.reason or verdict.reason
            return Verdict(verdict.action, verdict.code, verdict.enhanced, verdict.text, reason)
        header = outcome.headers_to_prepend
        summary = header.decode("utf-8", "replace").split(";", 1)[-1]
        summary = " ".join(summary.split())
        return header + outcome.message, outcome.quarantine, summary

    async def _seal_if_forwarded(self, message: bytes, envelope: Envelope) -> bytes:
        domains = _forwarding_domains(self.router, envelope)
        if not domains or self.keys is None or self.inbound is None:
            return message
        for domain in domains:
            rsa = [k for k in self.keys.active_keys(domain) if k.algorithm is Algorithm.RSA]
            if not rsa:
                continue
            try:
                seal = await arc_seal(
                    message,
                    selector=rsa[0].selector,
                    domain=domain,
                    private_key=self.keys.private_key(rsa[0]),
                    authserv_id=self.inbound.authserv_id,
                )
            except (ArcSealError, DkimError) as exc:
                # Forwarding still works without a seal; the next hop just cannot
                # see our verdict. Not worth refusing the message for.
                log.warning("ARC sealing failed", domain=domain, reason=str(exc))
                return message
            return seal + message
        log.info("no RSA key to ARC-seal forwarded mail", domains=list(domains))
        return message

    def _received(self, arrival: Arrival) -> bytes:
        return received_header(
            helo=arrival.helo,
            client_address=arrival.envelope.client_address,
            client_hostname=None,
            hostname=self.hostname,
            protocol=protocol_keyword(
                extended=arrival.extended,
                tls=arrival.tls_active,
                authenticated=arrival.user is not None,
                smtputf8=arrival.envelope.smtputf8,
            ),
            queue_id=arrival.queue_id,
            recipient=arrival.single_recipient,
            tls_version=arrival.tls_version,
            tls_cipher=arrival.tls_cipher,
            now=arrival.now,
        )


def _forwarding_domains(router: Router, envelope: Envelope) -> Sequence[str]:
    """Local domains whose aliases send this message to another domain."""
    domains: list[str] = []
    for recipient in envelope.recipients:
        if recipient.address.lower() == recipient.original.lower():
            continue
        if isinstance(router.destination(recipient.address), LocalMailbox):
            continue
        domain = recipient.original.rpartition("@")[2].lower()
        if domain and domain not in domains:
            domains.append(domain)
    return domains


def _signing_domain(signature: bytes) -> str | None:
    text = signature.decode("ascii", "replace")
    for part in text.replace("\r\n", " ").split(";"):
        name, _, value = part.strip().partition("=")
        if name == "d":
            return value.strip()
    return None
