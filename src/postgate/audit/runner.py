"""audit.runner — which checks an audit runs, in which order, and the report.

SYNOPSIS
    report = run_audit(target, only=("relay/",), progress=callback)
    report.exit_code                      # 0 nothing failed, 1 something failed

DESCRIPTION
    First the target must answer with a 2xx greeting, else AuditConnectionError (the
    CLI turns it into exit code 2). Then every check runs in turn, each on its own
    connections and with its own timeouts. The order puts the lockout check last: a
    server may ban the audit's address along with the account, which would spoil
    every check after it.

    A check that raises something unexpected is reported as WARN with the error, so
    one broken check neither stops the audit nor passes silently.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
from collections.abc import Callable, Sequence

from postgate.audit.leaks import check_banner_leaks, check_vrfy_expn
from postgate.audit.lockout import check_lockout
from postgate.audit.model import AuditReport, AuditTarget, CheckResult, Status
from postgate.audit.relay import PROBES, run_relay_probe
from postgate.audit.smuggling import SMUGGLING_VARIANTS, check_smuggling
from postgate.audit.starttls import (
    check_auth_before_tls,
    check_starttls_injection,
    check_starttls_offered,
)
from postgate.audit.tls_versions import (
    check_modern_versions,
    check_old_version,
    check_weak_ciphers,
)
from postgate.audit.wire import Conversation, ProbeError

Check = Callable[[], CheckResult]
Progress = Callable[[int, int, str], None]


class AuditConnectionError(Exception):
    """The target cannot be audited at all (no connection, no greeting)."""


def planned_checks(target: AuditTarget, token: str) -> list[tuple[str, Check]]:
    """Every check as (name, thunk), in the order they run. ``token`` is the random
    local part used for addresses that must not exist."""
    p = functools.partial
    checks: list[tuple[str, Check]] = [
        ("leak/banner", p(check_banner_leaks, target)),
        ("tls/starttls-offered", p(check_starttls_offered, target)),
        ("auth/before-tls", p(check_auth_before_tls, target)),
        ("tls/1.0", p(check_old_version, target, "TLSv1")),
        ("tls/1.1", p(check_old_version, target, "TLSv1.1")),
        ("tls/modern", p(check_modern_versions, target)),
        ("tls/weak-ciphers", p(check_weak_ciphers, target)),
        ("tls/starttls-injection", p(check_starttls_injection, target)),
    ]
    checks += [
        (f"relay/{probe.name}", p(run_relay_probe, target, probe, token)) for probe in PROBES
    ]
    checks += [
        (f"smuggling/{variant}", p(check_smuggling, target, variant, sequence))
        for variant, sequence in SMUGGLING_VARIANTS
    ]
    checks.append(("leak/vrfy-expn", p(check_vrfy_expn, target, token)))
    checks.append(("auth/lockout", p(check_lockout, target)))
    return checks


def check_reachable(target: AuditTarget) -> str:
    """The greeting line, or AuditConnectionError."""
    try:
        with Conversation.open(target) as talk:
            banner = talk.banner
            with contextlib.suppress(ProbeError):
                talk.command("QUIT")
    except ProbeError as exc:
        raise AuditConnectionError(str(exc)) from None
    if banner.code // 100 != 2:
        raise AuditConnectionError(f"{target.address} refuses service: {banner.brief()}")
    return banner.brief()


def run_audit(
    target: AuditTarget,
    *,
    only: Sequence[str] = (),
    progress: Progress | None = None,
    token: str | None = None,
) -> AuditReport:
    """Run the checks whose names start with one of ``only`` (all when empty)."""
    check_reachable(target)
    token = token or f"pgaudit-{secrets.token_hex(4)}"
    checks = [
        (name, check)
        for name, check in planned_checks(target, token)
        if not only or any(name.startswith(prefix) for prefix in only)
    ]
    results = []
    for number, (name, check) in enumerate(checks, start=1):
        if progress is not None:
            progress(number, len(checks), name)
        try:
            results.append(check())
        except Exception as exc:  # a bug in one check must not end the audit
            results.append(CheckResult(name, Status.WARN, f"check crashed: {exc!r}"))
    return AuditReport(target, tuple(results))
