"""audit.leaks — what the server tells strangers about itself.

SYNOPSIS
    find_leaks("220 mx ESMTP Postfix 3.7.11")   # (Leak(FAIL, "Postfix version", ...),)
    check_banner_leaks(target)                  # "leak/banner": banner, EHLO, HELP
    check_vrfy_expn(target)                     # "leak/vrfy-expn": user enumeration

DESCRIPTION
    A version number in the banner, EHLO or HELP reply tells an attacker which
    exploits to try; it FAILS. A software name without a version WARNS (less, but
    still a fingerprint). The patterns are data (LEAK_PATTERNS); the generic one
    matches exactly three dot-separated numbers, so IPv4 addresses (four) in
    "Hello x [192.0.2.1]" are not mistaken for versions.

    VRFY and EXPN (RFC 5321 3.5, 7.3): a server that answers VRFY for a real user
    with 2xx (250, or Postfix's 252) and for a random one with 5xx lets anyone list
    its mailboxes; the same answer for both (252, or refusing VRFY) is the safe one. An EXPN that
    returns a list discloses the members of that list. Both WARN.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postgate.audit.model import AuditTarget, CheckResult, Status
from postgate.audit.wire import Conversation, ProbeError, Reply

_NAMES = (
    r"Postfix|Exim|Sendmail|postgate|qmail|OpenSMTPD|Haraka|MDaemon|hMailServer|Zimbra|Courier"
    r"|IceWarp|Kerio|Exchange|Microsoft ESMTP|MailEnable|Axigen|CommuniGate|Halon|KumoMTA"
)

LEAK_PATTERNS: tuple[tuple[Status, str, re.Pattern[str]], ...] = (
    (Status.FAIL, "Postfix version", re.compile(r"\bPostfix[ /-]?v?\d+\.\d+", re.I)),
    (Status.FAIL, "Exim version", re.compile(r"\bExim[ /-]?v?\d+\.\d+", re.I)),
    (Status.FAIL, "Sendmail version", re.compile(r"\bSendmail[ /-]?v?\d+\.\d+", re.I)),
    (Status.FAIL, "postgate version", re.compile(r"\bpostgate[ /-]?v?\d+\.\d+", re.I)),
    (Status.FAIL, "Microsoft version", re.compile(r"Version:?\s*\d+\.\d+", re.I)),
    (Status.FAIL, "software version", re.compile(rf"\b(?:{_NAMES})[ /-]v?\d+(?:\.\d+)*", re.I)),
    (Status.FAIL, "version number", re.compile(r"(?<![\d.])\d+\.\d+\.\d+(?![\d.])")),
    (Status.FAIL, "version number", re.compile(r"\bv\d+\.\d+\b", re.I)),
    (Status.WARN, "software name", re.compile(rf"\b(?:{_NAMES})\b", re.I)),
)
_ENHANCED_PREFIX = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\s+")


@dataclass(frozen=True)
class Leak:
    status: Status
    what: str
    text: str


def find_leaks(text: str) -> tuple[Leak, ...]:
    """Every pattern that matches ``text``, one Leak each (the most severe first)."""
    leaks = []
    for status, what, pattern in LEAK_PATTERNS:
        found = pattern.search(text)
        if found:
            leaks.append(Leak(status, what, found.group(0)))
    return tuple(leaks)


def check_banner_leaks(target: AuditTarget) -> CheckResult:
    name = "leak/banner"
    try:
        talk = Conversation.open(target)
    except ProbeError as exc:
        return CheckResult(name, Status.WARN, f"could not test: {exc}")
    with talk:
        shown: list[tuple[str, Reply]] = [("banner", talk.banner)]
        try:
            shown.append(("EHLO", talk.secure()))
            shown.append(("HELP", talk.command("HELP")))
            talk.command("QUIT")
        except ProbeError as exc:
            if len(shown) < 2:
                return CheckResult(
                    name, Status.WARN, f"could not test: {exc}", tuple(talk.evidence)
                )
        evidence = tuple(talk.evidence)
    found: list[tuple[str, Leak]] = []
    for where, reply in shown:
        for line in reply.lines:
            # The RFC 3463 enhanced code ("2.0.0") looks like a version; it is not one.
            text = _ENHANCED_PREFIX.sub("", line)
            found.extend((where, leak) for leak in find_leaks(text))
    if not found:
        return CheckResult(name, Status.PASS, "no software name or version shown", evidence)
    worst = Status.FAIL if any(leak.status is Status.FAIL for _, leak in found) else Status.WARN
    summary = ", ".join(sorted({f"{leak.what} in {where}: {leak.text!r}" for where, leak in found}))
    return CheckResult(name, worst, summary, evidence)


def check_vrfy_expn(target: AuditTarget, random_user: str) -> CheckResult:
    name = "leak/vrfy-expn"
    try:
        talk = Conversation.open(target)
    except ProbeError as exc:
        return CheckResult(name, Status.WARN, f"could not test: {exc}")
    with talk:
        try:
            talk.secure()
            known = talk.command(f"VRFY {target.effective_local_user}")
            unknown = talk.command(f"VRFY {random_user}")
            expn = talk.command(f"EXPN {target.effective_local_user}")
            talk.command("QUIT")
        except ProbeError as exc:
            return CheckResult(name, Status.WARN, f"could not test: {exc}", tuple(talk.evidence))
        evidence = tuple(talk.evidence)
    problems = []
    if known.code // 100 == 2 and unknown.code // 100 == 5:
        problems.append(f"VRFY tells users apart ({known.code} vs {unknown.code})")
    if expn.code == 250:
        problems.append(f"EXPN answers: {expn.brief()}")
    if problems:
        return CheckResult(name, Status.WARN, "; ".join(problems), evidence)
    return CheckResult(
        name, Status.PASS, f"VRFY {known.code}/{unknown.code}, EXPN {expn.code}", evidence
    )
