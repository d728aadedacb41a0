"""audit.report — the audit as a table for people or JSON for programs.

SYNOPSIS
    print(format_table(report))              # one row per check, evidence indented
    print_json(report_json(report))

DESCRIPTION
    The table is meant to be pasted into a ticket: status, check name and summary on
    one line, then the exact conversation (``C:`` sent, ``S:`` received, ``--`` what
    the audit noticed) indented below, then the totals. JSON carries the same fields.
"""

from __future__ import annotations

from postgate.audit.model import AuditReport, Status

_ORDER = (Status.FAIL, Status.WARN, Status.PASS, Status.SKIP)


def totals(report: AuditReport) -> str:
    return ", ".join(f"{report.count(status)} {status.value}" for status in _ORDER)


def format_table(report: AuditReport, *, evidence: bool = True) -> str:
    width = max((len(result.name) for result in report.results), default=10)
    lines = [f"postgate audit {report.target.address} ({report.target.tls_mode.value})", ""]
    for result in report.results:
        lines.append(f"{result.status.value.upper():<5} {result.name:<{width}}  {result.summary}")
        if evidence:
            lines.extend(f"{'':6}{line}" for line in result.evidence)
    lines += ["", f"{len(report.results)} checks: {totals(report)}"]
    verdict = "FAILED" if report.exit_code else "passed (warnings do not fail an audit)"
    lines.append(f"audit {verdict}")
    return "\n".join(lines)


def report_json(report: AuditReport) -> dict[str, object]:
    target = report.target
    return {
        "target": target.address,
        "tls_mode": target.tls_mode.value,
        "local_domain": target.effective_local_domain,
        "local_user": target.effective_local_user,
        "results": [result.to_json() for result in report.results],
        "counts": {status.value: report.count(status) for status in _ORDER},
        "exit_code": report.exit_code,
    }
