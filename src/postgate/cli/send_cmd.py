"""cli.send_cmd — `postgate send`: a swaks-like client for testing a mail server.

Speaks to any SMTP server (ours or not) with our own client, prints the dialogue,
and exits 0 only when the message was accepted for every recipient.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import secrets
import socket
import ssl
import sys
import time
from pathlib import Path
from typing import Any

from postgate.cli.common import CliError
from postgate.delivery.smtp_client import SmtpClient, SmtpClientError

EPILOG = """examples:
  postgate send --server 127.0.0.1:2587 --starttls --auth-user admin@localhost \\
      --auth-password PW --from admin@localhost --to admin@localhost
  postgate send --server mx.example.com:25 --to someone@example.com --header "Subject: hi"
  postgate send --server 127.0.0.1:2465 --tls --auth-user u --auth-password-file pw.txt \\
      --from u@example.com --to a@example.org --body @message.txt
"""


def register(commands: Any) -> None:
    send = commands.add_parser(
        "send",
        help="send a test message to a server and print the SMTP dialogue",
        description="Send one message with our SMTP client and show what was said. "
        "Does not need a configuration file.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    send.add_argument("--server", "-s", required=True, help="HOST:PORT (port default 25)")
    send.add_argument("--to", "-t", action="append", required=True, help="recipient (repeatable)")
    send.add_argument("--from", "-f", dest="sender", default=None, help="envelope sender")
    tls = send.add_mutually_exclusive_group()
    tls.add_argument("--starttls", action="store_true", help="require STARTTLS")
    tls.add_argument("--tls", action="store_true", help="implicit TLS (port 465 style)")
    send.add_argument("--verify", action="store_true", help="verify the server certificate")
    send.add_argument("--auth-user", help="AUTH user name")
    password = send.add_mutually_exclusive_group()
    password.add_argument("--auth-password", help="AUTH password (visible in ps: prefer a file)")
    password.add_argument("--auth-password-file", help="file whose first line is the password")
    send.add_argument("--auth-mechanism", default="PLAIN", choices=["PLAIN", "LOGIN"])
    send.add_argument("--header", "-H", action="append", default=[], help='"Name: value"')
    send.add_argument(
        "--body",
        default="This is a test message sent by postgate send.",
        help="body text, or @FILE for a whole message file (headers included)",
    )
    send.add_argument("--helo", default=None, help="name to use in EHLO (default: this host)")
    send.add_argument("--timeout", type=float, default=30.0, help="seconds per reply")
    send.add_argument("--quiet", "-q", action="store_true", help="print only the outcome")
    send.set_defaults(handler=run_send)


def _server(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or host.endswith(":") or (":" in host and not host.startswith("[")):
        return text.strip("[]"), 25
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise CliError(f"--server: expected HOST:PORT, got {text!r}") from None


def build_message(args: argparse.Namespace, sender: str, helo: str) -> bytes:
    if args.body.startswith("@"):
        try:
            return Path(str(args.body[1:])).read_bytes()
        except OSError as exc:
            raise CliError(f"--body: {args.body[1:]}: {exc.strerror or exc}") from None
    headers: dict[str, str] = {}
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip() or "\n" in item or "\r" in item:
            raise CliError(f"--header: expected 'Name: value', got {item!r}")
        headers[name.strip()] = value.strip()
    defaults = {
        "From": sender or f"postgate-send@{helo}",
        "To": ", ".join(args.to),
        "Subject": f"test {email.utils.formatdate(localtime=True)}",
        "Date": email.utils.formatdate(localtime=True),
        "Message-ID": f"<{secrets.token_hex(8)}.postgate-send@{helo}>",
    }
    lowered = {name.lower() for name in headers}
    lines = [f"{name}: {value}" for name, value in defaults.items() if name.lower() not in lowered]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    body = str(args.body).replace("\r\n", "\n").replace("\n", "\r\n")
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode("utf-8")


def _password(args: argparse.Namespace) -> str | None:
    if args.auth_password_file:
        try:
            with open(args.auth_password_file, encoding="utf-8") as handle:
                return handle.readline().rstrip("\r\n")
        except OSError as exc:
            raise CliError(f"--auth-password-file: {exc.strerror or exc}") from None
    password: str | None = args.auth_password
    return password


def _context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _send(args: argparse.Namespace) -> int:
    host, port = _server(args.server)
    helo = args.helo or socket.getfqdn()
    sender = args.sender if args.sender is not None else f"postgate-send@{helo}"
    password = _password(args)
    if args.auth_user and password is None:
        raise CliError("--auth-user needs --auth-password or --auth-password-file")
    started = time.monotonic()

    def trace(direction: str, line: str) -> None:
        if not args.quiet:
            print(f"{direction} {line}")

    if not args.quiet:
        print(f"=== connecting to {host}:{port}{' (implicit TLS)' if args.tls else ''}")
    try:
        client = await SmtpClient.connect(
            host,
            port,
            local_hostname=helo,
            timeout=args.timeout,
            tls_context=_context(args.verify) if args.tls else None,
            implicit_tls=args.tls,
            server_hostname=host,
            trace=trace,
        )
    except SmtpClientError as exc:
        raise CliError(str(exc)) from None
    try:
        if args.starttls:
            if "STARTTLS" not in client.extensions:
                raise CliError("the server does not offer STARTTLS")
            await client.starttls(_context(args.verify), host)
            if not args.quiet:
                print(f"=== TLS started: {client.tls_version}")
        if args.auth_user:
            reply = await client.auth(args.auth_mechanism, args.auth_user, password or "")
            if reply.code != 235:
                raise CliError(f"authentication failed: {reply}")
        message = build_message(args, sender, helo)
        result = await client.send_transaction(sender, [(r, "") for r in args.to], message)
        await client.quit()
    except SmtpClientError as exc:
        raise CliError(str(exc)) from None
    finally:
        client.close()
    refused = [
        (rcpt, reply)
        for rcpt, reply in zip(args.to, result.recipient_outcomes(), strict=True)
        if not reply.is_positive
    ]
    elapsed = time.monotonic() - started
    for rcpt, reply in refused:
        print(f"refused: {rcpt}: {reply}", file=sys.stderr)
    if refused:
        return 1
    print(f"=== accepted in {elapsed:.3f}s: {result.final_reply}")
    return 0


def run_send(args: argparse.Namespace) -> int:
    return asyncio.run(_send(args))
