"""Start-up failures say why in one line; a SIGKILL after 250 loses nothing."""

from __future__ import annotations

import smtplib
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BOB, make_server
from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow


def start_failure(server: ServerProcess) -> str:
    result = subprocess.run(server.command("serve"), capture_output=True, timeout=60, check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.decode().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr.decode()
    return lines[0]


def test_port_in_use_names_the_listener(tmp_path: Path) -> None:
    server = make_server(tmp_path / "pg")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", server.ports["submission"]))
        squatter.listen(1)
        line = start_failure(server)
    assert "listener submission" in line
    assert f"127.0.0.1:{server.ports['submission']}" in line
    assert "in use" in line


def test_unreadable_certificate_names_the_file(tmp_path: Path) -> None:
    server = make_server(tmp_path / "pg")
    server.cert_file.unlink()
    line = start_failure(server)
    assert "tls.cert_file" in line
    assert str(server.cert_file) in line


def test_bad_config_names_key_and_line(tmp_path: Path) -> None:
    server = make_server(tmp_path / "pg", extra_config="\n[limits]\nmax_recipients = -3\n")
    line = start_failure(server)
    assert "limits.max_recipients" in line
    text_lines = server.config_path.read_text().splitlines()
    line_number = next(i for i, text in enumerate(text_lines, 1) if "max_recipients" in text)
    assert f":{line_number}:" in line


def test_config_check_prints_effective_values(tmp_path: Path) -> None:
    server = make_server(tmp_path / "pg")
    result = subprocess.run(
        server.command("config", "check"), capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "max_recipients = 100" in out
    assert "example.test" in out


def test_sigkill_right_after_250_loses_nothing(tmp_path: Path) -> None:
    # Delivery is made to fail first (a plain file stands where Bob's Maildir would
    # go), so the message is certainly still queued when the server is killed.
    server = make_server(tmp_path / "pg", queue_extra="retry_schedule = [1]")
    server.maildir_root.mkdir(parents=True)
    (server.maildir_root / "example.test").mkdir()
    blocker = server.maildir(BOB[0])
    blocker.write_text("not a directory")
    server.start()
    original = b"Subject: survive\r\n\r\nkill -9 me\r\n"
    try:
        with smtplib.SMTP("127.0.0.1", server.ports["mx"], timeout=10) as client:
            client.ehlo("peer.example")
            client.mail("someone@example.org")
            client.rcpt(BOB[0])
            code, reply = client.data(original)
            assert code == 250
            server.kill()
    finally:
        server.stop()
    blocker.unlink()
    server.start()
    try:
        files = server.wait_for_delivery(BOB[0], timeout=30)
        assert len(files) == 1
        assert files[0].read_bytes().endswith(b"\n" + original.replace(b"\r\n", b"\n"))
        queue_id = reply.decode().rsplit(" ", 1)[-1]
        statuses = [row["status"] for row in server.status_rows(queue_id)]
        assert statuses[-1] == "delivered"
    finally:
        server.stop()
    assert len(server.delivered_files(BOB[0])) == 1
