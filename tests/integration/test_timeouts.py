"""Idle clients are timed out (RFC 5321 4.5.3.2), busy ones are not."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.conftest import ALICE, make_server
from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow


def start(tmp_path: Path, limits: str) -> ServerProcess:
    server = make_server(tmp_path / "pg", extra_config=f"\n[limits]\n{limits}\n")
    server.start()
    return server


def talk(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line)
    return read_reply(sock)


def read_reply(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n") or data.split(b"\r\n")[-2][3:4] == b"-":
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_an_idle_client_is_told_and_closed_but_a_busy_one_is_not(tmp_path: Path) -> None:
    server = start(tmp_path, "command_timeout = 1")
    try:
        with socket.create_connection(("127.0.0.1", server.ports["mx"]), timeout=10) as busy:
            assert read_reply(busy).startswith(b"220")
            # Active for three times the timeout, never idle for long: never timed out.
            for _ in range(6):
                assert talk(busy, b"NOOP\r\n").startswith(b"250")
                time.sleep(0.5)
            started = time.monotonic()
            assert read_reply(busy).startswith(b"421 4.4.2")
            waited = time.monotonic() - started
            assert busy.recv(10) == b""  # and closed
        assert 0.4 < waited < 5
        server.wait_for_log(event="disconnect", reason="idle timeout")
    finally:
        server.stop()


def test_a_data_timeout_shorter_than_the_command_timeout_applies(tmp_path: Path) -> None:
    server = start(tmp_path, "command_timeout = 60\ndata_timeout = 1")
    try:
        with socket.create_connection(("127.0.0.1", server.ports["mx"]), timeout=20) as client:
            assert read_reply(client).startswith(b"220")
            assert talk(client, b"EHLO peer.example\r\n").startswith(b"250")
            assert talk(client, b"MAIL FROM:<someone@example.org>\r\n").startswith(b"250")
            assert talk(client, f"RCPT TO:<{ALICE[0]}>\r\n".encode()).startswith(b"250")
            assert talk(client, b"DATA\r\n").startswith(b"354")
            client.sendall(b"Subject: half\r\n")  # then nothing more
            started = time.monotonic()
            assert read_reply(client).startswith(b"421 4.4.2")
            assert time.monotonic() - started < 15  # the data timeout, not the 60 s one
        assert server.delivered_files(ALICE[0]) == []
    finally:
        server.stop()
