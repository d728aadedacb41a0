"""Our RSA signatures verified by an independent implementation: Perl's Mail::DKIM
(Debian libmail-dkim-perl), with the keys served by NSD on loopback.

Mail::DKIM 1.20230212 (Debian 12) has no Ed25519 (its Algorithm/ directory holds
only rsa_sha1 and rsa_sha256): it reports our Ed25519 signature as unsupported,
and that signature is verified by dkimpy in test_signer.py instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from postgate.dkim.keys import KeyStore
from postgate.dkim.manager import KeyManager
from postgate.dkim.signer import DkimSigner
from tests.dkim.helpers import MESSAGE, zone_txt
from tests.fixtures.nsd import running_nsd

pytestmark = pytest.mark.nsd

SCRIPT = Path(__file__).with_name("verify_mail_dkim.pl")


def require_mail_dkim() -> str:
    perl = shutil.which("perl")
    if (
        perl
        and subprocess.run([perl, "-MMail::DKIM::Verifier", "-e", "1"], check=False).returncode == 0
    ):
        return perl
    message = "Mail::DKIM is missing: apt-get install libmail-dkim-perl"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def mail_dkim_verify(perl: str, port: int, message: bytes) -> list[list[str]]:
    result = subprocess.run(
        [perl, str(SCRIPT), str(port)], input=message, capture_output=True, timeout=60, check=True
    )
    return [line.split(" ", 4) for line in result.stdout.decode().splitlines()]


def test_mail_dkim_verifies_our_rsa_signature_and_sees_tampering(tmp_path: Path) -> None:
    perl = require_mail_dkim()
    store = KeyStore(tmp_path / "dkim")
    keys = KeyManager(store).keygen("example.test", activate_now=True)
    records = [(f"{k.selector}._domainkey", "TXT", zone_txt(k.txt_value)) for k in keys]
    with running_nsd(tmp_path / "nsd", {"example.test": records}) as server:
        signed = DkimSigner(store).sign(MESSAGE) + MESSAGE
        lines = mail_dkim_verify(perl, server.port, signed)
        by_algorithm = {line[3]: line for line in lines}
        assert by_algorithm["rsa-sha256"][:3] == ["pass", "example.test", keys[0].selector]
        # Ed25519 is unknown to this Mail::DKIM, so it must not claim a pass.
        assert by_algorithm["ed25519-sha256"][0] != "pass"

        tampered = signed.replace(b"The numbers are good.", b"The numbers are bad.")
        lines = mail_dkim_verify(perl, server.port, tampered)
        assert {line[3]: line[0] for line in lines}["rsa-sha256"] == "fail"

        head, _, body = signed.partition(b"\r\n\r\n")
        second_from = head + b"\r\nFrom: Mallory <mallory@example.test>\r\n\r\n" + body
        lines = mail_dkim_verify(perl, server.port, second_from)
        assert {line[3]: line[0] for line in lines}["rsa-sha256"] == "fail"
