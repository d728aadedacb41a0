"""audit.relay — can an unauthenticated client get a foreign recipient accepted?

SYNOPSIS
    for probe in PROBES:
        result = run_relay_probe(target, probe, token)   # CheckResult "relay/<name>"

DESCRIPTION
    Each probe is one connection: greeting, EHLO (or the probe's HELO trick), STARTTLS
    when the target mode says so, MAIL FROM, one RCPT TO, then RSET and QUIT. No probe
    ever sends DATA: an audit must not itself relay anything. Probes are data (the
    table below), so adding a trick is one line.

    The tricks are those clients have used to slip a foreign recipient past a relay
    check: Sendmail's percent hack and UUCP bang paths, RFC 5321 source routes
    (C.: servers must accept and may ignore them), quoted local parts holding "@",
    "user@foreign@local" (Postfix calls it sender-specified routing), address literals,
    case and trailing-dot variants of the domain, a domain starting with ours (prefix
    matching), unbracketed addresses, and sender/HELO identities a lax server trusts
    (null sender, our own postmaster, the recipient's own domain, HELO localhost or the
    local domain).

VERDICTS
    Foreign recipient accepted (2xx): FAIL. Refused as relay (x.7.x enhanced code or
    "relay" in the text, temporary or not) or refused outright (5xx): PASS. Refused
    because the domain did not resolve (x.1.2, x.4.x, "not found"): WARN, since the
    relay check itself may not have been reached; rerun with --foreign-domain set to a
    real domain you control. Other temporary refusals (greylisting): WARN.

    Routing characters at a LOCAL domain ("u%foreign@local", "foreign!u@local",
    "\\"u@foreign\\"@local", "u@foreign@local") may legitimately be read as a strange
    but local mailbox name, so a 250 alone proves nothing. The follow-up, in the same
    connection: RSET and try a control address with the same random local part and no
    routing characters. If the server refuses the control as an unknown user but
    accepted the routed form, no mailbox can explain the 250 (the random name has
    none), so the server parsed the route: FAIL. If the control is accepted too, the
    server takes any name at that domain (catch-all or no recipient check) and only a
    delivery could tell: WARN. Literals of the server's own loopback are local by RFC
    5321 4.1.3, so their 250 is a WARN (delivered to whatever listens there).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from postgate.audit.model import AuditTarget, CheckResult, Status, TlsMode
from postgate.audit.wire import Conversation, ProbeError, Reply


class ProbeKind(enum.Enum):
    FOREIGN = "foreign"  # the domain that decides is foreign: any 2xx is relay
    ROUTED_LOCAL = "routed-local"  # routing characters at a local/bare address: follow up
    SELF_LITERAL = "self-literal"  # the server's own address literal: 2xx is a warning


@dataclass(frozen=True)
class RelayProbe:
    """One trick. Templates take {user} (random), {foreign}, {local}, {origin},
    {local_user}; ``recipient`` is the whole RCPT argument (brackets included)."""

    name: str
    recipient: str
    sender: str = "<{user}@{origin}>"
    kind: ProbeKind = ProbeKind.FOREIGN
    control: str | None = None  # ROUTED_LOCAL: the same name without routing
    helo: str | None = None  # "EHLO x" / "HELO x" instead of the target's EHLO
    upper: bool = False  # send the recipient in upper case (case-sensitive domain match)

    @property
    def needs_local(self) -> bool:
        return any("{local" in text for text in self._templates())

    def _templates(self) -> tuple[str, ...]:
        return (self.recipient, self.sender, self.control or "", self.helo or "")

    def render(self, text: str, target: AuditTarget, user: str) -> str:
        return text.format(
            user=user,
            foreign=target.foreign_domain,
            local=target.effective_local_domain or "",
            origin=target.origin_domain,
            local_user=target.effective_local_user,
        )


_AT_LOCAL = "<{user}@{local}>"
PROBES: tuple[RelayProbe, ...] = (
    RelayProbe("plain", "<{user}@{foreign}>"),
    RelayProbe("upper-case", "<{user}@{foreign}>", upper=True),
    RelayProbe("trailing-dot", "<{user}@{foreign}.>"),
    RelayProbe("unbracketed", "{user}@{foreign}"),
    RelayProbe("quoted-local-part", '<"{user}"@{foreign}>'),
    RelayProbe("local-then-foreign", "<{user}@{local}@{foreign}>"),
    RelayProbe("local-domain-prefix", "<{user}@{local}.{foreign}>"),
    RelayProbe("source-route", "<@{local}:{user}@{foreign}>"),
    RelayProbe("source-route-2-hops", "<@{local},@{foreign}:{user}@{foreign}>"),
    RelayProbe("literal-ipv4-foreign", "<{user}@[192.0.2.1]>"),  # RFC 5737 TEST-NET-1
    RelayProbe("literal-ipv6-foreign", "<{user}@[IPv6:2001:db8::1]>"),  # RFC 3849
    RelayProbe("sender-null", "<{user}@{foreign}>", sender="<>"),
    RelayProbe("sender-postmaster", "<{user}@{foreign}>", sender="<postmaster@{local}>"),
    RelayProbe("sender-local-user", "<{user}@{foreign}>", sender="<{local_user}>"),
    RelayProbe("sender-same-domain", "<{user}@{foreign}>", sender="<audit@{foreign}>"),
    RelayProbe("sender-literal", "<{user}@{foreign}>", sender="<audit@[127.0.0.1]>"),
    RelayProbe("helo-localhost", "<{user}@{foreign}>", helo="EHLO localhost"),
    RelayProbe("helo-local-domain", "<{user}@{foreign}>", helo="EHLO {local}"),
    RelayProbe("helo-literal", "<{user}@{foreign}>", helo="EHLO [127.0.0.1]"),
    RelayProbe("helo-not-ehlo", "<{user}@{foreign}>", helo="HELO {origin}"),
    RelayProbe(
        "percent-hack", "<{user}%{foreign}@{local}>", kind=ProbeKind.ROUTED_LOCAL, control=_AT_LOCAL
    ),
    RelayProbe(
        "percent-hack-upper",
        "<{user}%{foreign}@{local}>",
        kind=ProbeKind.ROUTED_LOCAL,
        control=_AT_LOCAL,
        upper=True,
    ),
    RelayProbe(
        "bang-path", "<{foreign}!{user}@{local}>", kind=ProbeKind.ROUTED_LOCAL, control=_AT_LOCAL
    ),
    RelayProbe(
        "quoted-at", '<"{user}@{foreign}"@{local}>', kind=ProbeKind.ROUTED_LOCAL, control=_AT_LOCAL
    ),
    RelayProbe(
        "quoted-percent",
        '<"{user}%{foreign}"@{local}>',
        kind=ProbeKind.ROUTED_LOCAL,
        control=_AT_LOCAL,
    ),
    RelayProbe(
        "foreign-then-local",
        "<{user}@{foreign}@{local}>",
        kind=ProbeKind.ROUTED_LOCAL,
        control=_AT_LOCAL,
    ),
    RelayProbe(
        "bang-path-bare", "<{foreign}!{user}>", kind=ProbeKind.ROUTED_LOCAL, control="<{user}>"
    ),
    RelayProbe(
        "percent-hack-bare", "<{user}%{foreign}>", kind=ProbeKind.ROUTED_LOCAL, control="<{user}>"
    ),
    RelayProbe(
        "percent-at-literal",
        "<{user}%{foreign}@[127.0.0.1]>",
        kind=ProbeKind.ROUTED_LOCAL,
        control="<{user}@[127.0.0.1]>",
    ),
    RelayProbe("literal-ipv4-self", "<{user}@[127.0.0.1]>", kind=ProbeKind.SELF_LITERAL),
    RelayProbe("literal-ipv6-self", "<{user}@[IPv6:::1]>", kind=ProbeKind.SELF_LITERAL),
)


def run_relay_probe(target: AuditTarget, probe: RelayProbe, user: str) -> CheckResult:
    """One probe as one connection; ``user`` is the audit's random local part."""
    name = f"relay/{probe.name}"
    if probe.needs_local and not target.effective_local_domain:
        return CheckResult(name, Status.SKIP, "needs --local-domain (or --local-user)")
    recipient = probe.render(probe.recipient, target, user)
    if probe.upper:
        recipient = recipient.upper()
    try:
        talk = Conversation.open(target)
    except ProbeError as exc:
        return CheckResult(name, Status.WARN, f"could not test: {exc}")
    with talk:
        try:
            return _converse(talk, target, probe, name, recipient, user)
        except ProbeError as exc:
            return CheckResult(name, Status.WARN, f"could not test: {exc}", tuple(talk.evidence))


def _converse(
    talk: Conversation,
    target: AuditTarget,
    probe: RelayProbe,
    name: str,
    recipient: str,
    user: str,
) -> CheckResult:
    if probe.helo and target.tls_mode is not TlsMode.STARTTLS:
        hello = talk.command(probe.render(probe.helo, target, user))
    else:
        hello = talk.secure()
        if probe.helo and hello.code == 250:
            # After STARTTLS the session starts over (RFC 3207 4.2): the trick greeting
            # is the one the server's policy sees.
            hello = talk.command(probe.render(probe.helo, target, user))
    if hello.code != 250:
        return _finish(talk, name, Status.PASS, f"greeting refused: {hello.brief()}")
    mail = talk.command(f"MAIL FROM:{probe.render(probe.sender, target, user)}")
    if not mail.positive:
        return _finish(talk, name, Status.PASS, f"sender refused: {mail.brief()}")
    rcpt = talk.command(f"RCPT TO:{recipient}")
    if not rcpt.positive:
        status, why = classify_refusal(rcpt)
        return _finish(talk, name, status, why)
    if probe.kind is ProbeKind.FOREIGN:
        return _finish(
            talk, name, Status.FAIL, f"OPEN RELAY: foreign recipient accepted: {rcpt.brief()}"
        )
    if probe.kind is ProbeKind.SELF_LITERAL:
        return _finish(
            talk,
            name,
            Status.WARN,
            "the server's own loopback literal was "
            "accepted: mail goes to whatever listens there; check it is local",
        )
    return _follow_up(talk, target, probe, name, user)


def _follow_up(
    talk: Conversation, target: AuditTarget, probe: RelayProbe, name: str, user: str
) -> CheckResult:
    assert probe.control is not None
    talk.command("RSET")
    mail = talk.command(f"MAIL FROM:{probe.render(probe.sender, target, user)}")
    if not mail.positive:
        return _finish(talk, name, Status.WARN, "accepted; the follow-up could not run")
    control = talk.command(f"RCPT TO:{probe.render(probe.control, target, user)}")
    if control.positive:
        return _finish(
            talk,
            name,
            Status.WARN,
            "accepted, but the server accepts any name at "
            "that domain (control accepted too): a mailbox may be meant; only a "
            "delivery could tell whether it would be relayed",
        )
    if 500 <= control.code < 600:
        return _finish(
            talk,
            name,
            Status.FAIL,
            "OPEN RELAY: the server refuses unknown local "
            f"names ({control.brief()}) yet accepted this routed form, which no "
            "mailbox has: it parsed the route",
        )
    return _finish(
        talk,
        name,
        Status.WARN,
        f"accepted; control temporarily refused ({control.brief()}), cannot tell",
    )


_ECHOED_ADDRESS = re.compile(r"<[^>]*>")
_UNRESOLVED_TEXT = ("not found", "unknown domain", "name service", "no such domain", "nxdomain")


def classify_refusal(reply: Reply) -> tuple[Status, str]:
    """A refused foreign RCPT: PASS when it was the relay check (or a hard refusal),
    WARN when it may have been something that hides the relay check."""
    enhanced = reply.enhanced or ""
    # Servers echo the address, and ours contains "relay-test": judge the words only.
    text = _ECHOED_ADDRESS.sub("", reply.text).lower()
    # A 5xx x.7.x is a policy refusal; a 4xx x.7.x may be greylisting, so it needs the word.
    relay_refusal = "relay" in text or "not permitted" in text
    relay_refusal = relay_refusal or (reply.code >= 500 and enhanced[1:4] == ".7.")
    if relay_refusal:
        return Status.PASS, f"refused as relay: {reply.brief()}"
    if enhanced[1:] in (".1.2", ".4.4") or any(word in text for word in _UNRESOLVED_TEXT):
        return Status.WARN, (
            f"refused because the domain did not resolve ({reply.brief()}): the relay check "
            "may not have been reached; rerun with --foreign-domain set to a domain you control"
        )
    if reply.code >= 500:
        return Status.PASS, f"refused: {reply.brief()}"
    return Status.WARN, f"temporarily refused ({reply.brief()}): a retry might be accepted"


def _finish(talk: Conversation, name: str, status: Status, summary: str) -> CheckResult:
    # RSET then QUIT: leave no transaction behind; errors here do not change the verdict.
    try:
        talk.command("RSET")
        talk.command("QUIT")
    except ProbeError:
        pass
    return CheckResult(name, status, summary, tuple(talk.evidence))
