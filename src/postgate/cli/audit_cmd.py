"""cli.audit_cmd — `postgate audit HOST:PORT`: probe a live server for weaknesses.

Needs no configuration file: it speaks to the server like any client would. Exit
code 0 when no check failed (warnings do not fail), 1 when one did, 2 when the
arguments are wrong or the server cannot be reached.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from postgate.audit import (
    AuditConnectionError,
    AuditTarget,
    TlsMode,
    format_table,
    report_json,
    run_audit,
)
from postgate.cli.common import CliError, print_json

EPILOG = """\
examples:
  postgate audit mx.example.com:25 --starttls --local-domain example.com
  postgate audit 127.0.0.1:2587 --starttls --local-user postmaster@example.com \\
      --auth-user audit@example.com --auth-password-stdin --json < password.txt
  postgate audit mail.example.com:465 --tls --only relay/ --only tls/

Run it from OUTSIDE the server's trusted networks, or the relay checks test nothing.
Smuggling probes deliver a few harmless messages to --local-user (default postmaster);
no probe ever sends a message to a foreign recipient. --auth-user must be an account
made for the audit: the lockout check locks it.
"""


def register(commands: Any) -> None:
    audit = commands.add_parser(
        "audit",
        help="penetration-test a live SMTP server (relay, TLS, AUTH, smuggling, leaks)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    audit.add_argument("target", metavar="HOST:PORT", help="server to audit ([v6]:port for IPv6)")
    mode = audit.add_mutually_exclusive_group()
    mode.add_argument(
        "--starttls",
        action="store_true",
        help="the port must offer STARTTLS; probes run after it",
    )
    mode.add_argument("--tls", action="store_true", help="implicit TLS port (e.g. 465)")
    audit.add_argument("--local-domain", metavar="D", help="a domain the server receives for")
    audit.add_argument(
        "--local-user", metavar="ADDR", help="harmless local recipient (default postmaster@D)"
    )
    audit.add_argument("--auth-user", metavar="U", help="account for the lockout check")
    password = audit.add_mutually_exclusive_group()
    password.add_argument("--auth-password", metavar="P", help="its password")
    password.add_argument(
        "--auth-password-stdin", action="store_true", help="read its password from stdin"
    )
    audit.add_argument(
        "--lockout-attempts",
        type=int,
        default=3,
        metavar="N",
        help="wrong passwords the server should tolerate before locking (default 3)",
    )
    audit.add_argument(
        "--foreign-domain",
        default="relay-test.example",
        metavar="D",
        help="recipient domain for relay probes (default relay-test.example)",
    )
    audit.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="seconds per reply (default 10)"
    )
    audit.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PREFIX",
        help="run only checks whose name starts with PREFIX (repeatable), e.g. relay/",
    )
    audit.add_argument("--brief", action="store_true", help="table without the evidence")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.set_defaults(handler=run)


def parse_target(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if sep and rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise CliError(f"{text!r}: expected HOST:PORT, e.g. mx.example.com:25", exit_code=2)
    return host, int(port_text)


def build_target(args: argparse.Namespace) -> AuditTarget:
    host, port = parse_target(args.target)
    if args.timeout <= 0 or args.lockout_attempts < 1:
        raise CliError("--timeout and --lockout-attempts must be positive", exit_code=2)
    password = args.auth_password
    if args.auth_password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    if password and not args.auth_user:
        raise CliError("--auth-password needs --auth-user", exit_code=2)
    mode = TlsMode.STARTTLS if args.starttls else TlsMode.IMPLICIT if args.tls else TlsMode.PLAIN
    return AuditTarget(
        host=host,
        port=port,
        tls_mode=mode,
        local_domain=args.local_domain,
        local_user=args.local_user,
        auth_user=args.auth_user,
        auth_password=password or None,
        timeout=args.timeout,
        lockout_attempts=args.lockout_attempts,
        foreign_domain=args.foreign_domain,
    )


def _progress(number: int, total: int, name: str) -> None:
    sys.stderr.write(f"\r\x1b[K[{number}/{total}] {name}")
    if number == total:
        sys.stderr.write("\r\x1b[K")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    target = build_target(args)
    progress = _progress if sys.stderr.isatty() else None
    try:
        report = run_audit(target, only=tuple(args.only), progress=progress)
    except AuditConnectionError as exc:
        raise CliError(str(exc), exit_code=2) from None
    if args.json:
        print_json(report_json(report))
    else:
        print(format_table(report, evidence=not args.brief))
    return report.exit_code
