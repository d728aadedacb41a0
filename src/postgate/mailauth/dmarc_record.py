"""mailauth.dmarc_record — the DMARC policy record (RFC 9989, DMARCbis).

SYNOPSIS
    record = parse_dmarc_record("v=DMARC1; p=reject; sp=quarantine; np=reject")
    is_dmarc_record(text)

DESCRIPTION
    A tag=value list (RFC 9989, as in RFC 6376 3.2). The record must start with
    "v=DMARC1". Unknown tags are ignored (forward compatibility); a tag with an
    invalid value is treated as absent, so a broken ``sp`` falls back to ``p`` rather
    than discarding the domain owner's main policy. A missing or invalid ``p`` is
    treated as ``none``: DMARCbis made p "RECOMMENDED" and says a record without a
    valid one is a "none" (monitoring) policy. ``pct`` no longer exists in DMARCbis;
    ``t=y`` (testing) replaces it.

SEE ALSO
    mailauth.dmarc, RFC 9989
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass

from postgate.mailauth.results import DmarcPolicy

_VERSION_RE = re.compile(r"^\s*v\s*=\s*DMARC1\s*(;|$)")
_POLICIES = {p.value: p for p in DmarcPolicy}


class Alignment(enum.Enum):
    RELAXED = "r"
    STRICT = "s"


class PsdFlag(enum.Enum):
    """RFC 9989 psd tag: y (a public suffix domain), n (an organisational
    domain), u (unknown, the default: keep walking)."""

    YES = "y"
    NO = "n"
    UNKNOWN = "u"


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    policy: DmarcPolicy = DmarcPolicy.NONE
    subdomain_policy: DmarcPolicy | None = None
    nonexistent_policy: DmarcPolicy | None = None
    adkim: Alignment = Alignment.RELAXED
    aspf: Alignment = Alignment.RELAXED
    testing: bool = False
    psd: PsdFlag = PsdFlag.UNKNOWN


def is_dmarc_record(text: str) -> bool:
    """RFC 9989: records that do not start with v=DMARC1 are discarded."""
    return _VERSION_RE.match(text) is not None


@functools.lru_cache(maxsize=1024)
def parse_dmarc_record(text: str) -> DmarcRecord:
    """Parse a record known to start with v=DMARC1 (see module docstring for the
    treatment of bad values). Remembered: the result is immutable, and a busy MX
    sees the same few records for most of its mail."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, equals, value = part.partition("=")
        name = name.strip().lower()
        if equals and name and name not in tags:
            tags[name] = value.strip()
    policy = _POLICIES.get(tags.get("p", "").lower(), DmarcPolicy.NONE)
    return DmarcRecord(
        policy=policy,
        subdomain_policy=_POLICIES.get(tags.get("sp", "").lower()),
        nonexistent_policy=_POLICIES.get(tags.get("np", "").lower()),
        adkim=Alignment.STRICT if tags.get("adkim", "").lower() == "s" else Alignment.RELAXED,
        aspf=Alignment.STRICT if tags.get("aspf", "").lower() == "s" else Alignment.RELAXED,
        testing=tags.get("t", "").lower() == "y",
        psd={"y": PsdFlag.YES, "n": PsdFlag.NO}.get(tags.get("psd", "").lower(), PsdFlag.UNKNOWN),
    )
