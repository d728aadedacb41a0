"""config.values — parsers for single configuration values.

SYNOPSIS
    size(raw, env) -> int                 # 36700160, "35M", "35MiB", "512K"
    duration(raw, env) -> float           # 300, 2.5, "5m", "1h30m", "5d"
    hostname(raw, env) -> str             # IDNA-encoded, lower-case
    path(raw, env) -> Path                # relative paths resolve against env.base_dir
    format_size(n) / format_duration(s)   # the inverse, for rendering
    ... one parser per kind of value, see below.

DESCRIPTION
    Each parser takes the raw value tomllib produced and a ValueEnv, and returns the
    typed value or raises ValueError whose text is the reason only ("must be a
    positive integer, got -3"); the caller adds the file, line and key. Parsers never
    touch the filesystem: whether a file exists is checked at server start
    (config.check), not when the text is parsed.

SEE ALSO
    config.model (which parser each key uses), config.parse
"""

from __future__ import annotations

import enum
import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

import idna

_E = TypeVar("_E", bound=enum.Enum)
_T = TypeVar("_T")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ValueEnv:
    """What a parser may need beyond the raw value: where relative paths start, and
    the data directory that derived defaults live under."""

    base_dir: Path
    data_dir: Path


class EntryError(ValueError):
    """A ValueError about one entry of a table value (e.g. one catch_all domain), so
    the caller can point at that entry's line instead of the table's."""

    def __init__(self, entry: str, reason: str) -> None:
        super().__init__(reason)
        self.entry = entry


def show(raw: object) -> str:
    """Render a raw TOML value the way the user wrote it, for error messages."""
    if isinstance(raw, str):
        return json.dumps(raw, ensure_ascii=False)
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


def _as_int(raw: object) -> int | None:
    # bool is a subclass of int; `max_recipients = true` must not mean 1.
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


def positive_int(raw: object, env: ValueEnv) -> int:
    value = _as_int(raw)
    if value is None or value <= 0:
        raise ValueError(f"must be a positive integer, got {show(raw)}")
    return value


def boolean(raw: object, env: ValueEnv) -> bool:
    if not isinstance(raw, bool):
        raise ValueError(f"must be true or false, got {show(raw)}")
    return raw


def text(raw: object, env: ValueEnv) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"must be a non-empty string, got {show(raw)}")
    return raw.strip()


def choice(*options: str) -> Callable[[object, ValueEnv], str]:
    """A case-insensitive string that must be one of ``options``."""

    def parse(raw: object, env: ValueEnv) -> str:
        if isinstance(raw, str) and raw.strip().lower() in options:
            return raw.strip().lower()
        wanted = ", ".join(f'"{o}"' for o in options)
        raise ValueError(f"must be one of {wanted}, got {show(raw)}")

    return parse


def enum_choice(kind: type[_E]) -> Callable[[object, ValueEnv], _E]:
    """A string that must be the value of one member of ``kind``."""

    def parse(raw: object, env: ValueEnv) -> _E:
        for member in kind:
            if isinstance(raw, str) and raw.strip().lower() == str(member.value):
                return member
        wanted = ", ".join(f'"{m.value}"' for m in kind)
        raise ValueError(f"must be one of {wanted}, got {show(raw)}")

    return parse


def tls_version(raw: object, env: ValueEnv) -> str:
    # TLS 1.0 and 1.1 are deprecated by RFC 8996; a bare 1.2 in TOML is a float, so
    # say to quote it rather than guessing what a float meant.
    if raw in ("1.2", "1.3"):
        return str(raw)
    hint = ' (quote it: "1.2")' if isinstance(raw, float) else ""
    raise ValueError(f'must be "1.2" or "1.3", got {show(raw)}{hint}')


# Binary units only: "35M" means 35 MiB as in Postfix-era configs; decimal "MB" is
# refused rather than guessed, since the two differ by 5%.
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2}
_SIZE_UNITS |= {"g": 1024**3, "gib": 1024**3}
_SIZE_RE = re.compile(r"\s*(\d+)\s*([a-zA-Z]*)\s*")


def size(raw: object, env: ValueEnv) -> int:
    value = _as_int(raw)
    if value is not None and value > 0:
        return value
    if isinstance(raw, str) and (m := _SIZE_RE.fullmatch(raw)):
        unit = m.group(2).lower()
        if unit in _SIZE_UNITS and int(m.group(1)) > 0:
            return int(m.group(1)) * _SIZE_UNITS[unit]
    raise ValueError(
        f"must be a positive size in bytes or with a unit K, M, G (= KiB, MiB, GiB), "
        f'e.g. "35M", got {show(raw)}'
    )


def format_size(n: int) -> str:
    for unit, factor in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATION_RE = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")


def _duration(raw: object, *, allow_zero: bool) -> float:
    seconds: float | None = None
    if isinstance(raw, bool):
        seconds = None
    elif isinstance(raw, int | float):
        seconds = float(raw)
    elif isinstance(raw, str):
        compact = raw.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(?:\.\d+)?", compact):
            seconds = float(compact)
        elif _DURATION_RE.fullmatch(compact):
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(compact))
    if (
        seconds is None
        or not math.isfinite(seconds)
        or seconds < 0
        or (seconds == 0 and not allow_zero)
    ):
        least = "zero or more" if allow_zero else "positive"
        raise ValueError(
            f"must be a {least} duration: seconds or a number with a unit s, m, h, d, w "
            f'(e.g. "5m", "1h30m"), got {show(raw)}'
        )
    return seconds


def duration(raw: object, env: ValueEnv) -> float:
    return _duration(raw, allow_zero=False)


def duration_or_zero(raw: object, env: ValueEnv) -> float:
    """A duration where 0 means "off"."""
    return _duration(raw, allow_zero=True)


def duration_list(raw: object, env: ValueEnv) -> tuple[float, ...]:
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"must be a non-empty list of durations, got {show(raw)}")
    return tuple(_item(i, d, lambda v: _duration(v, allow_zero=False)) for i, d in enumerate(raw))


def format_duration(seconds: float) -> str:
    """The shortest exact unit form ("5m", "4000s"), or plain seconds if fractional."""
    if seconds == 0:
        return "0s"
    if not seconds.is_integer():
        return repr(seconds)
    whole = int(seconds)
    for unit, factor in sorted(_DURATION_UNITS.items(), key=lambda kv: -kv[1]):
        if whole % factor == 0:
            return f"{whole // factor}{unit}"
    raise AssertionError("unreachable: every integer is a whole number of seconds")


def duration_to_toml(seconds: float) -> str | float:
    """Whole seconds as "5m"-style text, fractions as a plain TOML float."""
    return format_duration(seconds) if seconds.is_integer() else seconds


def _item(index: int, raw: object, parse: Callable[[object], _T]) -> _T:
    try:
        return parse(raw)
    except ValueError as exc:
        raise ValueError(f"item {index + 1}: {exc}") from None


def _list_of(raw: object, what: str) -> list[object]:
    if not isinstance(raw, list):
        raise ValueError(f"must be a list of {what}, got {show(raw)}")
    return list(raw)


def path(raw: object, env: ValueEnv) -> Path:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"must be a non-empty path string, got {show(raw)}")
    value = Path(raw.strip())
    # Relative paths are relative to the config file, not to the server's cwd,
    # so a config behaves the same whoever starts the server from wherever.
    return value if value.is_absolute() else env.base_dir / value


def _domain(raw: object) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"must be a domain name, got {show(raw)}")
    name = raw.strip().rstrip(".")
    try:
        # UTS 46 mapping lower-cases and normalises; the result is the A-label form
        # that DNS and the SMTP envelope use (RFC 5890, RFC 5321 2.3.5).
        ascii_name = idna.encode(name, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(f"must be a valid domain name, got {show(raw)} ({exc})") from None
    if "." not in ascii_name and ascii_name != "localhost":
        raise ValueError(f"must be a fully qualified domain name, got {show(raw)}")
    return ascii_name


def hostname(raw: object, env: ValueEnv) -> str:
    return _domain(raw)


def domain_list(raw: object, env: ValueEnv) -> tuple[str, ...]:
    """A non-empty list of domains (a server with no local domain receives nothing)."""
    items = _list_of(raw, "domain names")
    if not items:
        raise ValueError("at least one domain is needed to receive mail")
    domains = [_item(i, d, _domain) for i, d in enumerate(items)]
    return tuple(dict.fromkeys(domains))


def _mailbox(raw: object) -> str:
    """A plain addr-spec local@domain; the domain is normalised like a hostname.
    Quoted local parts are allowed through as written (RFC 5321 4.1.2)."""
    if not isinstance(raw, str) or "@" not in raw:
        raise ValueError(f"must be an address like user@example.com, got {show(raw)}")
    local, _, domain = raw.strip().rpartition("@")
    if not local or any(c.isspace() or c in "<>" for c in local):
        raise ValueError(f"must be an address like user@example.com, got {show(raw)}")
    try:
        return f"{local}@{_domain(domain)}"
    except ValueError:
        raise ValueError(f"has an invalid domain: {show(raw)}") from None


def mailbox(raw: object, env: ValueEnv) -> str:
    return _mailbox(raw)


def catch_all(raw: object, env: ValueEnv) -> Mapping[str, str]:
    if not isinstance(raw, dict):
        raise ValueError(f'must be a table of "domain" = "address", got {show(raw)}')
    pairs: dict[str, str] = {}
    for domain, target in raw.items():
        try:
            pairs[_domain(domain)] = _mailbox(target)
        except ValueError as exc:
            raise EntryError(domain, str(exc)) from None
    return MappingProxyType(pairs)


def ip_addresses(raw: object, env: ValueEnv) -> tuple[str, ...]:
    items = _list_of(raw, "IP addresses")
    return tuple(
        dict.fromkeys(_item(i, a, lambda x: ip_address(x, env)) for i, a in enumerate(items))
    )


def mailboxes(raw: object, env: ValueEnv) -> tuple[str, ...]:
    items = _list_of(raw, "addresses")
    return tuple(dict.fromkeys(_item(i, m, _mailbox) for i, m in enumerate(items)))


def scram_iterations(raw: object, env: ValueEnv) -> int:
    count = positive_int(raw, env)
    if count < 4096:
        # RFC 7677 4: at least 4096 iterations for SCRAM-SHA-256.
        raise ValueError(f"must be at least 4096 (RFC 7677), got {count}")
    return count


MAX_WORKERS = 64


def worker_count(raw: object, env: ValueEnv) -> int:
    count = positive_int(raw, env)
    if count > MAX_WORKERS:
        # Each worker is a whole server process; more than the machine has cores buys
        # nothing but memory, and a typo of 1000 must not fork 1000 processes.
        raise ValueError(f"must be at most {MAX_WORKERS} (about the number of cores), got {count}")
    return count


def sender_owners(raw: object, env: ValueEnv) -> Mapping[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        raise ValueError(
            f'must be a table of "user" = ["address" or "@domain", ...], got {show(raw)}'
        )
    owners: dict[str, tuple[str, ...]] = {}
    for user, entries in raw.items():
        try:
            owner = _mailbox(user)
            if not isinstance(entries, list):
                raise ValueError(f"must be a list of addresses or @domains, got {show(entries)}")
            owners[owner.lower()] = tuple(
                "@" + _domain(e[1:]) if isinstance(e, str) and e.startswith("@") else _mailbox(e)
                for e in entries
            )
        except ValueError as exc:
            raise EntryError(user, str(exc)) from None
    return MappingProxyType(owners)


def sni_certificates(raw: object, env: ValueEnv) -> Mapping[str, tuple[Path, Path]]:
    if not isinstance(raw, dict):
        raise ValueError(
            f'must be a table of "hostname" = ["fullchain.pem", "privkey.pem"], got {show(raw)}'
        )
    pairs: dict[str, tuple[Path, Path]] = {}
    for name, files in raw.items():
        try:
            if not (isinstance(files, list) and len(files) == 2):
                raise ValueError(f"must be [cert_file, key_file], got {show(files)}")
            pairs[_domain(name)] = (path(files[0], env), path(files[1], env))
        except ValueError as exc:
            raise EntryError(name, str(exc)) from None
    return MappingProxyType(pairs)


def domain_map(
    value: Callable[[object, ValueEnv], str], what: str
) -> Callable[[object, ValueEnv], Mapping[str, str]]:
    """A table of "domain" = value (e.g. per-domain relay hosts or TLS modes)."""

    def parse(raw: object, env: ValueEnv) -> Mapping[str, str]:
        if not isinstance(raw, dict):
            raise ValueError(f'must be a table of "domain" = {what}, got {show(raw)}')
        pairs: dict[str, str] = {}
        for domain, item in raw.items():
            try:
                pairs[_domain(domain)] = value(item, env)
            except ValueError as exc:
                raise EntryError(domain, str(exc)) from None
        return MappingProxyType(pairs)

    return parse


def _network(raw: object) -> IPNetwork:
    if not isinstance(raw, str):
        raise ValueError(f'must be a network like "192.0.2.0/24", got {show(raw)}')
    try:
        return ipaddress.ip_network(raw.strip())
    except ValueError as exc:
        # strict parsing on purpose: "10.0.0.1/8" is more likely a typo than a wish
        # to trust all of 10/8, so make the user write what they mean.
        raise ValueError(f'must be a network like "192.0.2.0/24": {exc}') from None


def networks(raw: object, env: ValueEnv) -> tuple[IPNetwork, ...]:
    items = _list_of(raw, "networks")
    return tuple(dict.fromkeys(_item(i, n, _network) for i, n in enumerate(items)))


def ip_address(raw: object, env: ValueEnv) -> str:
    try:
        return ipaddress.ip_address(raw.strip() if isinstance(raw, str) else "").compressed
    except ValueError:
        raise ValueError(f'must be an IP address like "0.0.0.0" or "::", got {show(raw)}') from None


def port(raw: object, env: ValueEnv) -> int:
    value = _as_int(raw)
    if value is None or not 1 <= value <= 65535:
        raise ValueError(f"must be a port number 1..65535, got {show(raw)}")
    return value


def _split_host_port(raw: str) -> tuple[str, int | None, bool]:
    """ "[host]:port" / "host:port" / "[::1]" / "::1" -> (host, port, bracketed)."""
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError("unbalanced brackets")
        return host, _port_text(rest[1:]) if rest else None, True
    if raw.count(":") == 1:
        host, _, port_text = raw.partition(":")
        return host, _port_text(port_text), False
    return raw, None, False


def _port_text(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError(f"bad port {value!r}")
    return int(value)


def relay_host(raw: object, env: ValueEnv) -> str:
    # Postfix relayhost syntax: brackets mean "this host, no MX lookup".
    usage = 'must be "[host]:port", "[host]" or "host[:port]"'
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{usage}, got {show(raw)}")
    try:
        host, _, _ = _split_host_port(raw.strip())
        try:
            ipaddress.ip_address(host)
        except ValueError:
            _domain(host)
    except ValueError as exc:
        raise ValueError(f"{usage}, got {show(raw)} ({exc})") from None
    return raw.strip()


def _dns_server(raw: object) -> str:
    usage = 'must be an IP address with optional port, e.g. "127.0.0.1:5353" or "[::1]:53"'
    if not isinstance(raw, str):
        raise ValueError(f"{usage}, got {show(raw)}")
    try:
        host, port_number, _ = _split_host_port(raw.strip())
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{usage}, got {show(raw)}") from None
    if port_number is None:
        return address.compressed
    if address.version == 6:
        return f"[{address.compressed}]:{port_number}"
    return f"{address.compressed}:{port_number}"


def dns_servers(raw: object, env: ValueEnv) -> tuple[str, ...]:
    items = _list_of(raw, "DNS servers")
    return tuple(_item(i, s, _dns_server) for i, s in enumerate(items))


def names_from(known: Sequence[str]) -> Callable[[object, ValueEnv], tuple[str, ...]]:
    """A list of upper-case names, each from ``known`` (e.g. SASL mechanisms)."""

    def parse(raw: object, env: ValueEnv) -> tuple[str, ...]:
        items = _list_of(raw, "names")
        result: list[str] = []
        for i, name in enumerate(items):
            if not isinstance(name, str) or name.strip().upper() not in known:
                wanted = ", ".join(known)
                raise ValueError(f"item {i + 1}: must be one of {wanted}, got {show(name)}")
            result.append(name.strip().upper())
        return tuple(dict.fromkeys(result))

    return parse
