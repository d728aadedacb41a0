"""mailauth.headers — header fields of a message as bytes, for authentication work.

SYNOPSIS
    fields, _ = split_header_fields(message)   # [(name, raw field bytes)]
    domains = from_domains(message)                      # RFC5322.From domains
    message = remove_forged_authentication_results(message, "mx.example.org")

DESCRIPTION
    Authentication needs the header exactly as received (DKIM and ARC hash it), so
    nothing here decodes or re-folds: a field is its raw bytes from the name to the
    line end of its last continuation line, and untouched fields are returned
    byte-for-byte. Lines may end in CRLF or LF.

SEE ALSO
    mailauth.authres, RFC 5322 2.2, RFC 8601 5
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection

_FIELD_NAME_RE = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_AUTHSERV_RE = re.compile(rb'^\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;()"]+))', re.DOTALL)


def split_header_fields(message: bytes) -> tuple[list[tuple[bytes, bytes]], int]:
    """The header fields in order as (name, raw bytes with line ends), and the
    offset where the body starts (after the empty line; len(message) if none).

    A line that is neither a field nor a continuation (no colon) is kept as a
    field with an empty name, so re-joining the raw parts always gives the header
    back exactly. Linear in the header size: a field folded over thousands of lines
    is collected as a list and joined once (a hostile client sends exactly that).
    """
    names: list[bytes] = []
    parts: list[list[bytes]] = []
    position = 0
    length = len(message)
    body_start = length
    while position < length:
        end = message.find(b"\n", position)
        end = length if end < 0 else end + 1
        line = message[position:end]
        if line in (b"\r\n", b"\n"):
            body_start = end
            break
        if line[:1] in (b" ", b"\t") and parts:
            parts[-1].append(line)
        else:
            match = _FIELD_NAME_RE.match(line)
            names.append(match.group(1) if match else b"")
            parts.append([line])
        position = end
    return [(name, b"".join(raw)) for name, raw in zip(names, parts, strict=True)], body_start


def starts_with_header_field(message: bytes) -> bool:
    """Whether the first line is a header field or the empty line that ends the header.

    A first line that is neither (folded whitespace, text without a colon) would
    otherwise be taken as part of the header: as the continuation of whatever field
    we prepend (an Authentication-Results a sender could extend with "dkim=pass"),
    or as a header field with no name.
    """
    return (
        message.startswith(b"\r\n")
        or message.startswith(b"\n")
        or _FIELD_NAME_RE.match(message) is not None
    )


def header_mentions(message: bytes, name: bytes) -> bool:
    """Whether the header section contains ``name`` (lower case) anywhere.

    A cheap, conservative test run before a library parse of the whole message:
    dkimpy splits every line of the body too, which for a 100 KB message costs more
    than everything else we do with it. A false "yes" only costs that parse.
    """
    return name in header_section(message).lower()


def header_section(message: bytes) -> bytes:
    """The header fields of ``message``, up to the empty line that ends them."""
    _, body_start = split_header_fields(message)
    return message[:body_start]


def field_value(raw: bytes) -> bytes:
    """The value of a raw field: after the colon, unfolded, outer blanks stripped."""
    value = raw.split(b":", 1)[1] if b":" in raw else b""
    return re.sub(rb"\r?\n(?=[ \t])", b"", value).strip()


def _skip_cfws(value: bytes) -> bytes:
    """Drop leading whitespace and (nested) comments (RFC 5322 3.2.2)."""
    value = value.lstrip()
    while value.startswith(b"("):
        depth, index = 0, 0
        while index < len(value):
            char = value[index : index + 1]
            if char == b"\\":
                index += 2
                continue
            if char == b"(":
                depth += 1
            elif char == b")":
                depth -= 1
                if depth == 0:
                    break
            index += 1
        value = value[index + 1 :].lstrip()
    return value


def authserv_id_of(raw: bytes) -> str:
    """The authserv-id an Authentication-Results field claims (RFC 8601 2.2)."""
    match = _AUTHSERV_RE.match(_skip_cfws(field_value(raw)))
    if match is None:
        return ""
    token = match.group(1) if match.group(1) is not None else match.group(2)
    return re.sub(rb"\\(.)", rb"\1", token).decode("utf-8", "replace")


def remove_forged_authentication_results(message: bytes, authserv_id: str) -> bytes:
    """Remove every Authentication-Results field claiming ``authserv_id``.

    RFC 8601 5: a border MTA MUST delete (or rename) A-R fields that carry its own
    authserv-id, or a sender could forge our verdicts. Comparison is
    case-insensitive (it is a domain name in practice); other A-R fields, ARC
    fields and the body are returned byte-for-byte.
    """
    # A trailing dot names the same host (an absolute domain name): compare without it.
    wanted = authserv_id.strip().lower().rstrip(".")
    return _drop_fields(
        message,
        lambda name, raw: (
            name.lower() == b"authentication-results"
            and authserv_id_of(raw).lower().rstrip(".") == wanted
        ),
    )


def remove_header_fields(message: bytes, names: Collection[bytes]) -> bytes:
    """Remove every header field whose name is in ``names`` (case-insensitive), in
    one pass; the rest of the message byte-for-byte. Used for fields only we may
    set (Return-Path, our quarantine mark), which a sender must not pre-set."""
    wanted = {name.lower() for name in names}
    return _drop_fields(message, lambda name, raw: name.lower() in wanted)


def _drop_fields(message: bytes, drop: Callable[[bytes, bytes], bool]) -> bytes:
    """The message without the header fields for which ``drop(name, raw)`` is true."""
    fields, _ = split_header_fields(message)
    kept = [raw for name, raw in fields if not drop(name, raw)]
    if len(kept) == len(fields):
        return message
    end_of_fields = sum(len(raw) for _, raw in fields)
    return b"".join(kept) + message[end_of_fields:]


def _strip_comments_and_quotes(value: str) -> str:
    """Comments removed and each quoted-string replaced by "q", so display names
    cannot smuggle in an address and a quoted local part still has its domain."""
    out: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif quoted:
            quoted = char != '"'
        elif char == '"' and depth == 0:
            quoted = True
            out.append("q")
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(char)
    return "".join(out)


MAX_FROM_SCAN = 16384


def from_domains(message: bytes) -> list[list[str]]:
    """For each From field, the lower-case domains of its addresses (RFC 5322 3.6.2).

    Display names, comments and quoted local parts are skipped; an address
    without a domain gives no entry. The caller decides what several fields or
    several domains mean (DMARC: RFC 9989 / RFC 7489 6.6.1).
    """
    result: list[list[str]] = []
    for name, raw in split_header_fields(message)[0]:
        if name.lower() != b"from":
            continue
        # Bounded: a From field of megabytes (a hostile client's) is judged by its
        # first few hundred addresses; the parse below runs on the event loop.
        text = field_value(raw[:MAX_FROM_SCAN]).decode("utf-8", "replace")
        value = _strip_comments_and_quotes(text)
        domains: list[str] = []
        for part in value.split(","):
            angle = re.search(r"<([^<>]*)>", part)
            address = angle.group(1) if angle else part
            _, at, domain = address.strip().rpartition("@")
            domain = domain.strip().strip(">;").strip().rstrip(".").lower()
            if at and domain and " " not in domain:
                domains.append(domain)
        result.append(domains)
    return result
