"""mailauth.results — the values that SPF, DKIM, DMARC and ARC checks hand on.

DESCRIPTION
    Frozen dataclasses and enums only: these cross from mailauth into the session,
    the accept stage and the logs. The enum values are the result keywords of the
    RFC 8601 registry, so ``status.value`` is what goes into Authentication-Results.

    DKIM verification is built elsewhere (``postgate.dkim.verify``); mailauth only
    needs five read-only fields of each signature result, written down here as the
    ``DkimLike`` protocol, so any frozen dataclass with those fields fits.

SEE ALSO
    mailauth.spf, mailauth.dmarc, mailauth.arc, mailauth.authres, RFC 8601 2.7
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class SpfStatus(enum.Enum):
    """RFC 7208 2.6 results."""

    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class SpfScope(enum.Enum):
    """Which identity was checked (RFC 7208 2.3, 2.4)."""

    MAILFROM = "mailfrom"
    HELO = "helo"


@dataclass(frozen=True, slots=True)
class SpfResult:
    """One check_host() outcome.

    ``identity`` is the checked address ("postmaster@helo" for the HELO identity and
    for the null reverse-path, RFC 7208 2.4); ``domain`` is its domain part;
    ``explanation`` is the expanded exp= text on fail (RFC 7208 6.2), else "";
    ``reason`` says in the operator's words why (which mechanism matched, which
    lookup failed).
    """

    status: SpfStatus
    scope: SpfScope
    identity: str
    domain: str
    explanation: str = ""
    reason: str = ""


class DkimLike(Protocol):
    """What mailauth reads from one DKIM signature result (postgate.dkim.verify
    ``DkimResult`` fits). ``result`` is a string or a str-valued enum of the RFC 8601
    dkim keywords (pass, fail, neutral, policy, temperror, permerror, none)."""

    @property
    def domain(self) -> str: ...

    @property
    def selector(self) -> str: ...

    @property
    def algorithm(self) -> str: ...

    @property
    def result(self) -> object: ...

    @property
    def reason(self) -> str: ...


@dataclass(frozen=True, slots=True)
class DkimSignatureResult:
    """A plain DkimLike, for tests and for callers without the dkim package."""

    domain: str
    selector: str
    algorithm: str
    result: str
    reason: str = ""


def dkim_status(result: DkimLike) -> str:
    """The lower-case RFC 8601 keyword of a DkimLike's ``result``."""
    value = getattr(result.result, "value", result.result)
    return str(value).strip().lower()


class DmarcStatus(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class DmarcPolicy(enum.Enum):
    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class DmarcResult:
    """The DMARC evaluation of one message.

    ``policy`` is what the domain owner asks the receiver to do with THIS message:
    none unless ``status`` is fail (or temperror for a message that would otherwise
    fail), already lowered one step when the record says ``t=y``.
    ``published_policy`` is the p/sp/np value that applied, before ``t=``.
    ``policy_domain`` is where the record was found, ``organizational_domain`` the
    From domain's organisational domain ("" when no record exists anywhere).
    """

    status: DmarcStatus
    from_domain: str
    policy: DmarcPolicy = DmarcPolicy.NONE
    published_policy: DmarcPolicy | None = None
    policy_domain: str = ""
    organizational_domain: str = ""
    testing: bool = False
    spf_aligned: bool = False
    dkim_aligned: bool = False
    reason: str = ""


class ArcStatus(enum.Enum):
    """RFC 8617 5.2 chain validation status (cv=)."""

    NONE = "none"
    PASS = "pass"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class ArcResult:
    """ARC chain validation. ``instances`` is the number of ARC sets seen;
    ``temporary`` is True when the failure came from a DNS lookup that may heal."""

    status: ArcStatus
    instances: int = 0
    reason: str = ""
    temporary: bool = False
