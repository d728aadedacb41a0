"""cli.config_cmd — `postgate config check`: validate the file, print effective values."""

from __future__ import annotations

import argparse
from typing import Any

from postgate.cli.common import CliError, load
from postgate.config import effective_config_lines, validate_files


def register(commands: Any) -> None:
    config = commands.add_parser("config", help="check the configuration file")
    actions = config.add_subparsers(dest="config_command", metavar="ACTION")
    actions.required = True
    check = actions.add_parser(
        "check",
        help="validate the file and print every effective value",
        description="Parse and validate the configuration, check that the files it names "
        "are readable, and print every key with its effective value (defaults included).",
        epilog="example: postgate --config /etc/postgate/postgate.toml config check",
    )
    check.add_argument("--quiet", "-q", action="store_true", help="only report problems")
    check.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    config = load(args)
    problems = validate_files(config)
    if not args.quiet:
        for line in effective_config_lines(config):
            print(line)
    if problems:
        raise CliError("; ".join(problems), exit_code=2)
    if not args.quiet:
        print(f"# {args.config}: ok")
    return 0
