"""`postgate ban list|del` on the counters file the server uses (real SQLite, real Lockout)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import smtplib
import ssl
import time
from pathlib import Path

import pytest

from postgate.cli import ban_cmd
from postgate.cli.common import CliError
from postgate.counters import SqliteCounters
from postgate.policy.lockout import Lockout, LockoutSettings, address_ban_key
from postgate.policy.verdict import Action
from tests.conftest import ALICE, make_server
from tests.server_process import ServerProcess


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="postgate")
    parser.add_argument("--config", type=Path, default=Path("/nonexistent/postgate.toml"))
    commands = parser.add_subparsers(dest="command")
    commands.required = True
    ban_cmd.register(commands)
    return parser


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Like cli.main.main: handler exit code, CliError as one line on stderr."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        error = ""
    except CliError as exc:
        code, error = exc.exit_code, str(exc)
    out = capsys.readouterr().out
    return code, out, error


def set_bans(path: Path, *bans: tuple[str, float, str]) -> None:
    async def run() -> None:
        counters = await SqliteCounters.open(path)
        try:
            for key, until, reason in bans:
                await counters.set_ban(key, until, reason)
        finally:
            await counters.close()

    asyncio.run(run())


def live_keys(path: Path) -> list[str]:
    async def run() -> list[str]:
        counters = await SqliteCounters.open(path)
        try:
            return [b.key for b in await counters.bans()]
        finally:
            await counters.close()

    return asyncio.run(run())


def test_list_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "counters.db"
    now = time.time()
    set_bans(
        db,
        ("addr:192.0.2.7", now + 600, "3 failed AUTH attempts from 192.0.2.7"),
        ("acct:alice@example.test", now + 300, "3 failed AUTH attempts for alice@example.test"),
    )
    code, out, _ = run_cli(capsys, "ban", "list", "--db", str(db))
    assert code == 0
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["acct:alice@example.test", "addr:192.0.2.7"]
    assert "3 failed AUTH attempts from 192.0.2.7" in lines[1]
    code, out, _ = run_cli(capsys, "ban", "list", "--json", "--db", str(db))
    listed = json.loads(out)
    assert code == 0
    assert [(b["key"], b["until"]) for b in listed] == [
        ("acct:alice@example.test", now + 300),
        ("addr:192.0.2.7", now + 600),
    ]


def test_list_without_a_file_is_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "never-created.db"
    assert run_cli(capsys, "ban", "list", "--json", "--db", str(db))[:2] == (0, "[]\n")
    assert not db.exists()  # listing does not create files in odd places


@pytest.mark.parametrize(
    ("target", "key"),
    [
        ("192.0.2.7", "addr:192.0.2.7"),
        ("addr:192.0.2.7", "addr:192.0.2.7"),
        ("2001:db8::5", "addr:2001:db8::/64"),
        ("2001:db8::/64", "addr:2001:db8::/64"),
        ("Alice@Example.Test", "acct:alice@example.test"),
        ("acct:alice@example.test", "acct:alice@example.test"),
    ],
)
def test_del_lifts_the_ban(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, key: str
) -> None:
    db = tmp_path / "counters.db"
    set_bans(db, (key, time.time() + 600, "r"), ("addr:198.51.100.1", time.time() + 600, "r"))
    code, out, error = run_cli(capsys, "ban", "del", target, "--db", str(db))
    assert (code, error) == (0, "")
    assert out == f"lifted {key}\n"
    assert live_keys(db) == ["addr:198.51.100.1"]


def test_del_without_a_ban_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "counters.db"
    set_bans(db, ("addr:198.51.100.1", time.time() + 600, "r"))
    code, _, error = run_cli(capsys, "ban", "del", "192.0.2.99", "--db", str(db))
    assert (code, error) == (1, "no live ban on 192.0.2.99")
    code, _, error = run_cli(capsys, "ban", "del", "x", "--db", str(tmp_path / "none.db"))
    assert (code, error) == (1, "no live ban on x")


def test_unreadable_db_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "counters.db"
    db.write_bytes(b"this is not a database" * 100)
    code, _, error = run_cli(capsys, "ban", "list", "--db", str(db))
    assert code == 1 and error.startswith(f"counters database {db}")


def test_lifting_a_lockout_ban_gives_a_fresh_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server's Lockout and the CLI share the file: del lifts the ban and its count."""
    db = tmp_path / "counters.db"

    async def fail(times: int) -> Action:
        counters = await SqliteCounters.open(db)
        try:
            lockout = Lockout(counters, LockoutSettings(max_failures=3))
            for _ in range(times):
                await lockout.failed("192.0.2.7", ALICE[0])
            return (await lockout.check("192.0.2.7", ALICE[0])).action
        finally:
            await counters.close()

    assert asyncio.run(fail(3)) is Action.TEMPFAIL
    assert live_keys(db) == [f"acct:{ALICE[0]}", "addr:192.0.2.7"]
    code, out, _ = run_cli(capsys, "ban", "del", "192.0.2.7", "--db", str(db))
    assert code == 0 and out.endswith("lifted addr:192.0.2.7\n")
    # The account ban stays for the other addresses that failed for alice, but no longer
    # holds this one, and one more typo from it does not re-ban.
    assert live_keys(db) == [f"acct:{ALICE[0]}"]
    assert asyncio.run(fail(0)) is Action.CONTINUE
    assert asyncio.run(fail(1)) is Action.TEMPFAIL  # alice's count is still over the limit
    code, out, _ = run_cli(capsys, "ban", "del", "192.0.2.7", "--db", str(db))
    code, out, _ = run_cli(capsys, "ban", "del", ALICE[0], "--db", str(db))
    assert code == 0 and out.endswith(f"lifted acct:{ALICE[0]}\n")
    assert live_keys(db) == []
    assert asyncio.run(fail(0)) is Action.CONTINUE


def test_location_comes_from_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = ServerProcess(tmp_path / "postgate")
    server.write_config()
    server.data_dir.mkdir(parents=True)
    db = server.data_dir / "counters.db"  # the proposed default for auth.lockout_db
    set_bans(db, ("addr:192.0.2.7", time.time() + 600, "r"))
    code, out, _ = run_cli(capsys, "--config", str(server.config_path), "ban", "list", "--json")
    assert code == 0 and [b["key"] for b in json.loads(out)] == ["addr:192.0.2.7"]


@pytest.mark.parametrize(
    ("target", "keys"),
    [
        ("192.0.2.7", ["192.0.2.7", "addr:192.0.2.7"]),
        ("2001:db8::5", ["2001:db8::5", "addr:2001:db8::/64", "addr:2001:db8::5"]),
        ("2001:db8::/48", ["2001:db8::/48", "addr:2001:db8::/48"]),
        ("Bob@Example.Test", ["Bob@Example.Test", "acct:bob@example.test"]),
        ("acct:bob@example.test", ["acct:bob@example.test"]),
    ],
)
def test_candidate_keys(target: str, keys: list[str]) -> None:
    assert ban_cmd.candidate_keys(target) == keys


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def auth_reply(server: ServerProcess, password: str) -> tuple[int, bytes]:
    """One AUTH PLAIN exchange (smtplib's login() would try every mechanism in turn)."""
    token = base64.b64encode(f"\0{ALICE[0]}\0{password}".encode()).decode()
    with smtplib.SMTP_SSL(
        "127.0.0.1", server.ports["submissions"], context=client_context(), timeout=30
    ) as client:
        client.ehlo("client.example")
        return client.docmd("AUTH", f"PLAIN {token}")


@pytest.mark.slow
def test_server_bans_and_cli_lifts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = make_server(tmp_path / "postgate")
    server.extra_config = '\n[auth]\nlockout_max_failures = 3\nlockout_penalty_delay = "0s"\n'
    server.write_config()
    server.start()
    try:
        assert [auth_reply(server, "wrong")[0] for _ in range(3)] == [535, 535, 535]
        code, text = auth_reply(server, ALICE[1])  # the right password, during the ban
        assert (code, text) == (
            454,
            b"4.7.0 Too many failed authentication attempts, try again later",
        )
        server.wait_for_log(event="auth banned", client="127.0.0.1")
        assert address_ban_key("127.0.0.1") in live_keys(server.data_dir / "counters.db")
        code, out, _ = run_cli(
            capsys, "--config", str(server.config_path), "ban", "del", "127.0.0.1"
        )
        assert code == 0 and "lifted addr:127.0.0.1" in out
        assert auth_reply(server, ALICE[1])[0] == 235
    finally:
        server.stop()
