"""config.render — Config back into TOML text.

SYNOPSIS
    effective_config_lines(config) -> list[str]      # `postgate config check`
    default_config_text(hostname=..., data_dir=..., local_domains=[...],
                        ports=(25, 587, 465), cert_file=..., key_file=...) -> str
    toml_value(raw) -> str

DESCRIPTION
    effective_config_lines shows every key with the value in force, defaults
    included, as TOML that parses back to the same Config; keys that are unset
    (None) are shown as comments. default_config_text writes the commented starter
    file `postgate init` installs: the given values set, every other key present
    but commented out at its default, each under its one-line reason from
    config.model. Both are driven by config.model.SECTIONS, so a new key shows up
    in both without touching this module.

SEE ALSO
    config.model, config.parse
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from postgate.config.model import SECTIONS, Config, Section, ServerSection, key_spec
from postgate.config.parse import parse_config


def toml_value(raw: object) -> str:
    """A TOML literal for a str, int, float, bool, Path, enum, list or mapping."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float):
        return repr(raw)
    if isinstance(raw, str | Path):
        # JSON string escapes are a subset of TOML basic-string escapes.
        return json.dumps(str(raw), ensure_ascii=False)
    if isinstance(raw, Mapping):
        if not raw:
            return "{}"
        pairs = ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in raw.items())
        return "{ " + pairs + " }"
    if isinstance(raw, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in raw) + "]"
    return toml_value(str(raw))


def rendered_value(section: Section, key: str, value: object) -> str:
    """How ``value`` of ``section.key`` is written in TOML ("5m", not 300.0)."""
    spec = key_spec(next(f for f in fields(section.keys) if f.name == key))
    if spec.to_toml is not None:
        value = spec.to_toml(value)
    elif isinstance(value, tuple):
        value = list(value)
    return toml_value(value)


def _instances(config: Config, section: Section) -> list[Any]:
    if section.name == "server":
        return [
            ServerSection(
                hostname=config.hostname, data_dir=config.data_dir, workers=config.workers
            )
        ]
    if section.array:
        return list(config.listeners)
    value = getattr(config, section.name)
    return [] if value is None else [value]


def _table_lines(
    section: Section,
    instance: Any,
    *,
    active: Callable[[str], bool],
    with_docs: bool,
) -> list[str]:
    header = f"[[{section.name}]]" if section.array else f"[{section.name}]"
    lines = [header]
    for f in fields(section.keys):
        value = getattr(instance, f.name)
        if with_docs:
            lines.append(f"# {key_spec(f).doc}.")
        if value is None:
            lines.append(f"# {f.name} = (not set)")
            continue
        line = f"{f.name} = {rendered_value(section, f.name, value)}"
        lines.append(line if active(f.name) else f"# {line}")
    return lines


def effective_config_lines(config: Config) -> list[str]:
    """Every key = its effective value, section by section, as parseable TOML."""
    out: list[str] = []
    for section in SECTIONS:
        instances = _instances(config, section)
        if not instances:
            out += [f"# [{section.name}] is not set", ""]
        for instance in instances:
            out += [*_table_lines(section, instance, active=lambda key: True, with_docs=False), ""]
    return out[:-1] if out and out[-1] == "" else out


_STARTER_HEADER = """\
# postgate configuration. Every key is shown: the ones set here were chosen by
# `postgate init`; the commented ones are at their default, which is the safe
# choice. The full reference is docs/configuration.md.
# `postgate config check` validates this file and prints the effective values.
"""


def default_config_text(
    *,
    hostname: str,
    data_dir: Path,
    local_domains: Sequence[str],
    ports: tuple[int, int, int],
    cert_file: Path,
    key_file: Path,
) -> str:
    """A commented starter file; ``ports`` are the mx, submission and submissions
    ports. Raises ConfigError if a value is invalid (e.g. a bad hostname)."""
    mx, submission, submissions = ports
    chosen = "\n".join(
        [
            "[server]",
            f"hostname = {toml_value(hostname)}",
            f"data_dir = {toml_value(data_dir)}",
            *(
                f'[[listener]]\nname = "{role}"\nrole = "{role}"\nport = {number}'
                for role, number in (
                    ("mx", mx),
                    ("submission", submission),
                    ("submissions", submissions),
                )
            ),
            "[tls]",
            f"cert_file = {toml_value(cert_file)}",
            f"key_file = {toml_value(key_file)}",
            "[routing]",
            f"local_domains = {toml_value(list(local_domains))}",
        ]
    )
    # Relative paths stay relative (base "."), so they resolve against the
    # directory the starter file is written to, as any other relative path would.
    config = parse_config(chosen, source="<default_config_text>", base_dir=Path("."))
    active = {
        "server": {"hostname", "data_dir"},
        "listener": {"name", "role", "port"},
        "tls": {"cert_file", "key_file"},
        "routing": {"local_domains"},
    }
    out = [_STARTER_HEADER]
    for section in SECTIONS:
        keys = active.get(section.name, set())
        for i, instance in enumerate(_instances(config, section)):
            # The reasons once per section: three identical [[listener]] blocks of
            # comments would bury the ports.
            out += _table_lines(section, instance, active=keys.__contains__, with_docs=i == 0)
            out.append("")
    return "\n".join(out)
