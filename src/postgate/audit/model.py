"""audit.model — the values an audit is made of: what to test, and what was found.

SYNOPSIS
    target = AuditTarget(host="mx.example.org", port=25, tls_mode=TlsMode.STARTTLS,
                         local_domain="example.org")
    result = CheckResult("relay/plain", Status.PASS, "refused: 554 5.7.1 ...", evidence)
    report = AuditReport(target, (result, ...)); report.exit_code   # 0, or 1 on any FAIL

DESCRIPTION
    Frozen dataclasses and enums only, so the checks, the runner, the report writers
    and the CLI agree on one shape and tests can compare results by value.

    A check ends in one of four states. PASS: the server behaved safely and the
    evidence shows it. FAIL: the evidence shows the weakness. WARN: something worth an
    operator's look that is not proven unsafe (a version-less software name, an address
    the server may treat as a local mailbox name). SKIP: the check could not run
    (nothing to test with, or the client itself cannot test); the summary says why.
    A check that cannot tell never reports PASS.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Status(enum.Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


class TlsMode(enum.Enum):
    """How the target port speaks TLS."""

    PLAIN = "plain"  # plaintext port; STARTTLS is used where a check needs it and it is offered
    STARTTLS = "starttls"  # plaintext port that must offer STARTTLS; probes run after it
    IMPLICIT = "tls"  # TLS from the first byte (RFC 8314, port 465)


@dataclass(frozen=True)
class AuditTarget:
    """What to audit and with which identities. Addresses are plain ``local@domain``."""

    host: str
    port: int
    tls_mode: TlsMode = TlsMode.PLAIN
    local_domain: str | None = None
    local_user: str | None = None
    auth_user: str | None = None
    auth_password: str | None = None
    timeout: float = 10.0
    lockout_attempts: int = 3
    # RFC 2606 reserves .example: nobody can own these, so nothing can ever be relayed
    # to a real third party even if a probe were accepted (no probe sends DATA anyway).
    foreign_domain: str = "relay-test.example"
    origin_domain: str = "audit-origin.example"
    helo_name: str = "audit-client.example"

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def effective_local_domain(self) -> str | None:
        """--local-domain, else the domain of --local-user."""
        if self.local_domain:
            return self.local_domain
        if self.local_user and "@" in self.local_user:
            return self.local_user.rpartition("@")[2]
        return None

    @property
    def effective_local_user(self) -> str:
        """The harmless local recipient: --local-user, else postmaster (RFC 5321 4.5.1
        requires every domain to accept it; the bare form needs no domain)."""
        if self.local_user:
            return self.local_user
        domain = self.effective_local_domain
        return f"postmaster@{domain}" if domain else "Postmaster"


@dataclass(frozen=True)
class CheckResult:
    """One line of the report: a check's verdict, a one-line summary, and the evidence
    (the exact commands sent, ``C:``, and replies received, ``S:``)."""

    name: str
    status: Status
    summary: str
    evidence: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "status": self.status.value,
            "summary": self.summary,
            "evidence": list(self.evidence),
        }


@dataclass(frozen=True)
class AuditReport:
    target: AuditTarget
    results: tuple[CheckResult, ...] = field(default=())

    def count(self, status: Status) -> int:
        return sum(1 for result in self.results if result.status is status)

    @property
    def exit_code(self) -> int:
        """0 when nothing failed (warnings do not fail an audit), 1 otherwise."""
        return 1 if self.count(Status.FAIL) else 0
