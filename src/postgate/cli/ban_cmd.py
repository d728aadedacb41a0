"""cli.ban_cmd — `postgate ban list|del`: the AUTH lockout bans the server is enforcing.

Opens the same counters store as the server (``auth.lockout_db``, default
``<data_dir>/counters.db``, or a ``redis://`` URL), so a ban lifted here is lifted for
the running server at once. Lifting a ban also clears the failure count behind it, so
the client's next single mistake does not ban it again straight away; lifting an
address ban also frees that address from account bans it had tripped.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
from pathlib import Path
from typing import Any

from postgate.cli.common import CliError, format_time, load, print_json
from postgate.counters import Ban, Counters, CountersError, open_counters
from postgate.policy.lockout import (
    LockoutSettings,
    account_ban_key,
    address_ban_key,
    counters_for_ban,
    pair_counter_key,
)


def register(commands: Any) -> None:
    ban = commands.add_parser(
        "ban",
        help="list or lift AUTH lockout bans",
        epilog="example: postgate ban list --json; postgate ban del 192.0.2.7",
    )
    actions = ban.add_subparsers(dest="ban_command", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser(
        "list", help="list live bans", epilog="example: postgate ban list --json"
    )
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=run_list)
    delete = actions.add_parser(
        "del",
        help="lift a ban",
        epilog="examples: postgate ban del 192.0.2.7 | postgate ban del alice@example.com "
        "| postgate ban del addr:2001:db8::/64",
    )
    delete.add_argument(
        "target", metavar="KEY|ADDRESS", help="an IP address, an account, or a key from `ban list`"
    )
    delete.set_defaults(handler=run_del)
    for action in (listing, delete):
        action.add_argument(
            "--db",
            metavar="LOCATION",
            default=None,
            help="counters file or redis:// URL (default: auth.lockout_db from the config)",
        )


def _location(args: argparse.Namespace) -> str:
    if args.db:
        return str(args.db)
    return str(load(args).auth.lockout_db)


async def _open(location: str) -> Counters | None:
    """None when the SQLite file does not exist yet (no ban was ever set)."""
    if "://" not in location and not Path(location).exists():
        return None
    try:
        return await open_counters(location)
    except CountersError as exc:
        raise CliError(str(exc)) from None


def candidate_keys(target: str, ipv6_prefix_length: int = 64) -> list[str]:
    """The ban keys ``target`` may mean, most specific first."""
    text = target.strip()
    keys = [text]
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        pass
    else:
        keys.append(address_ban_key(text, ipv6_prefix_length))
        keys.append(address_ban_key(text, 128))
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    else:
        if "/" in text:
            keys.append(f"addr:{network}")
    if "@" in text and not text.startswith(("addr:", "acct:")):
        keys.append(account_ban_key(text))
    return list(dict.fromkeys(keys))


async def _forget_failures(counters: Counters, ban_key: str) -> None:
    """Clear the counts behind a lifted ban. For an address, also its marks against
    banned accounts: "let this client in" must not leave it refused by an account ban
    that only applies to addresses that failed for that account."""
    for counter in counters_for_ban(ban_key):
        await counters.reset(counter)
    kind, _, address = ban_key.partition(":")
    if kind != "addr":
        return
    for ban in await counters.bans():
        account_kind, _, account = ban.key.partition(":")
        if account_kind == "acct":
            await counters.reset(pair_counter_key(address, account))


def run_list(args: argparse.Namespace) -> int:
    location = _location(args)

    async def run() -> list[Ban]:
        counters = await _open(location)
        if counters is None:
            return []
        try:
            return await counters.bans()
        except CountersError as exc:
            raise CliError(str(exc)) from None
        finally:
            await counters.close()

    bans = asyncio.run(run())
    if args.json:
        print_json(
            [
                {"key": b.key, "until": b.until, "reason": b.reason, "created_at": b.created_at}
                for b in bans
            ]
        )
        return 0
    for ban in bans:
        print(f"{ban.key}\tuntil {format_time(ban.until)}\t{ban.reason}")
    if not bans:
        print("no bans in force")
    return 0


def run_del(args: argparse.Namespace) -> int:
    location = _location(args)
    keys = candidate_keys(args.target, LockoutSettings().ipv6_prefix_length)

    async def run() -> list[str]:
        counters = await _open(location)
        if counters is None:
            return []
        lifted: list[str] = []
        try:
            for key in keys:
                if await counters.unban(key):
                    lifted.append(key)
                    await _forget_failures(counters, key)
        except CountersError as exc:
            raise CliError(str(exc)) from None
        finally:
            await counters.close()
        return lifted

    lifted = asyncio.run(run())
    if not lifted:
        raise CliError(f"no live ban on {args.target}")
    for key in lifted:
        print(f"lifted {key}")
    return 0
