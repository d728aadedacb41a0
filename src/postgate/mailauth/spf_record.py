"""mailauth.spf_record — the SPF record language: terms, CIDR lengths, macros.

SYNOPSIS
    record = parse_record("v=spf1 a mx -all")   # SpfRecord, or SpfPermError
    is_spf_record(text)                         # does it start with "v=spf1"?
    domain = expand(spec, context)              # RFC 7208 7 macro expansion

DESCRIPTION
    Pure functions, no DNS. ``parse_record`` checks the whole record before any
    term is evaluated, because RFC 7208 4.6 says a syntax error anywhere makes the
    result permerror "without further interpretation". Macro strings are checked
    for syntax at parse time and expanded at evaluation time with a
    ``MacroContext`` that carries the values of the macro letters; the "p" letter
    (validated reverse name) needs DNS, so the evaluator resolves it first and
    passes the result in.

    Errors are ``SpfPermError`` (the record is broken: permerror).

SEE ALSO
    mailauth.spf, RFC 7208 4.6, 5, 7, 12
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

_QUALIFIERS = {"+", "-", "~", "?"}
_MECHANISMS = {"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"}
# RFC 7208 7.3: letters allowed anywhere, and the three that only make sense in
# an explanation string (7.2: "c", "r" and "t" are only allowed in "exp" text).
_MACRO_LETTERS = set("slodiphv")
_EXP_ONLY_LETTERS = set("crt")
_DELIMITERS = set(".-+,/_=")
_MODIFIER_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_.\-]*)=(.*)$", re.DOTALL)
_MECHANISM_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_.\-]*)(.*)$", re.DOTALL)
_MACRO_RE = re.compile(r"%\{([A-Za-z])([0-9]*)([rR]?)([.\-+,/_=]*)\}")
# RFC 7208 12: ip4-cidr-length = "/" ("0" / %x31-39 0*1DIGIT), ip6 up to 3 digits.
_CIDR_RE = re.compile(r"^(.*?)(?:/(0|[1-9][0-9]{0,1}))?(?://(0|[1-9][0-9]{0,2}))?$", re.DOTALL)
_TOPLABEL_RE = re.compile(
    r"^(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9\-]*[A-Za-z0-9])$"
)
MAX_DOMAIN_LENGTH = 253  # RFC 7208 7.3: truncate expanded names to this


class SpfPermError(Exception):
    """The record (or a name built from it) breaks the SPF syntax: permerror."""


@dataclass(frozen=True, slots=True)
class Mechanism:
    """One directive. ``domain_spec`` is the unexpanded macro string or None when
    the mechanism takes the current domain; ``network`` is set for ip4/ip6."""

    qualifier: str
    name: str
    domain_spec: str | None = None
    cidr4: int = 32
    cidr6: int = 128
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    @property
    def queries_dns(self) -> bool:
        """RFC 7208 4.6.4: the terms that count toward the limit of 10."""
        return self.name in ("include", "a", "mx", "ptr", "exists")


@dataclass(frozen=True, slots=True)
class SpfRecord:
    mechanisms: tuple[Mechanism, ...]
    redirect: str | None = None
    explanation: str | None = None

    @property
    def has_all(self) -> bool:
        return any(m.name == "all" for m in self.mechanisms)


@dataclass(frozen=True, slots=True)
class MacroContext:
    """Values of the macro letters (RFC 7208 7.2) for one check_host() call."""

    sender: str
    local_part: str
    sender_domain: str
    domain: str
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    helo: str
    validated_name: str = "unknown"
    receiver: str = "unknown"
    timestamp: int = 0


def is_spf_record(text: str) -> bool:
    """RFC 7208 4.5: exactly "v=spf1" followed by a space or the end."""
    lowered = text.lower()
    return lowered == "v=spf1" or lowered.startswith("v=spf1 ")


def parse_record(text: str) -> SpfRecord:
    """Parse a complete "v=spf1 ..." record; SpfPermError on any syntax error."""
    if not text.isascii():
        raise SpfPermError("SPF record contains non-ASCII characters")  # RFC 7208 3.1
    if not is_spf_record(text):
        raise SpfPermError("not an SPF record")
    mechanisms: list[Mechanism] = []
    redirect: str | None = None
    explanation: str | None = None
    for term in text[len("v=spf1") :].split(" "):
        if not term:
            continue
        modifier = _MODIFIER_RE.match(term)
        if modifier is not None:
            name, value = modifier.group(1).lower(), modifier.group(2)
            if name in ("redirect", "exp"):
                check_domain_spec(value)
                # RFC 7208 6: these two modifiers MUST NOT appear more than once.
                if (name == "redirect" and redirect is not None) or (
                    name == "exp" and explanation is not None
                ):
                    raise SpfPermError(f"duplicate {name}= modifier")
                if name == "redirect":
                    redirect = value
                else:
                    explanation = value
            else:
                check_macro_string(value)  # RFC 7208 6: unknown modifiers are ignored
            continue
        mechanisms.append(_parse_mechanism(term))
    return SpfRecord(tuple(mechanisms), redirect, explanation)


def _parse_mechanism(term: str) -> Mechanism:
    qualifier = "+"
    if term[0] in _QUALIFIERS:
        qualifier, term = term[0], term[1:]
    match = _MECHANISM_RE.match(term)
    if match is None:
        raise SpfPermError(f"unknown term {term!r}")
    name, rest = match.group(1).lower(), match.group(2)
    if name not in _MECHANISMS:
        raise SpfPermError(f"unknown mechanism {name!r}")
    if name == "all":
        if rest:
            raise SpfPermError(f"bad all mechanism {term!r}")
        return Mechanism(qualifier, name)
    if name in ("ip4", "ip6"):
        return _parse_ip(qualifier, name, rest)
    if name in ("a", "mx"):
        spec, cidr4, cidr6 = _split_cidr(rest, term)
    else:
        spec, cidr4, cidr6 = rest, 32, 128
    if spec:
        if not spec.startswith(":") or len(spec) == 1:
            raise SpfPermError(f"bad {name} mechanism {term!r}")
        domain_spec: str | None = spec[1:]
        check_domain_spec(spec[1:])
    elif name in ("include", "exists"):
        raise SpfPermError(f"{name} needs a domain: {term!r}")
    else:
        domain_spec = None
    return Mechanism(qualifier, name, domain_spec, cidr4, cidr6)


def _split_cidr(rest: str, term: str) -> tuple[str, int, int]:
    match = _CIDR_RE.match(rest)
    if match is None:  # pragma: no cover - the pattern matches every string
        raise SpfPermError(f"bad term {term!r}")
    spec = match.group(1)
    cidr4 = int(match.group(2)) if match.group(2) is not None else 32
    cidr6 = int(match.group(3)) if match.group(3) is not None else 128
    if cidr4 > 32 or cidr6 > 128:
        raise SpfPermError(f"bad CIDR length in {term!r}")
    return spec, cidr4, cidr6


def _parse_ip(qualifier: str, name: str, rest: str) -> Mechanism:
    if not rest.startswith(":"):
        raise SpfPermError(f"{name} needs an address")
    address, slash, length = rest[1:].partition("/")
    max_length = 32 if name == "ip4" else 128
    if slash:
        if not length.isdigit() or (length.startswith("0") and length != "0"):
            raise SpfPermError(f"bad CIDR length in {name}:{rest[1:]}")
        prefix = int(length)
        if prefix > max_length:
            raise SpfPermError(f"CIDR length out of range in {name}:{rest[1:]}")
    else:
        prefix = max_length
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address
        if name == "ip4":
            ip = ipaddress.IPv4Address(address)
        else:
            if "%" in address:
                raise ValueError("scope id")
            ip = ipaddress.IPv6Address(address)
    except ValueError as exc:
        raise SpfPermError(f"bad address in {name}:{rest[1:]}") from exc
    network = ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
    return Mechanism(qualifier, name, network=network, cidr4=prefix, cidr6=prefix)


def check_macro_string(text: str, *, explanation: bool = False) -> None:
    """RFC 7208 7.1 syntax of a macro-string; SpfPermError when broken."""
    allowed = _MACRO_LETTERS | _EXP_ONLY_LETTERS if explanation else _MACRO_LETTERS
    position = 0
    while position < len(text):
        char = text[position]
        if char != "%":
            if not explanation and not 0x21 <= ord(char) <= 0x7E:
                raise SpfPermError(f"bad character in {text!r}")
            position += 1
            continue
        following = text[position + 1 : position + 2]
        if following in ("%", "_", "-"):
            position += 2
            continue
        match = _MACRO_RE.match(text, position)
        if match is None or match.group(1).lower() not in allowed:
            raise SpfPermError(f"bad macro in {text!r}")
        position = match.end()


def check_domain_spec(spec: str) -> None:
    """domain-spec = macro-string domain-end (RFC 7208 7.1)."""
    check_macro_string(spec)
    if not spec:
        raise SpfPermError("empty domain-spec")
    if spec.endswith("}") and _MACRO_RE.search(spec) and _ends_with_macro(spec):
        return
    labels = spec[:-1].split(".") if spec.endswith(".") else spec.split(".")
    if len(labels) < 2 or not _TOPLABEL_RE.match(labels[-1]):
        raise SpfPermError(f"domain-spec {spec!r} does not end in a valid top label")


def _ends_with_macro(spec: str) -> bool:
    return any(m.end() == len(spec) for m in _MACRO_RE.finditer(spec))


def expand(spec: str, context: MacroContext, *, explanation: bool = False) -> str:
    """RFC 7208 7.3 macro expansion. For a domain-spec (``explanation`` False) the
    result is truncated on the left to 253 characters."""
    out: list[str] = []
    position = 0
    while position < len(spec):
        char = spec[position]
        if char != "%":
            out.append(char)
            position += 1
            continue
        following = spec[position + 1 : position + 2]
        if following in ("%", "_", "-"):
            out.append({"%": "%", "_": " ", "-": "%20"}[following])
            position += 2
            continue
        match = _MACRO_RE.match(spec, position)
        if match is None:
            raise SpfPermError(f"bad macro in {spec!r}")
        out.append(_expand_one(match, context, explanation))
        position = match.end()
    result = "".join(out)
    if explanation:
        return result
    return _truncate(result)


def _expand_one(match: re.Match[str], context: MacroContext, explanation: bool) -> str:
    letter, digits, reverse, delimiters = match.groups()
    lower = letter.lower()
    if lower in _EXP_ONLY_LETTERS and not explanation:
        raise SpfPermError(f"macro %{{{letter}}} is only allowed in exp= text")
    value = _letter_value(lower, context)
    if digits or reverse or delimiters:
        separators = delimiters or "."
        parts = re.split("[" + re.escape(separators) + "]", value)
        if reverse:
            parts.reverse()
        if digits:
            keep = int(digits)
            if keep == 0:
                raise SpfPermError("macro transformer of zero parts")  # RFC 7208 7.3
            parts = parts[-keep:]
        value = ".".join(parts)
    if letter.isupper():
        # RFC 7208 7.3: upper-case letters mean URL-escaping (RFC 3986 unreserved kept).
        value = urllib.parse.quote(value, safe="-._~")
    return value


def _letter_value(letter: str, context: MacroContext) -> str:
    ip = context.ip
    if letter == "i":
        if ip.version == 4:
            return str(ip)
        # RFC 7208 7.3 example: dot-separated nibbles, upper-case hex.
        return ".".join(ip.exploded.replace(":", "").upper())
    values = {
        "s": context.sender,
        "l": context.local_part,
        "o": context.sender_domain,
        "d": context.domain,
        "p": context.validated_name,
        "h": context.helo,
        "v": "in-addr" if ip.version == 4 else "ip6",
        "c": str(ip),
        "r": context.receiver,
        "t": str(context.timestamp),
    }
    return values[letter]


def _truncate(name: str) -> str:
    while len(name) > MAX_DOMAIN_LENGTH and "." in name:
        name = name.split(".", 1)[1]
    return name
