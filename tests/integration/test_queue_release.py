"""`postgate queue release` against a running server: the mail goes at once."""

from __future__ import annotations

import smtplib
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ALICE, make_server

pytestmark = pytest.mark.slow


def test_released_mail_is_delivered_on_the_cli_poke(tmp_path: Path) -> None:
    server = make_server(tmp_path / "pg", queue_extra="hold_incoming = true")
    server.start()
    try:
        with smtplib.SMTP("127.0.0.1", server.ports["mx"], timeout=10) as client:
            client.sendmail("someone@example.org", [ALICE[0]], b"Subject: held\r\n\r\nx\r\n")
        assert server.delivered_files(ALICE[0]) == []
        result = subprocess.run(
            server.command("queue", "release", "--all"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "release: 1 recipient(s) changed" in result.stdout
        # The server heard the CLI (it would otherwise find the mail at its next scan).
        server.wait_for_log(event="queue poked")
        assert len(server.wait_for_delivery(ALICE[0], 1, timeout=20)) == 1
    finally:
        server.stop()
