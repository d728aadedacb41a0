"""cli.main — the `postgate` command: argument parsing and dispatch only.

Each subcommand lives in its own module (cli/serve.py, cli/users.py, cli/queue.py);
every handler returns an exit code and reports failures as one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from postgate import __version__
from postgate.cli import (
    audit_cmd,
    ban_cmd,
    config_cmd,
    dkim_cmd,
    dns_cmd,
    queue_cmd,
    send_cmd,
    serve,
    users_cmd,
)
from postgate.cli.common import CliError

DEFAULT_CONFIG_LOCATIONS = (Path("postgate.toml"), Path("/etc/postgate/postgate.toml"))


def default_config_path() -> Path:
    env = os.environ.get("POSTGATE_CONFIG")
    if env:
        return Path(env)
    for candidate in DEFAULT_CONFIG_LOCATIONS:
        if candidate.exists():
            return candidate
    return DEFAULT_CONFIG_LOCATIONS[-1]


EPILOG = """examples:
  postgate init --dir ./var                 write a starter config, certificate and first user
  postgate serve --config ./var/postgate.toml
  postgate user add alice@example.com       (asks for the password)
  postgate queue list --json
  postgate qshape deferred
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="postgate",
        description="postgate: a mail server in one program.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"postgate {__version__}")
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        help="configuration file (default: $POSTGATE_CONFIG, ./postgate.toml, "
        "/etc/postgate/postgate.toml)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    serve.register(commands)
    config_cmd.register(commands)
    users_cmd.register(commands)
    queue_cmd.register(commands)
    send_cmd.register(commands)
    ban_cmd.register(commands)
    audit_cmd.register(commands)
    dkim_cmd.register(commands)
    dns_cmd.register(commands)
    _accept_config_everywhere(parser)
    return parser


def _accept_config_everywhere(parser: argparse.ArgumentParser) -> None:
    """Let `--config` also follow the subcommand (`postgate serve --config F`), as
    systemd units and muscle memory write it; SUPPRESS keeps the top-level value
    when the subcommand does not repeat it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if not any("--config" in a.option_strings for a in sub._actions):
                    sub.add_argument(
                        "--config",
                        "-c",
                        type=Path,
                        default=argparse.SUPPRESS,
                        help="configuration file (same as before the subcommand)",
                    )
                _accept_config_everywhere(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.config_given = args.config is not None
    if args.config is None:
        args.config = default_config_path()
    try:
        code: int = args.handler(args)
    except CliError as exc:
        print(f"postgate: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `postgate ... | head`: the reader left; that is not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
