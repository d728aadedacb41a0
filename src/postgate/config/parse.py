"""config.parse — one TOML file into a validated Config.

SYNOPSIS
    config = load_config(Path("/etc/postgate/postgate.toml"))
    config = parse_config(text, source="postgate.toml", base_dir=Path("/etc/postgate"))

DESCRIPTION
    Reads the file with tomllib, then reads every section through the key
    definitions in config.model: unknown sections and unknown keys are errors (a
    typo must not silently leave a default in force), each value goes through its
    parser, missing keys take their defaults. Then the checks that span keys:
    listener names and ports unique, TLS present when a listener needs it, catch-all
    domains local, AUTH mechanisms present when submission is on.

    Nothing touches the filesystem except reading the file itself; whether the
    certificate and other files exist is config.check's job, at server start.

DIAGNOSTICS
    ConfigError carrying every problem found, sorted by line, each naming the file,
    line, dotted key and reason:
        postgate.toml:12: limits.max_recipients: must be a positive integer, got -3
    TOML syntax errors carry tomllib's own message.

SEE ALSO
    config.model, config.locate, config.check, docs/configuration.md
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from postgate.config.locate import KeyLines
from postgate.config.model import (
    DEFAULT_LISTENERS,
    SECTIONS,
    Config,
    ConfigError,
    ConfigProblem,
    ListenerConfig,
    RoutingConfig,
    Section,
    ServerSection,
    key_spec,
)
from postgate.config.values import EntryError, ValueEnv


@dataclass
class _Reader:
    """State of one parse: the text's line index and the problems found so far.
    Lives only for the duration of one parse_config call."""

    source: str
    lines: KeyLines
    problems: list[ConfigProblem] = field(default_factory=list)

    def problem(self, key: tuple[str, ...], reason: str, *, index: int = -1) -> None:
        name = ".".join(_quote(part) for part in key)
        self.problems.append(ConfigProblem(self.source, self.lines.find(key, index), name, reason))


def _quote(part: str) -> str:
    return part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'


def load_config(path: Path) -> Config:
    """Read and parse ``path``; relative paths inside resolve against its directory."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), None, "", exc.strerror or str(exc))]) from None
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise ConfigError([ConfigProblem(str(path), None, "", reason)]) from None
    config = parse_config(text, source=str(path), base_dir=path.absolute().parent)
    return _with_source(config, path.absolute())


def _with_source(config: Config, source: Path) -> Config:
    values = {f.name: getattr(config, f.name) for f in fields(config)}
    return Config(**(values | {"source": source}))


def parse_config(text: str, *, source: str = "<string>", base_dir: Path) -> Config:
    """Parse TOML ``text``; ``source`` names it in errors. Raises ConfigError."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+)", str(exc))
        line = int(found.group(1)) if found else None
        raise ConfigError([ConfigProblem(source, line, "", f"invalid TOML: {exc}")]) from None
    reader = _Reader(source, KeyLines(text))
    config = _read_document(reader, document, base_dir)
    if reader.problems or config is None:
        ordered = sorted(reader.problems, key=lambda p: (p.line is None, p.line or 0))
        raise ConfigError(ordered)
    return config


def _read_document(reader: _Reader, document: Mapping[str, Any], base_dir: Path) -> Config | None:
    by_name = {s.name: s for s in SECTIONS}
    for name in document:
        if name not in by_name:
            reader.problem((name,), _unknown("section", name, by_name, _top_level_hint(name)))

    env = ValueEnv(base_dir=base_dir, data_dir=Path("/var/lib/postgate"))
    server = _read_section(reader, by_name["server"], document, env)
    if isinstance(server, ServerSection):
        env = ValueEnv(base_dir=base_dir, data_dir=server.data_dir)
    read = {s.name: _read_section(reader, s, document, env) for s in SECTIONS[1:]}

    listeners = read["listener"]
    if listeners is not None:
        _check_listeners(reader, listeners)
        if "tls" not in document:  # a [tls] with problems has been reported already
            _check_tls_needed(reader, listeners)
        _check_auth_mechanisms(reader, listeners, read["auth"])
    routing = read["routing"]
    if isinstance(routing, RoutingConfig):
        _check_routing(reader, routing)
    if reader.problems or not isinstance(server, ServerSection):
        return None
    return Config(
        hostname=server.hostname,
        data_dir=server.data_dir,
        listeners=read["listener"],
        tls=read["tls"],
        limits=read["limits"],
        routing=read["routing"],
        queue=read["queue"],
        delivery=read["delivery"],
        auth=read["auth"],
        log=read["log"],
        source=None,
        dkim=read["dkim"],
        mailauth=read["mailauth"],
        workers=server.workers,
    )


def _top_level_hint(name: str) -> str:
    for section in SECTIONS:
        if name in {f.name for f in fields(section.keys)}:
            return f"; did you mean {section.name}.{name} (under [{section.name}])?"
    return ""


def _unknown(what: str, name: str, known: Mapping[str, object], hint: str = "") -> str:
    if not hint:
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown {what}{hint}"


def _read_section(
    reader: _Reader, section: Section, document: Mapping[str, Any], env: ValueEnv
) -> Any:
    """The section's dataclass (or tuple of them for [[array]] sections, or None for
    an absent optional one); None also when it had problems (already recorded)."""
    raw = document.get(section.name)
    if section.array:
        if raw is None:
            return DEFAULT_LISTENERS
        if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
            reader.problem((section.name,), f"must be tables written as [[{section.name}]]")
            return None
        if not raw:
            reader.problem((section.name,), "at least one is needed")
            return None
        items = [_read_table(reader, section, t, env, index=i) for i, t in enumerate(raw)]
        return None if any(item is None for item in items) else tuple(items)
    if raw is None and section.optional:
        return None
    if not isinstance(raw, dict | None):
        reader.problem((section.name,), f"must be a table written as [{section.name}]")
        return None
    return _read_table(reader, section, raw or {}, env, index=-1)


def _read_table(
    reader: _Reader, section: Section, table: Mapping[str, Any], env: ValueEnv, *, index: int
) -> Any:
    key_fields = {f.name: f for f in fields(section.keys)}
    before = len(reader.problems)
    for name in table:
        if name not in key_fields:
            reader.problem((section.name, name), _unknown("key", name, key_fields), index=index)
    parsed: dict[str, Any] = {}
    for name, f in key_fields.items():
        if name not in table:
            continue
        try:
            parsed[name] = key_spec(f).parse(table[name], env)
        except EntryError as exc:
            reader.problem((section.name, name, exc.entry), str(exc), index=index)
        except ValueError as exc:
            reader.problem((section.name, name), str(exc), index=index)
    # Defaults second: some depend on keys given in the table (a listener's port on
    # its role), so those must be parsed first.
    for name, f in key_fields.items():
        if name in table:
            continue
        spec = key_spec(f)
        if spec.default_from is not None:
            try:
                parsed[name] = spec.default_from(env, parsed)
            except KeyError:
                pass  # depends on a key that failed; that problem is already recorded
            except ValueError as exc:
                reader.problem((section.name, name), str(exc), index=index)
        elif f.default is MISSING and f.default_factory is MISSING:
            reader.problem((section.name, name), "required but not set", index=index)
    if len(reader.problems) > before:
        return None
    return section.keys(**parsed)


def _check_listeners(reader: _Reader, listeners: tuple[ListenerConfig, ...]) -> None:
    names: dict[str, int] = {}
    for i, listener in enumerate(listeners):
        if listener.name in names:
            first = listeners[names[listener.name]]
            reason = f"{listener.name!r} is already the name of the listener on port {first.port}"
            reader.problem(("listener", "name"), reason, index=i)
        names.setdefault(listener.name, i)
        for earlier in listeners[:i]:
            if earlier.port == listener.port and _overlap(earlier.address, listener.address):
                reason = (
                    f"port {listener.port} on {listener.address} is already used by "
                    f"listener {earlier.name!r} on {earlier.address}"
                )
                reader.problem(("listener", "port"), reason, index=i)
                break


def _overlap(a: str, b: str) -> bool:
    """Whether two bind addresses collide on one port. A wildcard covers its own
    family only: asyncio sets IPV6_V6ONLY, so "::" and "0.0.0.0" can share a port."""
    first, second = ipaddress.ip_address(a), ipaddress.ip_address(b)
    if first.version != second.version:
        return False
    return first == second or first.is_unspecified or second.is_unspecified


def _check_tls_needed(reader: _Reader, listeners: tuple[ListenerConfig, ...]) -> None:
    for i, listener in enumerate(listeners):
        if listener.role.requires_tls:
            reason = (
                f"listener {listener.name!r} (role {listener.role}) needs TLS, but there is no "
                "[tls] section with cert_file and key_file"
            )
            reader.problem(("listener", "role"), reason, index=i)
            return


def _check_auth_mechanisms(
    reader: _Reader, listeners: tuple[ListenerConfig, ...], auth: Any
) -> None:
    if auth is None:
        return
    token_mechanisms = {"XOAUTH2", "OAUTHBEARER"} & set(auth.mechanisms)
    if token_mechanisms and (auth.oauth_jwks is None or auth.oauth_audience is None):
        names = " and ".join(sorted(token_mechanisms))
        reason = f"{names} need auth.oauth_jwks and auth.oauth_audience to check tokens"
        reader.problem(("auth", "mechanisms"), reason)
    if auth.mechanisms:
        return
    if any(listener.role.requires_auth for listener in listeners):
        reason = "must not be empty while a submission listener requires AUTH"
        reader.problem(("auth", "mechanisms"), reason)


def _check_routing(reader: _Reader, routing: RoutingConfig) -> None:
    for network in routing.trusted_networks:
        if network.prefixlen == 0:
            # "No open relay, ever": trusting every address is exactly that.
            reason = f"{network} trusts every address on the internet: that is an open relay"
            reader.problem(("routing", "trusted_networks"), reason)
    for domain in routing.catch_all:
        if domain not in routing.local_domains:
            reason = f"{domain} is not in routing.local_domains, so no mail for it arrives here"
            reader.problem(("routing", "catch_all", domain), reason)
