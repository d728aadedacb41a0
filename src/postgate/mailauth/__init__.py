"""mailauth — inbound sender authentication: SPF, DMARC, ARC and Authentication-Results.

The pieces are separately callable (SPF at MAIL FROM, the rest at end of DATA);
``evaluate_inbound`` ties them together for the MX listener. See each module.
"""

from postgate.mailauth.arc import ArcSealError, arc_seal, verify_arc
from postgate.mailauth.authres import build_authentication_results
from postgate.mailauth.dmarc import check_dmarc, organizational_domain
from postgate.mailauth.headers import remove_forged_authentication_results
from postgate.mailauth.inbound import (
    Disposition,
    DkimVerifier,
    Enforcement,
    InboundOptions,
    InboundVerdict,
    evaluate_inbound,
)
from postgate.mailauth.lookup import MailauthResolver
from postgate.mailauth.results import (
    ArcResult,
    ArcStatus,
    DkimLike,
    DkimSignatureResult,
    DmarcPolicy,
    DmarcResult,
    DmarcStatus,
    SpfResult,
    SpfScope,
    SpfStatus,
)
from postgate.mailauth.spf import check_helo, check_spf

__all__ = [
    "ArcResult",
    "ArcSealError",
    "ArcStatus",
    "Disposition",
    "DkimLike",
    "DkimSignatureResult",
    "DkimVerifier",
    "DmarcPolicy",
    "DmarcResult",
    "DmarcStatus",
    "Enforcement",
    "InboundOptions",
    "InboundVerdict",
    "MailauthResolver",
    "SpfResult",
    "SpfScope",
    "SpfStatus",
    "arc_seal",
    "build_authentication_results",
    "check_dmarc",
    "check_helo",
    "check_spf",
    "evaluate_inbound",
    "organizational_domain",
    "remove_forged_authentication_results",
    "verify_arc",
]
