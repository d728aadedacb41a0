"""cli.dns_cmd — `postgate dns records|check DOMAIN`: the DNS a mail domain needs.

`records` prints MX, SPF, DKIM, DMARC, MTA-STS and TLS-RPT records ready to paste
into a zone; `check` looks up what is published and prints pass/warn/fail per
check, exiting 1 when anything fails.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
from typing import Any

from postgate.cli.common import CliError, load, print_json
from postgate.cli.dkim_cmd import key_dir, make_resolver
from postgate.config import Config
from postgate.dkim.keys import DkimError, DkimKey, KeyStore
from postgate.dnsrecords.check import CheckReport, check_domain
from postgate.dnsrecords.records import required_records


def register(commands: Any) -> None:
    dns = commands.add_parser("dns", help="DNS records for a mail domain: show and check")
    actions = dns.add_subparsers(dest="dns_command", metavar="ACTION")
    actions.required = True

    records = actions.add_parser(
        "records",
        help="print every record the domain needs, ready for a zone file",
        epilog="example: postgate dns records example.com --address 192.0.2.25",
    )
    _common_options(records)
    records.add_argument("--dmarc-rua", help="DMARC aggregate report address (postmaster@DOMAIN)")
    records.add_argument("--tls-rpt-rua", help="TLS-RPT report address (postmaster@DOMAIN)")
    records.add_argument("--json", action="store_true", help="machine-readable output")
    records.set_defaults(handler=run_records)

    check = actions.add_parser(
        "check",
        help="look up what is published and compare (exit 1 on any failure)",
        epilog="example: postgate dns check example.com --json",
    )
    _common_options(check)
    check.add_argument("--helo", help="HELO name the PTR must match (default: the hostname)")
    check.add_argument(
        "--nameserver",
        action="append",
        default=None,
        help="resolver to ask, ADDRESS[:PORT] (default: delivery.dns_servers)",
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(handler=run_check)


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("domain")
    parser.add_argument(
        "--address",
        action="append",
        default=None,
        help="an IP address this server sends from (repeat; default: configured ones)",
    )
    parser.add_argument("--hostname", help="the MX host name (default: server.hostname)")


def _addresses(args: argparse.Namespace, config: Config) -> list[str]:
    configured = config.delivery.sending_addresses
    addresses = [str(a) for a in (args.address or configured)]
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise CliError(f"not an IP address: {address!r}") from None
    return addresses


def _keys(config: Config, domain: str) -> list[DkimKey]:
    try:
        return KeyStore(key_dir(config)).keys(domain)
    except DkimError as exc:
        raise CliError(str(exc)) from None


def run_records(args: argparse.Namespace) -> int:
    config = load(args)
    plan = required_records(
        args.domain,
        hostname=args.hostname or config.hostname,
        sending_addresses=_addresses(args, config),
        dkim_keys=_keys(config, args.domain),
        dmarc_rua=args.dmarc_rua,
        tls_rpt_rua=args.tls_rpt_rua,
    )
    if args.json:
        print_json(
            {
                "domain": plan.domain,
                "records": [
                    {"name": r.name, "type": r.rtype, "value": r.value, "comment": r.comment}
                    for r in plan.records
                ],
                "mta_sts_policy": plan.mta_sts_policy,
                "notes": list(plan.notes),
            }
        )
        return 0
    print(plan.zone_text(), end="")
    return 0


def run_check(args: argparse.Namespace) -> int:
    config = load(args)
    resolver = make_resolver(config, args.nameserver)
    hostname = args.hostname or config.hostname
    report: CheckReport = asyncio.run(
        check_domain(
            args.domain,
            resolver,
            hostname=hostname,
            sending_addresses=_addresses(args, config),
            dkim_keys=_keys(config, args.domain),
            helo_name=args.helo,
        )
    )
    if args.json:
        print_json(
            {
                "domain": report.domain,
                "failed": report.failed,
                "results": [
                    {"check": r.check, "status": r.status.value, "detail": r.detail, "name": r.name}
                    for r in report.results
                ],
            }
        )
    else:
        width = max(len(r.check) for r in report.results)
        for result in report.results:
            print(f"{result.status.value.upper():4}  {result.check:{width}}  {result.detail}")
    return 1 if report.failed else 0
