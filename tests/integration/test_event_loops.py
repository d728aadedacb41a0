"""The server works on uvloop (when installed) and on the standard asyncio loop."""

from __future__ import annotations

import importlib.util
import smtplib
from pathlib import Path

import pytest

from tests.conftest import ALICE, make_server

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("choice", ["asyncio", "default"])
def test_mail_flows_on_either_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, choice: str
) -> None:
    if choice == "asyncio":
        monkeypatch.setenv("POSTGATE_EVENT_LOOP", "asyncio")
        expected = "asyncio"
    else:
        monkeypatch.delenv("POSTGATE_EVENT_LOOP", raising=False)
        expected = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    server = make_server(tmp_path / "pg")
    server.start()
    try:
        record = server.wait_for_log(event="listening", listener="mx")
        assert record["event_loop"] == expected
        with smtplib.SMTP("127.0.0.1", server.ports["mx"], timeout=10) as client:
            for number in range(3):  # several transactions on one connection
                client.sendmail("a@example.org", [ALICE[0]], f"Subject: {number}\r\n\r\nx\r\n")
        assert len(server.wait_for_delivery(ALICE[0], 3)) == 3
    finally:
        server.stop()
