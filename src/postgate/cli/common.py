"""cli.common — what every subcommand shares: loading the config, errors, output."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

from postgate.config import Config, ConfigError, load_config


class CliError(Exception):
    """A failure to report as one line, with the exit code to return."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def load(args: argparse.Namespace) -> Config:
    path: Path = args.config
    if not path.exists():
        raise CliError(
            f"{path}: no such configuration file (create one with `postgate init`, "
            "or pass --config)",
            exit_code=2,
        )
    try:
        return load_config(path)
    except ConfigError as exc:
        raise CliError(str(exc), exit_code=2) from None


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def format_time(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")
