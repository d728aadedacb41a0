"""cli.main — the `postgate` command: argument parsing and dispatch only.

Each subcommand lives in its own module (cli/serve.py, cli/users.py, cli/queue.py);
every handler returns an exit code and reports failures as one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from postgate import __version__
from postgate.cli.common import CliError

# The modules defining the subcommands, in the order `postgate --help` lists them, and
# which one defines each command word. A command imports only its own module:
# `serve` pulls in the whole server (half a second of imports), and an operator's
# `postgate queue release` should not wait for that, nor should the mail it releases.
COMMAND_MODULES = (
    "serve",
    "config_cmd",
    "users_cmd",
    "queue_cmd",
    "send_cmd",
    "ban_cmd",
    "audit_cmd",
    "dkim_cmd",
    "dns_cmd",
)
MODULE_OF_COMMAND = {
    "init": "serve",
    "serve": "serve",
    "config": "config_cmd",
    "user": "users_cmd",
    "queue": "queue_cmd",
    "qshape": "queue_cmd",
    "send": "send_cmd",
    "ban": "ban_cmd",
    "audit": "audit_cmd",
    "dkim": "dkim_cmd",
    "dns": "dns_cmd",
}

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


def command_word(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is no option or option value)."""
    expect_value = False
    for arg in argv:
        if expect_value:
            expect_value = False
        elif arg in ("--config", "-c"):
            expect_value = True
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``argv`` only the part its command needs (an unknown
    or missing command gets the whole parser, for the usage message)."""
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
    module = MODULE_OF_COMMAND.get(command_word(argv or ()) or "")
    for name in (module,) if module else COMMAND_MODULES:
        importlib.import_module(f"postgate.cli.{name}").register(commands)
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
    if argv is None:
        argv = sys.argv[1:]
    if command_word(argv) == "serve":
        # Before anything slow: a SIGHUP while the server starts has nothing to reload
        # yet, and its default action would end us (the server installs its own).
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    parser = build_parser(argv)
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
