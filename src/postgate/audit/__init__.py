"""audit — `postgate audit HOST:PORT`: a penetration test of a live SMTP server.

Open relay tricks, AUTH before TLS, TLS versions and ciphers, STARTTLS injection,
SMTP smuggling, banner and VRFY/EXPN leaks, AUTH lockout. Each check is a function
returning a ``CheckResult`` with the conversation as evidence; ``run_audit`` runs them.
"""

from postgate.audit.model import AuditReport, AuditTarget, CheckResult, Status, TlsMode
from postgate.audit.report import format_table, report_json
from postgate.audit.runner import AuditConnectionError, planned_checks, run_audit

__all__ = [
    "AuditConnectionError",
    "AuditReport",
    "AuditTarget",
    "CheckResult",
    "Status",
    "TlsMode",
    "format_table",
    "planned_checks",
    "report_json",
    "run_audit",
]
