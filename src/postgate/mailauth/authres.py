"""mailauth.authres — the Authentication-Results header field (RFC 8601).

SYNOPSIS
    header = build_authentication_results("mx.example.org", spf, dkim_results, dmarc, arc)
    # b"Authentication-Results: mx.example.org;\r\n\tspf=pass smtp.mailfrom=...\r\n"

DESCRIPTION
    One field with our authserv-id and one resinfo per check, folded one result per
    line. Written by hand: the grammar is small, and authheaders (the usual
    library) reports dkim=fail for unsigned mail and only the first signature.

    - spf: ``smtp.mailfrom`` for the MAIL FROM identity, ``smtp.helo`` for HELO;
    - dkim: one entry per signature with header.d / header.s / header.a, and
      ``dkim=none`` when the message carries no signature (RFC 8601 2.7.1: none
      means "not signed", never fail);
    - dmarc: header.from and policy.dmarc (what the owner asked for this message);
    - arc: the chain validation status (RFC 8617 4.1 registers "arc").

    Property values are RFC 2045 tokens when they can be, otherwise quoted
    strings; reasons go into comments with parentheses and backslashes escaped.
    Everything is 7-bit: a non-ASCII character in a reason becomes "?".

SEE ALSO
    mailauth.headers (removal of forged fields), RFC 8601 2.2, 2.7
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from postgate.mailauth.results import (
    ArcResult,
    DkimLike,
    DmarcResult,
    DmarcStatus,
    SpfResult,
    SpfScope,
    dkim_status,
)

_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")  # RFC 2045 token
_ADDRESS_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]*@[A-Za-z0-9.\-]+$")
MAX_COMMENT = 120


def _ascii(text: str) -> str:
    text = re.sub(r"[\r\n\t]+", " ", text)
    return "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in text)


def _value(text: str) -> str:
    """pvalue (RFC 8601 2.2): a token, an address, or else a quoted-string."""
    text = _ascii(text)
    if _TOKEN_RE.match(text) or _ADDRESS_RE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    text = _ascii(text).strip()[:MAX_COMMENT]
    if not text:
        return ""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f" ({escaped})"


def _spf_resinfo(spf: SpfResult) -> str:
    if spf.scope is SpfScope.HELO:
        prop = f"smtp.helo={_value(spf.domain)}"
    else:
        prop = f"smtp.mailfrom={_value(spf.identity)}"
    return f"spf={spf.status.value}{_comment(spf.reason)} {prop}"


def _dkim_resinfos(results: Sequence[DkimLike]) -> list[str]:
    if not results:
        return ["dkim=none (message not signed)"]
    lines = []
    for result in results:
        props = [f"header.d={_value(result.domain)}"] if result.domain else []
        if result.selector:
            props.append(f"header.s={_value(result.selector)}")
        if result.algorithm:
            props.append(f"header.a={_value(result.algorithm)}")
        lines.append(
            f"dkim={dkim_status(result)}{_comment(result.reason)}"
            + "".join(" " + prop for prop in props)
        )
    return lines


def _dmarc_resinfo(dmarc: DmarcResult) -> str:
    props = f"header.from={_value(dmarc.from_domain)}"
    if dmarc.status in (DmarcStatus.FAIL, DmarcStatus.TEMPERROR, DmarcStatus.PASS):
        props += f" policy.dmarc={dmarc.policy.value}"
    comment = dmarc.reason
    if dmarc.published_policy is not None:
        comment = f"p={dmarc.published_policy.value}{' t=y' if dmarc.testing else ''}; {comment}"
    return f"dmarc={dmarc.status.value}{_comment(comment)} {props}"


def build_authentication_results(
    authserv_id: str,
    spf: SpfResult | None,
    dkim_results: Sequence[DkimLike] | None,
    dmarc: DmarcResult | None,
    arc: ArcResult | None,
    *,
    helo_spf: SpfResult | None = None,
) -> bytes:
    """One Authentication-Results field (name, value, CRLF) for the checks that
    ran; a None argument means that check did not run and is left out. With no
    check at all the field says "none" (RFC 8601 2.2 no-result)."""
    resinfos: list[str] = []
    if spf is not None:
        resinfos.append(_spf_resinfo(spf))
    if helo_spf is not None and (spf is None or spf.scope is not SpfScope.HELO):
        resinfos.append(_spf_resinfo(helo_spf))
    if dkim_results is not None:
        resinfos.extend(_dkim_resinfos(dkim_results))
    if dmarc is not None:
        resinfos.append(_dmarc_resinfo(dmarc))
    if arc is not None:
        resinfos.append(f"arc={arc.status.value}{_comment(arc.reason)}")
    head = f"Authentication-Results: {_value(authserv_id)}"
    if not resinfos:
        return f"{head}; none\r\n".encode("ascii")
    return (head + ";\r\n\t" + ";\r\n\t".join(resinfos) + "\r\n").encode("ascii")
