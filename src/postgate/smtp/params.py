"""smtp.params — the arguments of MAIL and RCPT: paths, ESMTP parameters, xtext.

SYNOPSIS
    address, rest = parse_path(text, null_allowed=..., postmaster_allowed=..., status=...)
    parameters = split_parameters(rest)                 # [(KEYWORD, value | None)]
    MailParameters.parse(parameters, max_size=...)
    RcptParameters.parse(parameters)
    xtext_encode(text) -> str; xtext_decode(text) -> str

DESCRIPTION
    A path is ``<mailbox>``, ``<>`` (MAIL only), ``<postmaster>`` (RCPT only, RFC
    5321 4.1.1.3) or ``<@relay,@relay:mailbox>``: source routes are accepted and
    dropped (RFC 5321 4.1.2 and appendix C). The mailbox is checked against the
    RFC 5321 4.1.2 grammar (dot-string or quoted-string local part, domain or
    address literal), widened by RFC 6531 3.3 to UTF-8 in both parts; the caller
    decides whether non-ASCII is allowed (only with SMTPUTF8). The address is
    returned exactly as written inside the brackets, minus any source route.

    Parameters are ``KEYWORD[=value]`` separated by spaces (RFC 5321 4.1.2
    esmtp-param). Unknown keywords get 555 5.5.4 (RFC 5321 4.1.1.11), bad values
    501 5.5.4. Known: SIZE (RFC 1870), BODY (RFC 6152; BINARYMIME is not offered),
    SMTPUTF8 (RFC 6531), RET and ENVID (RFC 3461 4.3, 4.4), AUTH (RFC 4954 5,
    accepted and ignored), NOTIFY and ORCPT (RFC 3461 4.1, 4.2).

DIAGNOSTICS
    Every refusal raises RemoteProtocolError with the reply to send.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from postgate.queue.model import BodyType, DsnNotify, DsnRet
from postgate.smtp.errors import RemoteProtocolError
from postgate.smtp.replies import Reply

_UTF8 = "\u0080-\U0010ffff"
_ATEXT = rf"[A-Za-z0-9!#$%&'*+\-/=?^_`{{|}}~{_UTF8}]"
_DOT_STRING = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED_STRING = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_UTF8}]|\\[\x20-\x7e])*"'
_LABEL = rf"[A-Za-z0-9{_UTF8}](?:[A-Za-z0-9\-{_UTF8}]*[A-Za-z0-9{_UTF8}])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_LITERAL = r"\[[^\[\]\\\s]+\]"
_MAILBOX = re.compile(rf"(?:{_DOT_STRING}|{_QUOTED_STRING})@(?:{_DOMAIN}|{_LITERAL})")
_SOURCE_ROUTE = re.compile(rf"@(?:{_DOMAIN}|{_LITERAL})(?:,@(?:{_DOMAIN}|{_LITERAL}))*:")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")
# esmtp-value: %d33-60 / %d62-126, plus UTF-8 with SMTPUTF8 (RFC 6531 3.3).
_VALUE = re.compile(rf"[\x21-\x3c\x3e-\x7e{_UTF8}]+")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")
_MAX_PATH = 256  # octets including the angle brackets, RFC 5321 4.5.3.1.3

UNKNOWN_PARAMETER = "5.5.4"


def _refuse(code: int, enhanced: str, text: str) -> RemoteProtocolError:
    return RemoteProtocolError(text, Reply(code, enhanced, text))


def xtext_encode(text: str) -> str:
    """RFC 3461 4: "+" and "=" and octets outside 33-126 become "+XX" (UTF-8 first)."""
    out: list[str] = []
    for octet in text.encode("utf-8"):
        if 33 <= octet <= 126 and octet not in (0x2B, 0x3D):
            out.append(chr(octet))
        else:
            out.append(f"+{octet:02X}")
    return "".join(out)


_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-Fa-f]{2})*")


def xtext_decode(text: str) -> str:
    """Inverse of ``xtext_encode``; ValueError on malformed xtext or invalid UTF-8.
    Lower-case hex is accepted although RFC 3461 asks for upper case."""
    if not _XTEXT.fullmatch(text):
        raise ValueError(f"not xtext: {text!r}")
    first, *rest = text.split("+")  # the regex guarantees two hex digits after each "+"
    octets = bytearray(first.encode("ascii"))
    for part in rest:
        octets.append(int(part[:2], 16))
        octets += part[2:].encode("ascii")
    return octets.decode("utf-8")


def _path_end(text: str) -> int:
    """Index of the ">" closing the path that ``text`` starts with, or -1.
    A ">" inside a quoted local part does not close it."""
    quoted = False
    index = 1
    length = len(text)
    while index < length:  # bounded by the command line length
        char = text[index]
        if quoted and char == "\\":
            index += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index
        index += 1
    return -1


def _valid_literal(domain: str) -> bool:
    if not domain.startswith("["):
        return True
    inner = domain[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            ipaddress.IPv6Address(inner[5:])
        else:
            ipaddress.IPv4Address(inner)
    except ValueError:
        return False
    return True


def parse_path(
    text: str, *, null_allowed: bool, postmaster_allowed: bool, status: str
) -> tuple[str, str]:
    """Split ``<path> params`` into (address, params text).

    ``status`` is the enhanced code for a bad address: 5.1.7 for a sender, 5.1.3
    for a recipient (RFC 3463).
    """
    if not text.startswith("<"):
        raise _refuse(501, "5.5.4", "Syntax: address must be enclosed in <>")
    end = _path_end(text)
    if end < 0:
        raise _refuse(501, "5.5.4", "Syntax: missing > after the address")
    path, rest = text[1:end], text[end + 1 :]
    if rest and not rest.startswith(" "):
        raise _refuse(501, "5.5.4", "Syntax: parameters must follow the address after a space")
    if len(path.encode("utf-8")) + 2 > _MAX_PATH:
        raise _refuse(501, status, "Address too long")
    if path.startswith("@"):
        route = _SOURCE_ROUTE.match(path)
        if route is None:
            raise _refuse(501, status, "Bad source route syntax")
        path = path[route.end() :]  # RFC 5321 C: a source route is accepted and ignored
    if not path:
        if null_allowed:
            return "", rest
        raise _refuse(501, status, "Empty address not allowed here")
    if postmaster_allowed and path.lower() == "postmaster":
        return path, rest
    if not _MAILBOX.fullmatch(path) or not _valid_literal(path[path.rindex("@") + 1 :]):
        raise _refuse(501, status, "Bad address syntax")
    return path, rest


def split_parameters(text: str) -> list[tuple[str, str | None]]:
    """``KEY=value KEY2`` into [("KEY", "value"), ("KEY2", None)]; keywords upper-cased."""
    parameters: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for item in text.split():
        keyword, equals, value = item.partition("=")
        if not _KEYWORD.fullmatch(keyword) or (equals and not _VALUE.fullmatch(value)):
            raise _refuse(501, "5.5.4", f"Bad parameter syntax: {item[:40]}")
        keyword = keyword.upper()
        if keyword in seen:
            raise _refuse(501, "5.5.4", f"Duplicate parameter {keyword}")
        seen.add(keyword)
        parameters.append((keyword, value if equals else None))
    return parameters


def _need_value(keyword: str, value: str | None) -> str:
    if value is None:
        raise _refuse(501, "5.5.4", f"{keyword} needs a value")
    return value


def _decode_xtext(keyword: str, value: str) -> str:
    try:
        return xtext_decode(value)
    except ValueError:
        raise _refuse(501, "5.5.4", f"{keyword}: malformed xtext") from None


@dataclass(frozen=True, slots=True)
class MailParameters:
    size: int | None = None
    body: BodyType | None = None
    smtputf8: bool = False
    ret: DsnRet | None = None
    envid: str | None = None

    @classmethod
    def parse(
        cls, parameters: Sequence[tuple[str, str | None]], *, max_size: int
    ) -> MailParameters:
        size: int | None = None
        body: BodyType | None = None
        smtputf8 = False
        ret: DsnRet | None = None
        envid: str | None = None
        for keyword, value in parameters:
            if keyword == "SIZE":
                digits = _need_value(keyword, value)
                if not (digits.isascii() and digits.isdigit()) or len(digits) > 20:
                    raise _refuse(501, "5.5.4", "SIZE must be a number")
                size = int(digits)
                if max_size > 0 and size > max_size:
                    # RFC 1870 6.2: refuse at MAIL what cannot be accepted at the end.
                    raise _refuse(552, "5.3.4", "Message size exceeds fixed maximum message size")
            elif keyword == "BODY":
                kind = _need_value(keyword, value).upper()
                if kind not in (BodyType.SEVEN_BIT, BodyType.EIGHT_BIT_MIME):
                    raise _refuse(501, "5.5.4", "BODY must be 7BIT or 8BITMIME")
                body = BodyType(kind)
            elif keyword == "SMTPUTF8":
                if value is not None:
                    raise _refuse(501, "5.5.4", "SMTPUTF8 takes no value")
                smtputf8 = True
            elif keyword == "RET":
                kind = _need_value(keyword, value).upper()
                if kind not in (DsnRet.FULL, DsnRet.HDRS):
                    raise _refuse(501, "5.5.4", "RET must be FULL or HDRS")
                ret = DsnRet(kind)
            elif keyword == "ENVID":
                raw = _need_value(keyword, value)
                if len(raw) > 100:  # RFC 3461 4.4
                    raise _refuse(501, "5.5.4", "ENVID longer than 100 characters")
                envid = _decode_xtext(keyword, raw)
            elif keyword == "AUTH":
                # RFC 4954 5: a server advertising AUTH must accept the parameter; we do
                # not trust other servers' claims about who submitted, so it is ignored.
                _need_value(keyword, value)
            else:
                raise _refuse(555, UNKNOWN_PARAMETER, f"Unsupported parameter {keyword}")
        return cls(size=size, body=body, smtputf8=smtputf8, ret=ret, envid=envid)


@dataclass(frozen=True, slots=True)
class RcptParameters:
    notify: frozenset[DsnNotify] | None = None
    orcpt: tuple[str, str] | None = None

    @classmethod
    def parse(cls, parameters: Sequence[tuple[str, str | None]]) -> RcptParameters:
        notify: frozenset[DsnNotify] | None = None
        orcpt: tuple[str, str] | None = None
        for keyword, value in parameters:
            if keyword == "NOTIFY":
                notify = _parse_notify(_need_value(keyword, value))
            elif keyword == "ORCPT":
                orcpt = _parse_orcpt(_need_value(keyword, value))
            else:
                raise _refuse(555, UNKNOWN_PARAMETER, f"Unsupported parameter {keyword}")
        return cls(notify=notify, orcpt=orcpt)


def _parse_notify(value: str) -> frozenset[DsnNotify]:
    """RFC 3461 4.1: NEVER alone, or a list of SUCCESS, FAILURE, DELAY."""
    names = value.upper().split(",")
    try:
        kinds = [DsnNotify(name) for name in names]
    except ValueError:
        raise _refuse(501, "5.5.4", "NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY") from None
    notify = frozenset(kinds)
    if len(notify) != len(kinds):
        raise _refuse(501, "5.5.4", "NOTIFY lists a value twice")
    if DsnNotify.NEVER in notify and len(notify) > 1:
        raise _refuse(501, "5.5.4", "NOTIFY=NEVER cannot be combined with other values")
    return notify


def _parse_orcpt(value: str) -> tuple[str, str]:
    """RFC 3461 4.2: ``addr-type ";" xtext``, at most 500 characters."""
    if len(value) > 500:
        raise _refuse(501, "5.5.4", "ORCPT longer than 500 characters")
    addr_type, semicolon, encoded = value.partition(";")
    if not semicolon or not _ADDR_TYPE.fullmatch(addr_type) or not encoded:
        raise _refuse(501, "5.5.4", "Syntax: ORCPT=addr-type;address")
    return addr_type.lower(), _decode_xtext("ORCPT", encoded)
