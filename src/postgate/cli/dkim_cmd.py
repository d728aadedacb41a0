"""cli.dkim_cmd — `postgate dkim keygen|list|rotate|advance`: DKIM keys and their rotation.

Keys live under <data_dir>/dkim (see dkim.keys). A new key is pending until
`advance` finds its TXT record in DNS; `--activate-now` skips that check.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from postgate.cli.common import CliError, format_time, load, print_json
from postgate.config import Config
from postgate.dkim.keys import Algorithm, DkimError, DkimKey, KeyStore
from postgate.dkim.manager import KeyManager
from postgate.dkim.rotation import (
    DEFAULT_ALGORITHMS,
    DEFAULT_OVERLAP,
    DEFAULT_ROTATION_INTERVAL,
    KeyEvent,
    RotationPolicy,
)
from postgate.dns.resolver import DnsError, Resolver


def register(commands: Any) -> None:
    dkim = commands.add_parser("dkim", help="DKIM signing keys: generate, list, rotate")
    actions = dkim.add_subparsers(dest="dkim_command", metavar="ACTION")
    actions.required = True

    keygen = actions.add_parser(
        "keygen",
        help="generate keys for a domain (pending until their TXT record is in DNS)",
        epilog="example: postgate dkim keygen example.com --algorithms rsa,ed25519",
    )
    keygen.add_argument("domain")
    keygen.add_argument(
        "--selector",
        help="selector to use (default s<YYYYMM>r / s<YYYYMM>e); with several algorithms "
        "the algorithm letter r or e is appended",
    )
    keygen.add_argument(
        "--algorithms", default=None, help="comma-separated: rsa,ed25519 (default both)"
    )
    keygen.add_argument(
        "--activate-now",
        action="store_true",
        help="sign at once, without waiting to see the TXT record in DNS "
        "(only if it is already published, or for tests)",
    )
    keygen.add_argument("--json", action="store_true", help="machine-readable output")
    keygen.set_defaults(handler=run_keygen)

    listing = actions.add_parser(
        "list", help="list keys and their state", epilog="example: postgate dkim list --json"
    )
    listing.add_argument("domain", nargs="?", help="only this domain")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=run_list)

    rotate = actions.add_parser(
        "rotate",
        help="generate the next selectors (pending) for a domain",
        epilog="example: postgate dkim rotate example.com",
    )
    rotate.add_argument("domain")
    rotate.add_argument("--json", action="store_true", help="machine-readable output")
    rotate.set_defaults(handler=run_rotate)

    advance = actions.add_parser(
        "advance",
        help="check DNS now: activate published keys, retire old ones, rotate when due",
        epilog="example: postgate dkim advance example.com",
    )
    advance.add_argument("domain", nargs="?", help="only this domain (default: all)")
    advance.add_argument(
        "--nameserver",
        action="append",
        default=None,
        help="resolver to ask, ADDRESS[:PORT] (default: delivery.dns_servers)",
    )
    advance.add_argument("--json", action="store_true", help="machine-readable output")
    advance.set_defaults(handler=run_advance)


def key_dir(config: Config) -> Path:
    """``dkim.key_dir`` (<data_dir>/dkim by default)."""
    return config.dkim.key_dir if config.dkim is not None else config.data_dir / "dkim"


def rotation_policy(config: Config) -> RotationPolicy:
    """The rotation settings of the ``[dkim]`` section."""
    section = config.dkim
    if section is None:
        return RotationPolicy(
            overlap=DEFAULT_OVERLAP,
            rotation_interval=DEFAULT_ROTATION_INTERVAL,
            algorithms=tuple(Algorithm(str(a).lower()) for a in DEFAULT_ALGORITHMS),
        )
    return RotationPolicy(
        overlap=section.overlap,
        rotation_interval=section.rotation_interval,
        algorithms=tuple(Algorithm(name.lower()) for name in section.algorithms),
    )


def make_resolver(config: Config, nameservers: list[str] | None) -> Resolver:
    try:
        return Resolver(nameservers or config.delivery.dns_servers)
    except (DnsError, ValueError) as exc:
        raise CliError(f"cannot set up DNS: {exc}") from None


def _manager(args: argparse.Namespace) -> KeyManager:
    config = load(args)
    return KeyManager(KeyStore(key_dir(config)), policy=rotation_policy(config), log_events=False)


def key_json(key: DkimKey) -> dict[str, Any]:
    return {
        "domain": key.domain,
        "selector": key.selector,
        "algorithm": key.algorithm.value,
        "signature_algorithm": key.algorithm.signature_algorithm,
        "state": key.state.value,
        "created_at": key.created_at,
        "activated_at": key.activated_at,
        "retire_at": key.retire_at,
        "retired_at": key.retired_at,
        "txt_name": key.txt_name,
        "txt_value": key.txt_value,
    }


def _print_new_keys(keys: list[DkimKey], as_json: bool) -> None:
    if as_json:
        print_json([key_json(k) for k in keys])
        return
    for key in keys:
        print(f"{key.domain}: {key.selector} ({key.algorithm.signature_algorithm}) {key.state}")
    print("\npublish in the zone:")
    for key in keys:
        print(key.txt_record().zone_line())
    if any(k.state.value == "pending" for k in keys):
        print(
            "\nthe keys sign once `postgate dkim advance` sees these records in DNS "
            "(the server checks hourly)"
        )


def run_keygen(args: argparse.Namespace) -> int:
    manager = _manager(args)
    algorithms = args.algorithms.split(",") if args.algorithms else None
    try:
        keys = manager.keygen(
            args.domain, args.selector, algorithms, activate_now=args.activate_now
        )
    except DkimError as exc:
        raise CliError(str(exc)) from None
    _print_new_keys(keys, args.json)
    return 0


def run_rotate(args: argparse.Namespace) -> int:
    manager = _manager(args)
    try:
        keys = manager.rotate(args.domain)
    except DkimError as exc:
        raise CliError(str(exc)) from None
    _print_new_keys(keys, args.json)
    return 0


def run_list(args: argparse.Namespace) -> int:
    store = _manager(args).store
    try:
        domains = [args.domain] if args.domain else store.domains()
        keys = [key for domain in domains for key in store.keys(domain)]
    except DkimError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json([key_json(k) for k in keys])
        return 0
    if not keys:
        print("no DKIM keys (create some with `postgate dkim keygen DOMAIN`)")
        return 0
    print("domain\tselector\talgorithm\tstate\tcreated\tretire at")
    for key in keys:
        print(
            f"{key.domain}\t{key.selector}\t{key.algorithm.signature_algorithm}\t"
            f"{key.state}\t{format_time(key.created_at)}\t{format_time(key.retire_at)}"
        )
    return 0


def run_advance(args: argparse.Namespace) -> int:
    config = load(args)
    manager = KeyManager(
        KeyStore(key_dir(config)), policy=rotation_policy(config), log_events=False
    )
    resolver = make_resolver(config, args.nameserver)

    async def advance() -> list[KeyEvent]:
        if args.domain:
            return await manager.advance(args.domain, resolver)
        return await manager.advance_all(resolver)

    try:
        events = asyncio.run(advance())
    except DkimError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json(
            [
                {
                    "domain": e.domain,
                    "selector": e.selector,
                    "event": e.kind.value,
                    "message": e.message,
                }
                for e in events
            ]
        )
        return 0
    for event in events:
        print(f"{event.domain} {event.selector} {event.kind}: {event.message}")
    if not events:
        print("nothing to do")
    return 0
