"""cli.users_cmd — `postgate user add|passwd|del|list`: the local user store."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from postgate.accounts import AccountError, UserStore, generate_password
from postgate.cli.common import CliError, format_time, load, print_json

# Online guessing is throttled by the lockout, but a short password falls to a
# leaked hash at once; NIST SP 800-63B asks for at least 8 characters.
MIN_PASSWORD_LENGTH = 8


def register(commands: Any) -> None:
    user = commands.add_parser("user", help="manage local users (mailboxes that can log in)")
    actions = user.add_subparsers(dest="user_command", metavar="ACTION")
    actions.required = True
    for name, help_text, handler in (
        ("add", "create a user", run_add),
        ("passwd", "set a user's password", run_passwd),
    ):
        action = actions.add_parser(
            name,
            help=help_text,
            epilog=f"example: postgate user {name} alice@example.com --generate",
        )
        action.add_argument("address")
        source = action.add_mutually_exclusive_group()
        source.add_argument(
            "--password-stdin", action="store_true", help="read the password from stdin"
        )
        source.add_argument(
            "--generate", action="store_true", help="generate a random password and print it"
        )
        action.set_defaults(handler=handler)
    delete = actions.add_parser(
        "del", help="delete a user", epilog="example: postgate user del alice@example.com"
    )
    delete.add_argument("address")
    delete.set_defaults(handler=run_del)
    listing = actions.add_parser(
        "list", help="list users", epilog="example: postgate user list --json"
    )
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=run_list)


def _open(args: argparse.Namespace) -> tuple[UserStore, bool, tuple[str, ...]]:
    """The user store, whether CRAM-MD5 secrets must be kept (the mechanism is on),
    and the local domains."""
    config = load(args)
    config.auth.user_db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    users = UserStore.open(config.auth.user_db, scram_iterations=config.auth.scram_iterations)
    return users, "CRAM-MD5" in config.auth.mechanisms, config.routing.local_domains


def _read_password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password and whether we made it up (then it must be shown)."""
    if args.generate:
        return generate_password(), True
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise CliError("no terminal to ask for a password: use --password-stdin or --generate")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise CliError("the passwords differ")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise CliError(
            f"password refused: shorter than {MIN_PASSWORD_LENGTH} characters "
            "(use --generate for a strong one)"
        )
    return password, False


def _change(args: argparse.Namespace, *, create: bool) -> int:
    password, generated = _read_password(args)
    users, cram_md5, local_domains = _open(args)
    domain = args.address.rpartition("@")[2].lower()
    if create and domain and domain not in local_domains:
        print(
            f"warning: {domain} is not in routing.local_domains: this user can log in and "
            "send, but no mail for it is accepted here",
            file=sys.stderr,
        )
    try:
        if create:
            users.add(args.address, password, cram_md5=cram_md5)
        else:
            users.set_password(args.address, password, cram_md5=cram_md5)
    except AccountError as exc:
        raise CliError(str(exc)) from None
    finally:
        users.close()
    verb = "created" if create else "password changed for"
    print(f"{verb} {args.address}" + (f" (password: {password})" if generated else ""))
    return 0


def run_add(args: argparse.Namespace) -> int:
    return _change(args, create=True)


def run_passwd(args: argparse.Namespace) -> int:
    return _change(args, create=False)


def run_del(args: argparse.Namespace) -> int:
    users, _, _ = _open(args)
    try:
        users.delete(args.address)
    except AccountError as exc:
        raise CliError(str(exc)) from None
    finally:
        users.close()
    print(f"deleted {args.address}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    users, _, _ = _open(args)
    try:
        accounts = users.list()
    finally:
        users.close()
    if args.json:
        print_json(
            [
                {"address": a.address, "created_at": a.created_at, "disabled": a.disabled}
                for a in accounts
            ]
        )
        return 0
    for account in accounts:
        flag = " (disabled)" if account.disabled else ""
        print(f"{account.address}\t{format_time(account.created_at)}{flag}")
    return 0
